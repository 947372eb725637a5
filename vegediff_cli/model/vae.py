"""Vegetation VAE: BGRN reflectance (4, H, W) <-> latent (4, H/8, W/8) (paper Sec. III-B).

A small convolutional KL autoencoder in the style of latent diffusion's first stage. Inputs
are standardised per band; latents are returned normalised to unit variance
(``VAEConfig.latent_mean/std``) so the diffusion model never sees raw scales.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .presets import VAEConfig


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(8, channels), num_channels=channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.norm1 = _norm(channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.norm2 = _norm(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (N, Cout, H, W)
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def _levels(widths: list[int], blocks: int, current: int,
            between: Callable[[int], list[nn.Module]]) -> tuple[list[nn.Module], int]:
    """ResBlocks level by level (`blocks` per level, widening to the level's width), `between(width)` after
    every level but the last (down- or upsampling); returns the layers and the final width."""
    layers: list[nn.Module] = []
    for level, width in enumerate(widths):
        for _ in range(blocks):
            layers.append(ResBlock(current, width))
            current = width
        if level < len(widths) - 1:
            layers.extend(between(current))
    return layers, current


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mults]
        self.conv_in = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        layers, current = _levels(widths, cfg.blocks_per_level, widths[0],
                                  lambda c: [nn.Conv2d(c, c, 3, stride=2, padding=1)])  # halve H, W
        self.body = nn.Sequential(*layers, ResBlock(current, current))
        self.norm_out = _norm(current)
        self.conv_out = nn.Conv2d(current, 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.conv_in(x))  # (N, C, H/8, W/8)
        return self.conv_out(F.silu(self.norm_out(h)))  # (N, 2 * latent, H/8, W/8): mean, log-variance


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mults][::-1]
        self.conv_in = nn.Conv2d(cfg.latent_channels, widths[0], 3, padding=1)
        first = ResBlock(widths[0], widths[0])
        levels, current = _levels(widths, cfg.blocks_per_level, widths[0],
                                  lambda c: [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)])
        self.body = nn.Sequential(first, *levels)
        self.norm_out = _norm(current)
        self.conv_out = nn.Conv2d(current, cfg.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.body(self.conv_in(z))  # (N, C, H, W)
        return self.conv_out(F.silu(self.norm_out(h)))  # (N, 4, H, W) standardised reflectance


class VegetationVAE(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.register_buffer("band_mean", torch.tensor(cfg.band_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("band_std", torch.tensor(cfg.band_std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("latent_mean", torch.tensor(cfg.latent_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("latent_std", torch.tensor(cfg.latent_std).view(1, -1, 1, 1), persistent=False)

    def standardise(self, reflectance: torch.Tensor) -> torch.Tensor:
        return (reflectance - self.band_mean) / self.band_std

    def encode_distribution(self, reflectance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 4, H, W) reflectance -> raw latent mean and log-variance (N, 4, H/8, W/8)."""
        moments = self.encoder(self.standardise(reflectance))
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, reflectance: torch.Tensor) -> torch.Tensor:
        """Deterministic (mean) latent, normalised to unit variance: (N, 4, H/8, W/8)."""
        mean, _ = self.encode_distribution(reflectance)
        return (mean - self.latent_mean) / self.latent_std

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent (N, 4, h, w) -> reflectance (N, 4, 8h, 8w)."""
        raw = latent * self.latent_std + self.latent_mean
        return self.decoder(raw) * self.band_std + self.band_mean

    def forward(
        self, reflectance: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: reconstruction (reflectance units), latent mean and log-variance; `noise`
        (like the latent) fixes the posterior sample's draw."""
        mean, logvar = self.encode_distribution(reflectance)
        noise = torch.randn_like(mean) if noise is None else noise.to(mean.dtype)
        sample = mean + noise * torch.exp(0.5 * logvar)
        reconstruction = self.decoder(sample) * self.band_std + self.band_mean
        return reconstruction, mean, logvar


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per sample, summed over latent elements: (N,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(dim=1)
