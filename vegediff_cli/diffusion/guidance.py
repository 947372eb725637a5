"""Classifier-free guidance and input scaling: an eps network -> the denoiser `model(x, sigma)` samplers call.

Samplers (sampling.py) see a k-diffusion style denoiser ``D(x, sigma) -> x0``; the network predicts the
noise eps of a DDPM-discretised model at timestep t. The wrapper scales the input to unit variance
(c_in = 1 / sqrt(sigma^2 + 1), Karras et al. 2022, Table 1, VP/eps column), maps sigma to the
network's timestep, runs the conditional and the unconditional rows side by side when guided and
mixes them (Ho & Salimans 2022, Eq. 6: eps_u + w (eps_c - eps_u)), then returns x - sigma eps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedules import sigma_to_t

# eps(rows (R, F, C, h, w), t (R,), keep_cond (R,) bool) -> eps (R, F, C, h, w); R = members * passes * batch
EpsNetwork = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def condition_rows(batch: int, *, conditioned: bool, guidance_scale: float,
                   device: torch.device | None = None) -> torch.Tensor:
    """keep_cond per network row of one member, (passes * batch,) bool.

    Guided: conditional rows then unconditional rows (two passes); else one pass, conditional only
    when `conditioned` (no meteorology and no static layers: the condition-free branch, no guidance).
    """
    guided = conditioned and guidance_scale != 1.0
    return torch.tensor([True] * batch + [False] * batch if guided else [conditioned] * batch, device=device)


class GuidedDenoiser:
    """D(x, sigma) for `members` x `batch` rows of (F, C, h, w) latents, member-major, around `eps`."""

    def __init__(self, eps: EpsNetwork, alphas_cumprod: torch.Tensor, *, members: int, batch: int,
                 conditioned: bool, guidance_scale: float, device: torch.device | None = None) -> None:
        self.eps = eps
        self.alphas_cumprod = alphas_cumprod
        self.members = members
        self.batch = batch
        self.guidance_scale = guidance_scale
        self.guided = conditioned and guidance_scale != 1.0
        self.passes = 2 if self.guided else 1  # conditional and unconditional rows side by side
        self.keep_rows = condition_rows(batch, conditioned=conditioned, guidance_scale=guidance_scale, device=device)

    def __call__(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """(M*B, F, C, h, w) noisy latents and (M*B,) sigmas -> (M*B, F, C, h, w) denoised latents."""
        m, b, passes = self.members, self.batch, self.passes
        horizon, c, h, w = x_t.shape[1:]
        c_in = (1.0 / (sigma**2 + 1.0).sqrt()).view(-1, 1, 1, 1, 1)
        t = sigma_to_t(sigma, self.alphas_cumprod)
        rows = (x_t * c_in).view(m, 1, b, horizon, c, h, w).expand(m, passes, b, horizon, c, h, w)
        rows = rows.reshape(m * passes * b, horizon, c, h, w)  # (M*P*B, F, C, h, w)
        t_rows = t.view(m, 1, b).expand(m, passes, b).reshape(-1)
        eps = self.eps(rows, t_rows, self.keep_rows.repeat(m)).view(m, passes, b, horizon, c, h, w)
        if self.guided:
            eps = eps[:, 1] + self.guidance_scale * (eps[:, 0] - eps[:, 1])
        else:
            eps = eps[:, 0]
        return x_t - sigma.view(-1, 1, 1, 1, 1) * eps.reshape(m * b, horizon, c, h, w).to(x_t.dtype)
