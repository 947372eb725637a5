"""The denoiser's training loss: eps prediction with Min-SNR-gamma weighting (paper Sec. III-D)."""

from __future__ import annotations

import torch

from ..model.presets import DiffusionConfig
from .schedules import snr


def min_snr_weight(snr_t: torch.Tensor, gamma: float) -> torch.Tensor:
    """min(SNR, gamma) / SNR: the Min-SNR-gamma weight for eps prediction (Hang et al. 2023, Eq. 8)."""
    return torch.clamp(snr_t, max=gamma) / snr_t


def noise_latents(
    x0: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps for (B, ...) latents and (B,) integer timesteps."""
    a = alphas_cumprod.to(x0.device)[timesteps].float().view(-1, *([1] * (x0.dim() - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def diffusion_loss(
    eps_model,
    future: torch.Tensor,
    *,
    context: torch.Tensor,
    meteo: torch.Tensor,
    static: torch.Tensor,
    loss_mask: torch.Tensor,
    conditioned: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    cfg: DiffusionConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Masked, Min-SNR-weighted eps-MSE for one batch.

    future (B, F, C, h, w) clean future latents; context (B, K, C, h, w); meteo (B, K+F, 24);
    static (B, S, H, W); loss_mask (B, F, 1, h, w) in [0, 1]: weight of each latent cell (0 where
    the target frame was cloudy or beyond the sequence); conditioned (B,) bool: False for series
    without meteorology and static layers, which always train the unconditional branch.
    """
    b = future.shape[0]
    device = future.device
    timesteps = torch.randint(0, cfg.train_steps, (b,), device=device, generator=generator)
    noise = torch.randn(future.shape, device=device, generator=generator)
    noisy = noise_latents(future, timesteps, noise, alphas_cumprod)
    keep = conditioned & (torch.rand(b, device=device, generator=generator) >= cfg.cond_dropout)  # CFG dropout
    eps = eps_model(torch.cat([context, noisy], dim=1), timesteps.float(), meteo=meteo, static=static, keep_cond=keep)
    per_cell = (eps.float() - noise).pow(2) * loss_mask  # (B, F, C, h, w)
    per_sample = per_cell.flatten(1).sum(1) / (loss_mask.expand_as(per_cell).flatten(1).sum(1) + 1e-6)
    weight = min_snr_weight(snr(alphas_cumprod, timesteps), cfg.min_snr_gamma)
    return (weight * per_sample).mean()
