"""Noise schedules as pure functions (DDPM, Ho et al. 2020; sigma view of Karras et al. 2022).

The model is trained on the 1000-step discrete DDPM process
``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps`` (a_t = cumulative product of 1 - beta). Samplers work
in the equivalent variance-exploding view ``x = x_0 + sigma eps`` with
``sigma_t = sqrt((1 - a_t) / a_t)``, as k-diffusion does.
"""

from __future__ import annotations

import torch


def alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """'Scaled linear' betas (latent diffusion): sqrt(beta) linear in t. Returns (steps,) float64."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def sigmas_of(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt((1 - a_t) / a_t) for every training timestep: (steps,)."""
    return ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt()


def sampling_sigmas(alphas_cumprod: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` decreasing sigmas at evenly spaced timesteps from T-1 down to 0, then 0: (steps + 1,)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    train_steps = alphas_cumprod.shape[0]
    timesteps = torch.linspace(train_steps - 1, 0, steps, dtype=torch.float64).round().long()
    sigmas = sigmas_of(alphas_cumprod)[timesteps]
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def sigma_to_t(sigma: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Continuous timestep of a sigma by interpolating log-sigma between training steps."""
    log_sigmas = sigmas_of(alphas_cumprod).log().to(sigma.device)
    log_sigma = sigma.double().clamp(min=1e-10).log()
    dists = log_sigma[:, None] - log_sigmas[None]  # (N, steps)
    low = (dists >= 0).cumsum(dim=1).argmax(dim=1).clamp(max=log_sigmas.shape[0] - 2)
    high = low + 1
    w = ((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high])).clamp(0, 1)
    return ((1 - w) * low + w * high).float()


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio a_t / (1 - a_t) at integer timesteps."""
    a = alphas_cumprod.to(timesteps.device)[timesteps]
    return (a / (1.0 - a)).float()
