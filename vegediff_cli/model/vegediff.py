"""VegeDiff = vegetation VAE + VegeNet denoiser + DDPM schedule, and its sampling entry point."""

from __future__ import annotations

import torch
from torch import nn

from ..config import SamplerSettings
from ..diffusion.guidance import GuidedDenoiser, condition_rows
from ..diffusion.sampling import SAMPLERS
from ..diffusion.schedules import alphas_cumprod, sampling_sigmas
from .presets import ModelConfig
from .vae import VegetationVAE
from .vegenet import VegeNet

PAPER_CONTEXT_MIX = 0.1


def resolve_context_mix(settings: SamplerSettings, cfg: ModelConfig) -> float:
    """Fraction of the mean context latent added to the starting noise: the settings' value when
    given, else the one the denoiser was trained with, else the paper's 0.1 (Sec. III-D)."""
    if settings.context_mix is not None:
        return float(settings.context_mix)
    trained = cfg.diffusion.train_context_mix
    return PAPER_CONTEXT_MIX if trained is None else float(trained)


class VegeDiff(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vae = VegetationVAE(cfg.vae)
        self.vegenet = VegeNet(cfg.vegenet)
        # Denoisers 2 .. cfg.denoisers (other training seeds; empty for one): state-dict keys extra_vegenets.N.*
        self.extra_vegenets = nn.ModuleList(VegeNet(cfg.vegenet) for _ in range(cfg.denoisers - 1))
        d = cfg.diffusion
        self.register_buffer("alphas_cumprod", alphas_cumprod(d.train_steps, d.beta_start, d.beta_end), persistent=False)
        # What sample() calls instead of the denoisers, one per denoiser: objects with their sampling methods, e.g.
        # model/compiled.py's CompiledVegeNet (same results up to rounding). Not submodules: weights files never see them.
        self.sampling_nets: list | None = None

    def denoisers(self) -> list[VegeNet]:
        """The denoisers, in member order: member m is drawn by denoisers()[m % cfg.denoisers]."""
        return [self.vegenet, *self.extra_vegenets]

    def denoiser_of(self, member: int) -> int:
        """Index of the denoiser that draws ensemble member `member` (0-based, counted over the whole ensemble)."""
        return member % (1 + len(self.extra_vegenets))

    # --- first stage ------------------------------------------------------------------------
    def encode_frames(self, frames: torch.Tensor, *, batch: int = 32) -> torch.Tensor:
        """(B, T, 4, H, W) reflectance -> (B, T, C, H/8, W/8) normalised latents."""
        b, t = frames.shape[:2]
        flat = frames.flatten(0, 1)
        latents = torch.cat([self.vae.encode(flat[i : i + batch]) for i in range(0, flat.shape[0], batch)])
        return latents.view(b, t, *latents.shape[1:])

    def decode_frames(self, latents: torch.Tensor, *, batch: int = 32) -> torch.Tensor:
        """(B, T, C, h, w) normalised latents -> (B, T, 4, 8h, 8w) reflectance."""
        b, t = latents.shape[:2]
        flat = latents.flatten(0, 1)
        frames = torch.cat([self.vae.decode(flat[i : i + batch]) for i in range(0, flat.shape[0], batch)])
        return frames.view(b, t, *frames.shape[1:])

    # --- diffusion space ----------------------------------------------------------------------
    def to_diffusion_space(self, context: torch.Tensor, future: torch.Tensor | None = None):
        """Residual preset: express latents relative to the last context frame (persistence)."""
        if not self.cfg.vegenet.residual:
            return context, future
        reference = context[:, -1:]
        return context - reference, None if future is None else future - reference

    def from_diffusion_space(self, context: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """Inverse of to_diffusion_space; frames are on axis -4 (..., T, C, h, w)."""
        return future + context[..., -1:, :, :, :] if self.cfg.vegenet.residual else future

    def context_mix(self, settings: SamplerSettings) -> float:
        return resolve_context_mix(settings, self.cfg)

    @torch.no_grad()
    def sample(
        self,
        context: torch.Tensor,
        *,
        meteo: torch.Tensor,
        static: torch.Tensor,
        conditioned: bool,
        members: int = 1,
        settings: SamplerSettings = SamplerSettings(),
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        dates: torch.Tensor | None = None,
        denoiser: int = 0,
    ) -> torch.Tensor:
        """Draw `members` futures per chip: latents (M, B, F, C, h, w) from context (B, K, C, h, w).

        meteo (B, K+F, 24) standardised; static (B, 5, H, W). With `conditioned` False (no
        meteorology and no static layers) the unconditional model is used and guidance is off.
        `noise` (M, B, F, C, h, w) fixes the starting noise (e.g. drawn per chip from its own seed,
        so a chip's forecast does not depend on which batch it was computed in). `dates`
        (B, K+F, date_channels): date features of every frame, for models with date_channels. `denoiser`:
        which of the model's denoisers draws these members (see denoiser_of).
        """
        b, k, c, h, w = context.shape
        m, horizon = members, self.cfg.vegenet.horizon
        net = (self.sampling_nets if self.sampling_nets is not None else self.denoisers())[denoiser]
        ctx, _ = self.to_diffusion_space(context)
        sigmas = sampling_sigmas(self.alphas_cumprod, settings.steps).to(context.device)
        if noise is None:
            noise = torch.randn((m, b, horizon, c, h, w), generator=generator, device=context.device, dtype=context.dtype)
        # Paper Sec. III-D: start from noise mixed with a fraction of the mean context latent.
        start = noise + self.context_mix(settings) * ctx.mean(dim=1, keepdim=True)[None]
        x = (start * (1.0 + sigmas[0] ** 2).sqrt()).flatten(0, 1)  # (M*B, F, C, h, w), member-major
        denoiser = GuidedDenoiser(self._eps_network(net, ctx, meteo=meteo, static=static, dates=dates, members=m,
                                                    conditioned=conditioned, guidance_scale=settings.guidance_scale),
                                  self.alphas_cumprod, members=m, batch=b, conditioned=conditioned,
                                  guidance_scale=settings.guidance_scale, device=context.device)
        future = SAMPLERS[settings.sampler](denoiser, x, sigmas).view(m, b, horizon, c, h, w)
        return self.from_diffusion_space(context[None], future)

    def _eps_network(self, net, ctx: torch.Tensor, *, meteo: torch.Tensor, static: torch.Tensor,
                     dates: torch.Tensor | None, members: int, conditioned: bool, guidance_scale: float):
        """eps(rows, t, keep_cond) of the future frames given the context `ctx` (B, K, C, h, w), for GuidedDenoiser.

        Every chip's conditions repeat once per guidance pass and per member (rows member-major). With a
        causal context the context stream runs once here and is shared by all steps and members.
        """
        k = ctx.shape[1]
        m = members
        keep_rows = condition_rows(ctx.shape[0], conditioned=conditioned, guidance_scale=guidance_scale,
                                   device=ctx.device)
        passes = keep_rows.shape[0] // ctx.shape[0]
        ctx_rows = ctx.repeat(passes, 1, 1, 1, 1)
        meteo_rows = meteo.repeat(passes, 1, 1)
        static_rows = static.repeat(passes, 1, 1, 1)
        date_rows = None if dates is None else dates.repeat(passes, 1, 1)
        if self.cfg.vegenet.causal_context:  # context stream once per chip, shared by steps and members
            meteo_rows = net.meteo_features(meteo_rows)  # before the split: anomalies need the context frames
            cache = net.encode_context(ctx_rows, meteo=meteo_rows[:, :k], static=static_rows, keep_cond=keep_rows,
                                       dates=None if date_rows is None else date_rows[:, :k])

            def eps(rows: torch.Tensor, t_rows: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
                return net.forward_future(rows, t_rows, meteo=meteo_rows[:, k:].repeat(m, 1, 1), keep_cond=keep,
                                          cache=cache, dates=None if date_rows is None else date_rows[:, k:].repeat(m, 1, 1))
        else:
            def eps(rows: torch.Tensor, t_rows: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
                z = torch.cat([ctx_rows.repeat(m, 1, 1, 1, 1), rows], dim=1)
                return net(z, t_rows, meteo=meteo_rows.repeat(m, 1, 1), static=static_rows.repeat(m, 1, 1, 1),
                           keep_cond=keep, dates=None if date_rows is None else date_rows.repeat(m, 1, 1))
        return eps
