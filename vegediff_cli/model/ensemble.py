"""Models with several denoisers (a deep ensemble): built from single-denoiser models, and taken apart.

Training runs that differ only in their seed learn different things from scarce data: on the held-out
EarthNet2021 29SQC samples one of three seeds learned the autumn green-up and two did not (MODEL_CARD.md,
"Run-to-run spread"). One weights file can carry all of them, sharing one VAE; member m of a forecast
is then drawn by denoiser m mod N (VegeDiff.denoiser_of), so the ensemble spans the spread between
training runs as well as the sampler's noise, at the cost of one forecast with one denoiser.
"""

from __future__ import annotations

import dataclasses

import torch

from ..errors import ModelError
from .vegediff import VegeDiff


def combine_denoisers(models: list[VegeDiff]) -> VegeDiff:
    """One model with the VAE of `models[0]` and the denoisers of all `models`, in order.

    The models must share the VAE (same tensors: the latents each denoiser learned are that VAE's) and
    the denoiser and diffusion configs.
    """
    if not models:
        raise ValueError("combine_denoisers needs at least one model")
    first = models[0]
    vae = first.vae.state_dict()
    for i, other in enumerate(models[1:], start=2):
        if other.cfg.vegenet != first.cfg.vegenet or other.cfg.diffusion != first.cfg.diffusion:
            raise ModelError(f"model {i} has another denoiser or diffusion config than model 1",
                             fix="combine runs of one preset and recipe that differ only in their training seed")
        theirs = other.vae.state_dict()
        if theirs.keys() != vae.keys() or not all(torch.equal(vae[k], theirs[k]) for k in vae):
            raise ModelError(f"model {i} has another VAE than model 1",
                             fix="train the denoisers to combine on one VAE (scripts/train_weights.py --vae-from)")
    nets = [net for model in models for net in model.denoisers()]
    combined = VegeDiff(dataclasses.replace(first.cfg, denoisers=len(nets)))
    combined.vae.load_state_dict(vae)
    for target, source in zip(combined.denoisers(), nets, strict=True):
        target.load_state_dict(source.state_dict())
    return combined.to(next(first.parameters()).device).eval()


def single_denoiser(model: VegeDiff, index: int = 0) -> VegeDiff:
    """`model`'s VAE with only its denoiser `index` (e.g. to train on from a combined file)."""
    if model.cfg.denoisers == 1:
        return model
    single = VegeDiff(dataclasses.replace(model.cfg, denoisers=1))
    single.vae.load_state_dict(model.vae.state_dict())
    single.vegenet.load_state_dict(model.denoisers()[index].state_dict())
    return single.to(next(model.parameters()).device).train(model.training)
