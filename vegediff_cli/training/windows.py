"""Augmentation and shapes of training samples: the 8 dihedral transforms, the training square.

Real data is scarce: every chip is used under the 8 rotations/reflections, and every 30-frame
window that still has at least one future frame inside the series (windows running past the end
are padded and masked, so a 30-frame cube yields 20 windows; order.py draws them, latent_cache.py
reads them). A sequence trains on its largest square of a multiple of 16 px, at most 128.
"""

from __future__ import annotations

import numpy as np

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
