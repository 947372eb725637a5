"""The denoiser's training loss: eps prediction with Min-SNR-gamma weighting (paper Sec. III-D)."""

from __future__ import annotations

from typing import Protocol

import torch

from .schedules import snr


class LossSettings(Protocol):
    """What the loss reads of a model's diffusion settings (model.presets.DiffusionConfig has it)."""

    train_steps: int  # DDPM discrete timesteps
    min_snr_gamma: float  # Min-SNR-gamma weighting
    cond_dropout: float  # probability of dropping meteorology and static layers
    train_context_mix: float | None  # noise offset: this x mean(context latents); None or 0: none
    meteo_dropout: float  # extra probability of dropping the meteorology alone


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
    cfg: LossSettings,
    generator: torch.Generator | None = None,
    dates: torch.Tensor | None = None,
    timesteps: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    dropout_draw: torch.Tensor | None = None,
) -> torch.Tensor:
    """Masked, Min-SNR-weighted eps-MSE for one batch.

    future (B, F, C, h, w) clean future latents; context (B, K, C, h, w); meteo (B, K+F, 24);
    static (B, S, H, W); loss_mask (B, F, 1, h, w) in [0, 1]: weight of each latent cell (0 where
    the target frame was cloudy or beyond the sequence); conditioned (B,) bool: False for series
    without meteorology and static layers, which always train the unconditional branch; dates
    (B, K+F, date_channels) date features for models that read them.

    With ``cfg.train_context_mix`` the noise is eps + mix x mean(context), the distribution sampling
    starts from (VegeDiff.sample), and the network learns to predict that whole offset noise.

    The random draws come from `generator`, or are given: timesteps (B,), noise eps like `future`
    and dropout_draw (B,) uniform numbers (a row keeps its condition when >= cond_dropout, and its
    meteorology too when >= cond_dropout + meteo_dropout: one draw decides both); the
    training loop draws them per window from the window's own seed, so that a batch split over
    processes computes the same numbers as one process.
    """
    b = future.shape[0]
    device = future.device
    if timesteps is None:
        timesteps = torch.randint(0, cfg.train_steps, (b,), device=device, generator=generator)
    if noise is None:
        noise = torch.randn(future.shape, device=device, generator=generator)
    mix = getattr(cfg, "train_context_mix", None)
    if mix:
        noise = noise + mix * context.mean(dim=1, keepdim=True)  # (B, 1, C, h, w) over every future frame
    noisy = noise_latents(future, timesteps, noise, alphas_cumprod)
    if dropout_draw is None:
        dropout_draw = torch.rand(b, device=device, generator=generator)
    keep = conditioned & (dropout_draw >= cfg.cond_dropout)  # CFG dropout
    extra = {} if dates is None else {"dates": dates}
    meteo_dropout = getattr(cfg, "meteo_dropout", 0.0)
    if meteo_dropout:
        extra["keep_meteo"] = dropout_draw >= cfg.cond_dropout + meteo_dropout
    eps = eps_model(torch.cat([context, noisy], dim=1), timesteps.float(), meteo=meteo, static=static, keep_cond=keep,
                    **extra)
    per_cell = (eps.float() - noise).pow(2) * loss_mask  # (B, F, C, h, w)
    per_sample = per_cell.flatten(1).sum(1) / (loss_mask.expand_as(per_cell).flatten(1).sum(1) + 1e-6)
    weight = min_snr_weight(snr(alphas_cumprod, timesteps), cfg.min_snr_gamma)
    return (weight * per_sample).mean()
