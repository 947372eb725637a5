"""VegeNet: the DiT-style denoiser of VegeDiff (paper Sec. III-C, Fig. 2).

Tokens are 2 x 2 patches of each frame's latent. Every block applies
1. spatial self-attention among the tokens of one frame,
2. temporal self-attention among the frames of one patch position, with the patch's
   static-layer token prepended (static layers enter *locally*, paper Eq. 6),
3. an MLP,
each modulated by adaLN-Zero whose condition is the per-frame sum of the diffusion timestep
embedding and the frame's meteorology embedding (meteorology enters *globally*, Eq. 5).
Context frames are clean and get timestep 0 plus a learned "context" embedding. With
``date_channels`` (a departure from the paper, see MODEL_CARD.md) every frame's condition also
holds an embedding of its day of year and the site's latitude, which is never dropped.

With ``causal_context`` the context stream never looks at the future, so sampling runs it once
(:meth:`VegeNet.encode_context`) and then only the future stream per step
(:meth:`VegeNet.forward_future`); :meth:`VegeNet.forward` computes the same thing in one pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .presets import VegeNetConfig

KV = tuple[torch.Tensor, torch.Tensor]


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (N,) positions -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=positions.device) / half)
    args = positions.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (height * width, dim), as in DiT/MAE."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.cat([sincos_1d(ys.flatten(), dim // 2), sincos_1d(xs.flatten(), dim // 2)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.mlp(sincos_1d(timesteps, self.frequency_dim))  # (N, hidden)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over (N, heads, L, d); `mask` (Lq, Lk) bool, True = may attend.

    On CUDA: PyTorch's fused kernels. On CPUs the sequences are short (31 frames, 64 patches), where
    the explicit form with the softmax in fp32 is the faster one, and the fused CPU kernel's
    backward under bf16 autocast is 7 x slower than this (measured on the project's CPU).
    """
    if q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (N, heads, Lq, Lk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.float().softmax(dim=-1).to(v.dtype) @ v


ACTIVATIONS = {"gelu_tanh": lambda: nn.GELU(approximate="tanh"), "gelu": lambda: nn.GELU()}


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, L, D) -> q, k, v each (N, heads, L, head_dim)."""
        n, length, hidden = x.shape
        qkv = self.qkv(x).view(n, length, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = attention(q, k, v, mask)  # (N, heads, Lq, head_dim)
        n, _, length, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(n, length, -1))  # (N, Lq, D)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(*self.project(x), mask)


class VegeBlock(nn.Module):
    """Spatial attention -> temporal attention (with static token) -> MLP, all adaLN-Zero."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, activation: str = "gelu_tanh") -> None:
        super().__init__()
        self.norm_s = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn_s = Attention(hidden, heads)
        self.norm_t = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn_t = Attention(hidden, heads)
        self.norm_m = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, width), ACTIVATIONS[activation](), nn.Linear(width, hidden))
        self.norm_static = nn.LayerNorm(hidden, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 9 * hidden))
        nn.init.zeros_(self.ada[-1].weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(self.ada[-1].bias)

    def _spatial(self, x: torch.Tensor, mods) -> torch.Tensor:
        b, t, p, d = x.shape
        shift, scale, gate = mods
        h = modulate(self.norm_s(x), shift, scale).reshape(b * t, p, d)  # (B*T, P, D)
        return x + gate * self.attn_s(h).view(b, t, p, d)

    def _temporal_input(self, x: torch.Tensor, mods) -> torch.Tensor:
        """Modulated tokens regrouped per patch position: (B, T, P, D) -> (B*P, T, D)."""
        b, t, p, d = x.shape
        return modulate(self.norm_t(x), mods[0], mods[1]).permute(0, 2, 1, 3).reshape(b * p, t, d)

    def _mlp(self, x: torch.Tensor, mods) -> torch.Tensor:
        shift, scale, gate = mods
        return x + gate * self.mlp(modulate(self.norm_m(x), shift, scale))

    def _mods(self, cond: torch.Tensor):
        m = self.ada(cond).unsqueeze(2).chunk(9, dim=-1)  # 9 x (B, T, 1, D)
        return m[0:3], m[3:6], m[6:9]

    def forward(self, x: torch.Tensor, cond: torch.Tensor, static: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, P, D) tokens; cond (B, T, D) per-frame condition; static (B, P, D)."""
        b, t, p, d = x.shape
        mod_s, mod_t, mod_m = self._mods(cond)
        x = self._spatial(x, mod_s)
        h = self._temporal_input(x, mod_t)  # (B*P, T, D)
        h = torch.cat([self.norm_static(static).reshape(b * p, 1, d), h], dim=1)  # (B*P, 1+T, D)
        h = self.attn_t(h, mask)[:, 1:]  # the static token's own output is not used: (B*P, T, D)
        x = x + mod_t[2] * h.view(b, p, t, d).permute(0, 2, 1, 3)
        return self._mlp(x, mod_m)  # (B, T, P, D)

    def forward_context(self, x: torch.Tensor, cond: torch.Tensor, static: torch.Tensor) -> tuple[torch.Tensor, KV]:
        """Context frames only; also returns the temporal keys/values of [static, context]."""
        b, t, p, d = x.shape
        mod_s, mod_t, mod_m = self._mods(cond)
        x = self._spatial(x, mod_s)
        h = torch.cat([self.norm_static(static).reshape(b * p, 1, d), self._temporal_input(x, mod_t)], dim=1)
        q, k, v = self.attn_t.project(h)  # (B*P, heads, 1+T, hd)
        h = self.attn_t.attend(q, k, v)[:, 1:]
        x = x + mod_t[2] * h.view(b, p, t, d).permute(0, 2, 1, 3)
        return self._mlp(x, mod_m), (k, v)

    def forward_future(self, x: torch.Tensor, cond: torch.Tensor, context_kv: KV) -> torch.Tensor:
        """Future frames attending to themselves and to the cached [static, context] keys/values."""
        b, t, p, d = x.shape
        mod_s, mod_t, mod_m = self._mods(cond)
        x = self._spatial(x, mod_s)
        q, k, v = self.attn_t.project(self._temporal_input(x, mod_t))  # (B*P, heads, T, hd)
        k_ctx, v_ctx = context_kv
        repeat = q.shape[0] // k_ctx.shape[0]  # several members share one context
        if repeat > 1:
            k_ctx, v_ctx = k_ctx.repeat(repeat, 1, 1, 1), v_ctx.repeat(repeat, 1, 1, 1)
        h = self.attn_t.attend(q, torch.cat([k_ctx, k], dim=2), torch.cat([v_ctx, v], dim=2))
        x = x + mod_t[2] * h.view(b, p, t, d).permute(0, 2, 1, 3)
        return self._mlp(x, mod_m)


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.linear = nn.Linear(hidden, out_dim)
        for layer in (self.ada[-1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(cond).unsqueeze(2).chunk(2, dim=-1)  # (B, T, 1, D)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, T, P, out)


METEOROLOGY = ("absolute", "context_anomaly", "absolute_and_anomaly", "none")  # VegeNetConfig.meteorology


class VegeNet(nn.Module):
    """eps-prediction network over a (B, T, C, h, w) latent sequence (context then future)."""

    def __init__(self, cfg: VegeNetConfig) -> None:
        super().__init__()
        if cfg.meteorology not in METEOROLOGY:
            raise ValueError(f"unknown meteorology {cfg.meteorology!r}: one of {', '.join(METEOROLOGY)}")
        self.cfg = cfg
        d, ps, c = cfg.hidden, cfg.patch_size, cfg.latent_channels
        self.patch_embed = nn.Linear(c * ps * ps, d)
        self.static_embed = nn.Linear(cfg.static_channels * cfg.static_patch**2, d)
        self.null_static = nn.Parameter(torch.zeros(d))  # used when static layers are dropped
        self.t_embed = TimestepEmbedder(d)
        self.meteo_embed = nn.Sequential(nn.Linear(cfg.meteo_inputs, d), nn.SiLU(), nn.Linear(d, d))
        self.null_meteo = nn.Parameter(torch.zeros(d))  # used when meteorology is dropped
        self.role_embed = nn.Embedding(2, d)  # 0 = context frame (clean), 1 = future frame (noised)
        if cfg.date_channels:  # day of year and latitude -> adaLN condition, never dropped
            self.date_embed = nn.Sequential(nn.Linear(cfg.date_channels, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(VegeBlock(d, cfg.heads, cfg.mlp_ratio, cfg.mlp_activation) for _ in range(cfg.depth))
        self.final = FinalLayer(d, c * ps * ps)
        nn.init.normal_(self.null_static, std=0.02)
        nn.init.normal_(self.null_meteo, std=0.02)

    # --- tokens ---------------------------------------------------------------------------------
    def patchify(self, z: torch.Tensor) -> torch.Tensor:
        """(B, T, C, h, w) -> (B, T, P, C*ps*ps) with P = (h/ps)*(w/ps)."""
        b, t, c, h, w = z.shape
        ps = self.cfg.patch_size
        z = z.reshape(b, t, c, h // ps, ps, w // ps, ps).permute(0, 1, 3, 5, 2, 4, 6)
        return z.reshape(b, t, (h // ps) * (w // ps), c * ps * ps)

    def unpatchify(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, t, _, _ = tokens.shape
        ps, c = self.cfg.patch_size, self.cfg.latent_channels
        z = tokens.reshape(b, t, h // ps, w // ps, c, ps, ps).permute(0, 1, 4, 2, 5, 3, 6)
        return z.reshape(b, t, c, h, w)

    def _embed_frames(self, z: torch.Tensor, first_frame: int) -> torch.Tensor:
        _, t, _, h, w = z.shape
        ps = self.cfg.patch_size
        x = self.patch_embed(self.patchify(z))  # (B, T, P, D)
        pos = sincos_2d(h // ps, w // ps, self.cfg.hidden).to(x)  # (P, D)
        frames = torch.arange(first_frame, first_frame + t, device=z.device)
        return x + pos[None, None] + sincos_1d(frames, self.cfg.hidden).to(x)[None, :, None]

    def _conditions(
        self, timesteps: torch.Tensor, meteo: torch.Tensor, keep: torch.Tensor, first_frame: int,
        dates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-frame adaLN condition (B, T, D): timestep + role + meteorology (or its null token) + date."""
        b, t, _ = meteo.shape
        frames = torch.arange(first_frame, first_frame + t, device=meteo.device)
        roles = (frames >= self.cfg.context_frames).long()
        frame_t = torch.where(roles.bool()[None], timesteps.view(b, 1).float(), torch.zeros(b, t, device=meteo.device))
        cond = self.t_embed(frame_t.flatten()).view(b, t, -1) + self.role_embed(roles)[None]
        if self.cfg.meteorology == "none":
            cond = cond + self.null_meteo.view(1, 1, -1)
        else:
            cond = cond + torch.where(keep.view(b, 1, 1), self.meteo_embed(meteo), self.null_meteo.view(1, 1, -1))
        if self.cfg.date_channels:
            if dates is None:
                raise ValueError(f"this model needs dates (B, T, {self.cfg.date_channels}): model/inputs.py date_features")
            cond = cond + self.date_embed(dates.to(cond.dtype))  # (B, T, D)
        return cond

    def meteo_features(self, meteo: torch.Tensor) -> torch.Tensor:
        """(B, K+F, 24) standardised meteorology of every frame -> what the network reads (cfg.meteorology).

        "context_anomaly" subtracts the mean of the context frames, so it needs the whole sequence:
        forward() applies it itself; callers of encode_context / forward_future apply it first.
        "absolute_and_anomaly" gives (B, K+F, 48): the values, then their anomalies.
        """
        if self.cfg.meteorology in ("context_anomaly", "absolute_and_anomaly"):
            anomaly = meteo - meteo[:, : self.cfg.context_frames].mean(dim=1, keepdim=True)
            return anomaly if self.cfg.meteorology == "context_anomaly" else torch.cat([meteo, anomaly], dim=-1)
        return meteo

    def embed_static(self, static: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(B, S, H, W) static layers -> (B, P, D) tokens; rows with keep=False get the null token."""
        b, s, height, width = static.shape
        sp = self.cfg.static_patch
        patches = static.reshape(b, s, height // sp, sp, width // sp, sp).permute(0, 2, 4, 1, 3, 5)
        tokens = self.static_embed(patches.reshape(b, (height // sp) * (width // sp), s * sp * sp))
        return torch.where(keep.view(b, 1, 1), tokens, self.null_static.view(1, 1, -1))

    def _temporal_mask(self, frames: int, device: torch.device) -> torch.Tensor | None:
        """Block-causal mask over [static, frames]: static and context rows see only them."""
        if not self.cfg.causal_context:
            return None
        n_ctx = 1 + self.cfg.context_frames
        allowed = torch.ones(1 + frames, 1 + frames, dtype=torch.bool, device=device)
        allowed[:n_ctx, n_ctx:] = False
        return allowed

    # --- passes ---------------------------------------------------------------------------------
    def forward(
        self,
        z: torch.Tensor,
        timesteps: torch.Tensor,
        *,
        meteo: torch.Tensor,
        static: torch.Tensor,
        keep_cond: torch.Tensor,
        dates: torch.Tensor | None = None,
        keep_meteo: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict eps of the future frames in one pass (training).

        z (B, T, C, h, w): clean context latents followed by noised future latents;
        timesteps (B,) DDPM timesteps of the future frames (float, 0..999);
        meteo (B, T, 24) standardised meteorology; static (B, 5, 8h, 8w);
        keep_cond (B,) bool: False drops meteorology and static layers (classifier-free guidance);
        dates (B, T, date_channels) date features (models with date_channels only);
        keep_meteo (B,) bool, optional: False drops the meteorology alone (training's meteo_dropout).
        Returns eps (B, T_future, C, h, w).
        """
        _, t, _, h, w = z.shape
        ctx = self.cfg.context_frames
        x = self._embed_frames(z, 0)  # (B, T, P, D)
        meteo_kept = keep_cond if keep_meteo is None else keep_cond & keep_meteo
        cond = self._conditions(timesteps, self.meteo_features(meteo), meteo_kept, 0, dates)  # (B, T, D)
        static_tokens = self.embed_static(static, keep_cond)  # (B, P, D)
        mask = self._temporal_mask(t, z.device)
        for block in self.blocks:
            x = block(x, cond, static_tokens, mask)
        out = self.final(x[:, ctx:], cond[:, ctx:])  # (B, T_future, P, C*ps*ps)
        return self.unpatchify(out, h, w)

    def encode_context(
        self, context: torch.Tensor, *, meteo: torch.Tensor, static: torch.Tensor, keep_cond: torch.Tensor,
        dates: torch.Tensor | None = None,
    ) -> list[KV]:
        """Run the context stream once (causal_context only): per-block temporal keys/values.

        context (B, K, C, h, w); meteo (B, K, 24) of the context frames as meteo_features gives
        them, dates (B, K, date_channels); static (B, 5, H, W).
        """
        if not self.cfg.causal_context:
            raise RuntimeError("encode_context needs causal_context=True")
        b = context.shape[0]
        x = self._embed_frames(context, 0)
        cond = self._conditions(torch.zeros(b, device=context.device), meteo, keep_cond, 0, dates)
        static_tokens = self.embed_static(static, keep_cond)
        cache = []
        for block in self.blocks:
            x, kv = block.forward_context(x, cond, static_tokens)
            cache.append(kv)
        return cache

    def forward_future(
        self,
        future: torch.Tensor,
        timesteps: torch.Tensor,
        *,
        meteo: torch.Tensor,
        keep_cond: torch.Tensor,
        cache: list[KV],
        dates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """eps of the noised future (B, F, C, h, w) given a context cache from encode_context.

        The cache may hold fewer rows than `future` (members share a context): B must be a
        multiple of the cache's batch, and rows are matched as future[i] <-> cache[i % Bc]. meteo
        (B, F, 24) of the future frames as meteo_features gives them.
        """
        _, _, _, h, w = future.shape
        ctx = self.cfg.context_frames
        x = self._embed_frames(future, ctx)
        cond = self._conditions(timesteps, meteo, keep_cond, ctx, dates)
        for block, kv in zip(self.blocks, cache, strict=False):
            x = block.forward_future(x, cond, kv)
        return self.unpatchify(self.final(x, cond), h, w)
