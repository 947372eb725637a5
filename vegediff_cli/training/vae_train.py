"""Stage 1: train the vegetation VAE on every clear Sentinel-2 frame (paper Sec. III-B).

Loss on clear pixels only: L1 of standardised BGRN reflectance + L1 of NDVI (the quantity the
benchmark scores) + a small KL term. Band statistics are measured from the training frames
first; latent statistics afterwards, so that diffusion sees unit-variance latents.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from ..model.device import autocast
from ..model.inputs import gap_fill
from ..model.presets import ModelConfig
from ..model.vae import kl_divergence
from ..model.vegediff import VegeDiff
from ..progress import ProgressFactory, no_progress
from .checkpoint import load_checkpoint, restore, restore_rng, rng_state, save_checkpoint
from .sequences import Sequence
from .settings import VAETrainSettings
from .windows import FramePool, spatial_size, square

log = logging.getLogger("vegediff.train")


def _ndvi(x: torch.Tensor) -> torch.Tensor:
    red, nir = x[:, 2], x[:, 3]
    return (nir - red) / (nir + red).abs().clamp(min=1e-3)


def vae_loss(model: VegeDiff, frames: torch.Tensor, valid: torch.Tensor, settings: VAETrainSettings) -> torch.Tensor:
    reconstruction, mean, logvar = model.vae(frames)
    weight = valid.sum().clamp(min=1.0)
    band_error = (model.vae.standardise(reconstruction) - model.vae.standardise(frames)).abs() * valid
    ndvi_error = (_ndvi(reconstruction) - _ndvi(frames)).abs() * valid[:, 0]
    loss = band_error.sum() / (weight * frames.shape[1]) + settings.ndvi_weight * ndvi_error.sum() / weight
    return loss + settings.kl_weight * kl_divergence(mean, logvar).mean()


@torch.no_grad()
def latent_statistics(model: VegeDiff, sequences: list[Sequence], device: torch.device) -> tuple[tuple, tuple]:
    """Per-channel mean and std of the (raw) latents of all gap-filled training frames."""
    chunks = []
    for seq in sequences:
        filled = gap_fill(*square(seq, spatial_size(seq)))
        for start in range(0, filled.shape[0], 32):
            batch = torch.from_numpy(filled[start : start + 32]).to(device)
            mean, _ = model.vae.encode_distribution(batch)
            chunks.append(mean.transpose(0, 1).flatten(1).cpu())
    latents = torch.cat(chunks, dim=1)  # (C, N)
    return tuple(latents.mean(1).tolist()), tuple(latents.std(1).tolist())


def train_vae(
    sequences: list[Sequence],
    *,
    cfg: ModelConfig,
    settings: VAETrainSettings,
    run_dir: Path,
    device: torch.device,
    progress: ProgressFactory = no_progress,
) -> tuple[VegeDiff, list[float]]:
    """Train (or resume) the VAE; returns the model with latent statistics set, and the loss log."""
    pool = FramePool(sequences)
    band_mean, band_std = pool.band_statistics()
    cfg = dataclasses.replace(cfg, vae=dataclasses.replace(cfg.vae, band_mean=band_mean, band_std=band_std))
    log.info("VAE: %d training frames, band mean %s std %s", len(pool), band_mean, band_std)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = VegeDiff(cfg).to(device)
    optimiser = torch.optim.AdamW(model.vae.parameters(), lr=settings.lr, weight_decay=0.0)
    checkpoint_path = run_dir / "vae.ckpt"
    losses: list[float] = []
    start = 0
    state = load_checkpoint(checkpoint_path)
    if state is not None:
        restore(model.vae, state, "vae", checkpoint_path)
        restore(optimiser, state, "optimiser", checkpoint_path)
        restore_rng(rng, state["rng"])
        start, losses = state["step"], state["losses"]
        log.info("VAE: resuming at step %d", start)
    model.train()
    with progress(settings.steps, "train vae") as bar:
        bar.update(start)
        for step in range(start, settings.steps):
            frames, valid = pool.batch(settings.batch, settings.crop, rng)
            with autocast(device, settings.precision):
                loss = vae_loss(model, frames.to(device), valid.to(device), settings)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.vae.parameters(), 1.0)
            optimiser.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps:
                save_checkpoint(checkpoint_path, {"vae": model.vae.state_dict(), "optimiser": optimiser.state_dict(),
                                                  "rng": rng_state(rng), "step": step + 1, "losses": losses})
                log.info("VAE step %d: loss %.4f (mean of last 100)", step + 1, float(np.mean(losses[-100:])))
    model.eval()
    latent_mean, latent_std = latent_statistics(model, sequences, device)
    final_cfg = dataclasses.replace(cfg, vae=dataclasses.replace(cfg.vae, latent_mean=latent_mean, latent_std=latent_std))
    final = VegeDiff(final_cfg).to(device)
    final.vae.load_state_dict(model.vae.state_dict())
    return final.eval(), losses
