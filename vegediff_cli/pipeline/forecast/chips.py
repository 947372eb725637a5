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

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ...config import SamplerSettings
from ...model.device import inference_autocast
from ...model.inputs import gap_fill
from ...model.vegediff import VegeDiff


@dataclass(frozen=True)
class ChipSettings:
    members: int = 1  # stochastic members per chip
    sampler: SamplerSettings = field(default_factory=SamplerSettings)  # sampler, steps, guidance, context mix
    detail_transfer: bool = True  # add the reference frame's VAE residual to every member
    precision: str = "fp32"  # resolved inference precision: "fp32" or "bf16" (model/device.py)
    frames_per_vae_call: int = 4  # frames per VAE encoder / decoder call: few keep activations small (CPU)
    pad_chips: int = 0  # pad a smaller batch to this many chips (fixed shapes for a compiled denoiser)


@dataclass
class ChipBatch:
    """Inputs for B chips (numpy, float32)."""

    context: np.ndarray  # (B, K, 4, H, W) reflectance of the K context frames, NaN where missing
    valid: np.ndarray  # (B, K, H, W) clear-sky flags of the context frames
    meteo: np.ndarray  # (B, K+F, 24) standardised meteorology (zeros where unknown), or (M, B, K+F, 24) per member
    static: np.ndarray  # (B, 5, H, W) normalised static layers
    seeds: list[int]  # one seed per chip: its noise does not depend on the batch it is in
    dates: np.ndarray | None = None  # (B, K+F, 3) date features (model/inputs.py), for models that read them

    def __len__(self) -> int:
        return len(self.seeds)

    def padded(self, size: int) -> ChipBatch:
        """The batch with its last chip repeated up to `size` chips (the copies' outputs are dropped)."""
        extra = size - len(self)
        if extra <= 0:
            return self

        def grow(values: np.ndarray, axis: int = 0) -> np.ndarray:
            last = np.take(values, [values.shape[axis] - 1], axis=axis)
            return np.concatenate([values, np.repeat(last, extra, axis=axis)], axis=axis)

        meteo = grow(self.meteo, axis=1 if self.meteo.ndim == 4 else 0)  # per-member meteorology: chips on axis 1
        return ChipBatch(grow(self.context), grow(self.valid), meteo, grow(self.static),
                         [*self.seeds, *[self.seeds[-1]] * extra],
                         dates=grow(self.dates) if self.dates is not None else None)


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
    member_range: tuple[int, int] | None = None,
) -> np.ndarray:
    """Member reflectance forecasts (m, B, F, 4, H, W) float32 for a batch of chips.

    `member_range` (m0, m1) computes members m0 .. m1-1 of `settings.members` only (default all):
    each member's noise is the same as in a run of all members, so a chip's members may be computed
    in chunks, by different processes.
    """
    b = len(batch)
    if settings.pad_chips > b:
        return forecast_chips(model, batch.padded(settings.pad_chips), conditioned=conditioned,
                              settings=replace(settings, pad_chips=0), device=device, member_range=member_range)[:, :b]
    m0, m1 = member_range if member_range is not None else (0, settings.members)
    filled = np.stack([gap_fill(batch.context[i], batch.valid[i]) for i in range(b)])  # (B, K, 4, H, W)
    frames = torch.from_numpy(filled).to(device)
    chunk = settings.frames_per_vae_call
    with inference_autocast(device, settings.precision):
        context = model.encode_frames(frames, batch=chunk).float()  # (B, K, C, h, w)
        latent_shape = (model.cfg.vegenet.horizon, *context.shape[2:])
        noise = torch.stack([chip_noise(s, settings.members, latent_shape)[m0:m1] for s in batch.seeds], dim=1)
        future = _sample_members(model, context, batch, noise, conditioned=conditioned, settings=settings,
                                 device=device, first=m0)  # (m, B, F, C, h, w)
        m, _, f = future.shape[:3]
        decoded = model.decode_frames(future.reshape(m * b, f, *future.shape[3:]), batch=chunk).float()
        decoded = decoded.view(m, b, f, *decoded.shape[2:])  # (m, B, F, 4, H, W)
        if settings.detail_transfer:
            reference = frames[:, -1]  # (B, 4, H, W) last gap-filled context frame
            blurred = model.decode_frames(context[:, -1:], batch=chunk)[:, 0].float()
            decoded = decoded + (reference - blurred)[None, :, None]
    return decoded.cpu().numpy()


def _sample_members(model: VegeDiff, context: torch.Tensor, batch: ChipBatch, noise: torch.Tensor, *,
                    conditioned: bool, settings: ChipSettings, device: torch.device, first: int = 0) -> torch.Tensor:
    """(m, B, F, C, h, w) latents of members first .. first+m-1 (m = len(noise)); members with different
    weather (scenarios) or drawn by different denoisers (VegeDiff.denoiser_of) are sampled group by group.

    Members sharing one meteorology and one denoiser run as one batch; each keeps the noise drawn for it
    from its chip's seed, so a member's forecast does not depend on how the members were grouped or chunked.
    """
    count = noise.shape[0]
    static = torch.from_numpy(batch.static).to(device)
    noise = noise.to(device=device, dtype=context.dtype)
    dates = None if batch.dates is None or not model.cfg.vegenet.date_channels else torch.from_numpy(batch.dates).to(device)
    groups: dict[tuple[int, bytes], tuple[list[int], np.ndarray]] = {}
    for j in range(count):
        meteo = batch.meteo if batch.meteo.ndim == 3 else batch.meteo[first + j]
        key = (model.denoiser_of(first + j), b"" if batch.meteo.ndim == 3 else meteo.tobytes())
        groups.setdefault(key, ([], meteo))[0].append(j)
    out = None
    for (denoiser, _), (members, meteo) in groups.items():
        part = model.sample(context, meteo=torch.from_numpy(np.ascontiguousarray(meteo)).to(device), static=static,
                            conditioned=conditioned, members=len(members), settings=settings.sampler,
                            noise=noise[members], dates=dates, denoiser=denoiser).float()
        if out is None:
            out = part.new_empty((count, *part.shape[1:]))
        out[members] = part
    return out
