"""Forecast a batch of 128 x 128 chips: arrays in, member reflectance out.

This is the model-facing core of `forecast`; tiling, blending, I/O live in the callers.
Per chip: gap-fill the context (last clear value per pixel), encode, sample `members` futures
from the chip's own seed, decode, and (optionally) transfer the reference frame's fine detail.

Detail transfer: the VAE keeps 1/64 of the pixels' degrees of freedom, so decoded frames lose
field-edge detail. Every member gets ``ref - decode(encode(ref))`` added, where ``ref`` is the
last gap-filled context frame (the persistence image): a forecast of "no change" then
reproduces the last observation exactly instead of its blurred reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import SamplerSettings
from ..model.device import inference_autocast
from ..model.inputs import gap_fill
from ..model.vegediff import VegeDiff


@dataclass(frozen=True)
class ChipSettings:
    members: int = 1  # stochastic members per chip
    sampler: SamplerSettings = field(default_factory=SamplerSettings)  # sampler, steps, guidance, context mix
    detail_transfer: bool = True  # add the reference frame's VAE residual to every member
    precision: str = "fp32"  # resolved inference precision: "fp32" or "bf16" (model/device.py)


@dataclass
class ChipBatch:
    """Inputs for B chips (numpy, float32)."""

    context: np.ndarray  # (B, K, 4, H, W) reflectance of the K context frames, NaN where missing
    valid: np.ndarray  # (B, K, H, W) clear-sky flags of the context frames
    meteo: np.ndarray  # (B, K+F, 24) standardised meteorology (zeros where unknown), or (M, B, K+F, 24) per member
    static: np.ndarray  # (B, 5, H, W) normalised static layers
    seeds: list[int]  # one seed per chip: its noise does not depend on the batch it is in
    dates: np.ndarray | None = None  # (B, K+F, 3) date features (model/inputs.py), for models that read them


def chip_noise(seed: int, members: int, shape: tuple[int, ...]) -> torch.Tensor:
    """(M, F, C, h, w) starting noise of one chip, reproducible from its seed alone."""
    return torch.randn((members, *shape), generator=torch.Generator().manual_seed(int(seed)))


@torch.no_grad()
def forecast_chips(
    model: VegeDiff,
    batch: ChipBatch,
    *,
    conditioned: bool,
    settings: ChipSettings = ChipSettings(),
    device: torch.device = torch.device("cpu"),
) -> np.ndarray:
    """Member reflectance forecasts (M, B, F, 4, H, W) float32 for a batch of chips."""
    b, k = batch.context.shape[:2]
    filled = np.stack([gap_fill(batch.context[i], batch.valid[i]) for i in range(b)])  # (B, K, 4, H, W)
    frames = torch.from_numpy(filled).to(device)
    with inference_autocast(device, settings.precision):
        context = model.encode_frames(frames).float()  # (B, K, C, h, w)
        latent_shape = (model.cfg.vegenet.horizon, *context.shape[2:])
        noise = torch.stack([chip_noise(s, settings.members, latent_shape) for s in batch.seeds], dim=1)
        future = _sample_members(model, context, batch, noise, conditioned=conditioned, settings=settings,
                                 device=device)  # (M, B, F, C, h, w)
        m, _, f = future.shape[:3]
        decoded = model.decode_frames(future.reshape(m * b, f, *future.shape[3:])).float()
        decoded = decoded.view(m, b, f, *decoded.shape[2:])  # (M, B, F, 4, H, W)
        if settings.detail_transfer:
            reference = frames[:, -1]  # (B, 4, H, W) last gap-filled context frame
            blurred = model.vae.decode(context[:, -1]).float()
            decoded = decoded + (reference - blurred)[None, :, None]
    return decoded.cpu().numpy()


def _sample_members(model: VegeDiff, context: torch.Tensor, batch: ChipBatch, noise: torch.Tensor, *,
                    conditioned: bool, settings: ChipSettings, device: torch.device) -> torch.Tensor:
    """(M, B, F, C, h, w) latents; members with different weather (scenarios) are sampled group by group.

    Members sharing one meteorology run as one batch; each keeps the noise drawn for it from its
    chip's seed, so a member's forecast does not depend on how the members were grouped.
    """
    static = torch.from_numpy(batch.static).to(device)
    noise = noise.to(device=device, dtype=context.dtype)
    dates = None if batch.dates is None or not model.cfg.vegenet.date_channels else torch.from_numpy(batch.dates).to(device)
    if batch.meteo.ndim == 3:
        groups = [(list(range(settings.members)), batch.meteo)]
    else:
        groups = {}
        for m in range(settings.members):
            key = batch.meteo[m].tobytes()
            groups.setdefault(key, ([], batch.meteo[m]))[0].append(m)
        groups = list(groups.values())
    out = None
    for members, meteo in groups:
        part = model.sample(context, meteo=torch.from_numpy(np.ascontiguousarray(meteo)).to(device), static=static,
                            conditioned=conditioned, members=len(members), settings=settings.sampler,
                            noise=noise[members], dates=dates).float()
        if out is None:
            out = part.new_empty((settings.members, *part.shape[1:]))
        out[members] = part
    return out
