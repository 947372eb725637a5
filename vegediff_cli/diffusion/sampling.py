"""Samplers as small pure functions over a denoiser ``model(x, sigma) -> denoised`` (k-diffusion style).

`x` starts at noise scaled by ``sigmas[0]``; `sigmas` decreases to 0. The samplers know nothing
about conditioning or guidance: that lives in the closure passed as `model`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _batch_sigma(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return sigma.expand(x.shape[0]).to(x)


@torch.no_grad()
def sample_euler(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 1 without churn)."""
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=False):
        denoised = model(x, _batch_sigma(x, sigma))
        derivative = (x - denoised) / sigma  # dx/dsigma
        x = x + derivative * (sigma_next - sigma)
    return x


@torch.no_grad()
def sample_dpmpp_2m(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2M), the multistep second-order solver (Lu et al. 2022, Alg. 2)."""
    previous = None
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=False)):
        denoised = model(x, _batch_sigma(x, sigma))
        if sigma_next == 0:  # last step: jump to the clean estimate
            x = denoised
            break
        t, t_next = -sigma.log(), -sigma_next.log()
        h = t_next - t
        if previous is None or i == 0:
            estimate = denoised
        else:
            h_last = t - (-sigmas[i - 1].log())
            r = h_last / h
            estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
        x = (sigma_next / sigma) * x - torch.expm1(-h) * estimate
        previous = denoised
    return x


SAMPLERS: dict[str, Callable[[Denoiser, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "euler": sample_euler,
    "dpmpp2m": sample_dpmpp_2m,
}
