"""Augmented training samples: VAE crops of single frames, and 30-frame latent windows.

Augmentation (real data is scarce): the 8 dihedral transforms of every chip, random
crops, and every 30-frame window that still has at least one future frame inside the series
(windows running past the end are padded and masked, so a 30-frame cube yields 11 windows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..config import CONTEXT_FRAMES, SEQUENCE_FRAMES, STEP_DAYS
from ..model.inputs import date_features, gap_fill, latent_weights, normalise_static, standardise_meteo
from ..model.vegediff import VegeDiff
from .sequences import Sequence


def dihedral(array: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 rotations/reflections of the last two axes."""
    out = np.rot90(array, k % 4, axes=(-2, -1))
    return np.ascontiguousarray(np.flip(out, axis=-1) if k >= 4 else out)


def spatial_size(seq: Sequence, multiple: int = 16) -> int:
    """Largest square side (multiple of 16 px, at most 128) that fits the sequence; 16 for smaller
    series (the Rhone valley's 10 x 10 px), which are padded with pixels that count as missing."""
    side = min(seq.frames.shape[-2:])
    return int(max(multiple, min(128, side - side % multiple)))


def square(seq: Sequence, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The sequence's frames (T, 4, side, side) and valid flags, cropped, or edge-padded with invalid pixels."""
    frames, valid = seq.frames[..., :side, :side], seq.valid[..., :side, :side]
    pad_h, pad_w = side - frames.shape[-2], side - frames.shape[-1]
    if pad_h or pad_w:
        frames = np.pad(frames, [(0, 0), (0, 0), (0, pad_h), (0, pad_w)], mode="edge")
        valid = np.pad(valid, [(0, 0), (0, pad_h), (0, pad_w)], constant_values=False)
    return frames, valid


class FramePool:
    """All frames with enough clear pixels, for VAE training: random crops of one frame."""

    def __init__(self, sequences: list[Sequence], *, min_clear: float = 0.3) -> None:
        self.frames: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []
        for seq in sequences:
            for t in range(seq.frames.shape[0]):
                if seq.valid[t].mean() >= min_clear:
                    self.frames.append(np.nan_to_num(seq.frames[t]))
                    self.valid.append(seq.valid[t])

    def __len__(self) -> int:
        return len(self.frames)

    def band_statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        values = np.concatenate([f[:, v] for f, v in zip(self.frames, self.valid, strict=False)], axis=1)  # (4, N)
        return tuple(values.mean(axis=1).round(5).tolist()), tuple(values.std(axis=1).round(5).tolist())

    def batch(self, size: int, crop: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(size, 4, crop, crop) reflectance and (size, 1, crop, crop) validity."""
        frames, masks = [], []
        while len(frames) < size:
            i = int(rng.integers(len(self.frames)))
            h, w = self.valid[i].shape
            if min(h, w) < crop:
                continue
            y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
            valid = self.valid[i][y : y + crop, x : x + crop]
            if valid.mean() < 0.5:
                continue
            k = int(rng.integers(8))
            frames.append(dihedral(self.frames[i][:, y : y + crop, x : x + crop], k))
            masks.append(dihedral(valid[None], k))
        return torch.from_numpy(np.stack(frames)), torch.from_numpy(np.stack(masks).astype("float32"))


@dataclass
class EncodedSequence:
    """A sequence's latents under all 8 dihedral transforms, ready for window sampling."""

    name: str
    latents: torch.Tensor  # (8, T, C, h, w) normalised latents of the gap-filled frames
    weights: torch.Tensor  # (8, T, 1, h, w) fraction of clear pixels per latent cell
    meteo: torch.Tensor  # (T, 24) standardised meteorology (zeros when absent)
    dates: torch.Tensor  # (T + 30, 3) date features of the frames and of 30 frames after the end
    static: torch.Tensor  # (8, 5, H, W) normalised static layers
    conditioned: bool  # False: no meteorology and no static layers -> always unconditional

    @property
    def frames(self) -> int:
        return self.latents.shape[1]

    @property
    def window_starts(self) -> int:
        """Number of 30-frame windows with at least one future frame inside the series."""
        return max(1, self.frames - CONTEXT_FRAMES)


@torch.no_grad()
def encode_sequence(seq: Sequence, model: VegeDiff, *, device: torch.device) -> EncodedSequence:
    side = spatial_size(seq)
    frames, valid = square(seq, side)
    filled = gap_fill(frames, valid)
    static, has_static = normalise_static({k: v[:side, :side] for k, v in seq.static.items()}, (side, side))
    latents, weights, statics = [], [], []
    factor = model.cfg.vae.downsample
    for k in range(8):
        batch = torch.from_numpy(dihedral(filled, k)).to(device)
        latents.append(model.encode_frames(batch[None]).squeeze(0).cpu())
        weights.append(torch.from_numpy(latent_weights(dihedral(valid, k), factor)))
        statics.append(torch.from_numpy(dihedral(static, k)))
    meteo = torch.from_numpy(standardise_meteo(seq.meteo, len(seq.times)))
    extended = seq.times.append(seq.times[-1] + pd.to_timedelta(STEP_DAYS * np.arange(1, SEQUENCE_FRAMES + 1), unit="D"))
    dates = torch.from_numpy(date_features(extended, seq.latitude))
    return EncodedSequence(seq.name, torch.stack(latents), torch.stack(weights), meteo, dates, torch.stack(statics),
                           conditioned=seq.has_meteo or has_static)


def sample_window(seq: EncodedSequence, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """One random augmented 30-frame window; frames past the series end are zero with weight 0."""
    k = int(rng.integers(8))
    start = int(rng.integers(seq.window_starts))
    stop = min(seq.frames, start + SEQUENCE_FRAMES)
    pad = SEQUENCE_FRAMES - (stop - start)

    def window(x: torch.Tensor) -> torch.Tensor:
        part = x[start:stop]
        return torch.cat([part, part.new_zeros((pad, *part.shape[1:]))]) if pad else part

    latents = window(seq.latents[k])
    return {
        "context": latents[:CONTEXT_FRAMES],
        "future": latents[CONTEXT_FRAMES:],
        "weights": window(seq.weights[k])[CONTEXT_FRAMES:],
        "meteo": window(seq.meteo),
        "dates": seq.dates[start : start + SEQUENCE_FRAMES],
        "static": seq.static[k],
        "conditioned": torch.tensor(seq.conditioned),
    }


def sample_batch(group: list[EncodedSequence], size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A batch from sequences of one spatial size, each chosen in proportion to its windows."""
    counts = np.array([s.window_starts for s in group], dtype="float64")
    probs = np.sqrt(counts) / np.sqrt(counts).sum()  # long series count, but do not drown short ones
    items = []
    while len(items) < size:
        item = sample_window(group[int(rng.choice(len(group), p=probs))], rng)
        if float(item["weights"].sum()) > 0:  # at least one clear future cell to learn from
            items.append(item)
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}
