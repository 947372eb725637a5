"""What a cube observed: clear-sky NDVI of chosen frames and windows, the context window, and read windows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from ..config import CONTEXT_FRAMES, NIR, RED, VALID
from ..cube.masks import ndvi
from ..cube.netcdf import CHUNK_XY
from ..errors import UsageError


def observed_ndvi(cube: xr.Dataset, frames: Sequence[int] | np.ndarray, rows: slice = slice(None),
                  cols: slice = slice(None)) -> np.ndarray:
    """NDVI (len(frames), rows, cols) in float64, clipped to [-1, 1], NaN where the frame is not valid.

    Validity is the cube's ``valid_mask``: for GreenEarthNet minicubes that is the benchmark's
    rule ``(s2_dlmask < 1) & s2_SCL in {1, 2, 4, 5, 6, 7}``, applied by the reader.
    """
    frames = np.asarray(frames, dtype="int64")
    if frames.size == 0:
        shape = (len(range(*rows.indices(cube.sizes["y"]))), len(range(*cols.indices(cube.sizes["x"]))))
        return np.empty((0, *shape))
    window = {"time": frames, "y": rows, "x": cols}
    red = cube[RED].isel(window).values
    nir = cube[NIR].isel(window).values
    valid = cube[VALID].isel(window).values.astype(bool)
    values = ndvi(red, nir).astype("float64")
    return np.clip(np.where(valid & np.isfinite(values), values, np.nan), -1.0, 1.0)


def context_indices(first_forecast_frame: int, *, context_frames: int = CONTEXT_FRAMES) -> np.ndarray:
    """The `context_frames` frames before the first forecast frame (fewer when the cube starts later)."""
    if context_frames < 1:
        raise UsageError(f"--context-frames {context_frames} must be at least 1", fix="use the default of 10")
    return np.arange(max(0, first_forecast_frame - context_frames), first_forecast_frame)


def read_windows(height: int, width: int, *, depth: int, budget: int = 16_000_000,
                 chunk: int = CHUNK_XY) -> list[tuple[slice, slice]]:
    """(rows, cols) windows aligned to the files' 256 px chunks, each holding about `budget` values.

    Reading whole chunks once matters: a window that cuts a compressed chunk makes the next
    window decompress it again.
    """
    rows = min(height, chunk)
    cols = max(chunk, budget // max(1, depth * rows) // chunk * chunk)
    return [(slice(r, min(r + rows, height)), slice(c, min(c + cols, width)))
            for r in range(0, height, rows) for c in range(0, width, cols)]


def row_slices(rows: int, cols: int, *, depth: int, budget: int = 16_000_000) -> list[slice]:
    """Row slices of an in-memory window whose float64 temporaries hold about `budget` values."""
    step = max(1, min(rows, budget // max(1, depth * cols)))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]
