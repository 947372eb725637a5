"""Reflectance checked at the boundary: a cube whose bands are not surface reflectance 0-1 is refused.

Caught here (each used to give a meaningless forecast and exit 0, or a misleading error):

- bands stored as booleans, or as integers without a scale factor (Sentinel-2 digital numbers
  0-10000: written into a cube they saturate at 3.2767);
- float digital numbers (0-10000 instead of 0-1);
- clear pixels whose reflectance is NaN or infinite everywhere (a forecast of NaN only).

The values are sampled, in bounded memory: up to MAX_FRAMES frames x MAX_STRIPS strips of
STRIP_ROWS rows, spread evenly over the cube (all of it for chip-sized cubes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from ..config import BANDS, VALID
from ..errors import CorruptInputError

MAX_FRAMES = 6
MAX_STRIPS = 6
STRIP_ROWS = 128
MAX_REFLECTANCE = 2.0  # 99th percentile of clear reflectance above this: digital numbers, not reflectance
MIN_REFLECTANCE = -1.0


def check_band_types(ds: xr.Dataset, *, source: str) -> None:
    """Refuse boolean bands and integer bands that are not scaled to reflectance (metadata only)."""
    for band in BANDS:
        if band not in ds:
            continue
        dtype = ds[band].dtype
        if dtype.kind == "b":
            raise CorruptInputError(f"{source}: {band} holds booleans, not surface reflectance",
                                    fix="pass reflectance 0-1 (float, or int16 with scale_factor 1e-4)")
        if np.issubdtype(dtype, np.integer):
            raise CorruptInputError(
                f"{source}: {band} holds integers ({dtype}) without a scale factor: digital numbers, not reflectance",
                fix="divide by 10000 (or set the variable's scale_factor to 1e-4) so that values lie in 0-1")


def _spread(count: int, most: int) -> list[int]:
    if count <= most:
        return list(range(count))
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, most)})


def check_reflectance(ds: xr.Dataset, *, source: str, frames: Sequence[int] | None = None,
                      what: str = "the cube") -> None:
    """Refuse reflectance that is not 0-1 or not finite on clear pixels (see the module docstring).

    `frames`: time indices to sample from (e.g. a forecast's context frames); default: all.
    """
    check_band_types(ds, source=source)
    present = [b for b in BANDS if b in ds]
    if not present:
        return
    candidates = list(frames) if frames is not None else list(range(ds.sizes.get("time", 1)))
    times = [candidates[i] for i in _spread(len(candidates), MAX_FRAMES)]
    height = ds.sizes.get("y", 1)
    strips = [s * STRIP_ROWS for s in _spread(max(1, -(-height // STRIP_ROWS)), MAX_STRIPS)]
    clear_seen = finite_seen = 0
    high: list[float] = []
    low: list[float] = []
    for row0 in strips:
        sel = {"time": times, "y": slice(row0, row0 + STRIP_ROWS)}
        values = np.stack([np.asarray(ds[b].isel(sel).values, dtype="float32") for b in present])  # (B, T, r, W)
        clear = np.asarray(ds[VALID].isel(sel).values).astype(bool) if VALID in ds else np.ones(values.shape[1:], bool)
        finite = np.isfinite(values).all(axis=0) & clear
        clear_seen += int(clear.sum())
        finite_seen += int(finite.sum())
        if finite.any():
            picked = values[:, finite]  # (B, n)
            high.append(float(np.percentile(picked, 99)))
            low.append(float(np.percentile(picked, 1)))
    if clear_seen and not finite_seen:
        raise CorruptInputError(
            f"{source}: the clear pixels of {what} have no finite reflectance ({', '.join(present)} are NaN or "
            f"infinite wherever {VALID} is set)",
            fix="the bands or the mask are damaged: re-create the cube with `vegediff prepare`")
    if high and max(high) > MAX_REFLECTANCE:
        raise CorruptInputError(
            f"{source}: reflectance reaches {max(high):.4g} (99th percentile of clear pixels): these look like "
            "digital numbers (0-10000), not surface reflectance (0-1)",
            fix="divide the bands by 10000 (or set their scale_factor to 1e-4)")
    if low and min(low) < MIN_REFLECTANCE:
        raise CorruptInputError(f"{source}: reflectance goes down to {min(low):.4g}, far below 0",
                                fix="pass surface reflectance 0-1 (check the offset and scale of the bands)")
