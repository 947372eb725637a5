"""What a cube observed: clear-sky NDVI of chosen frames and windows, the context window, and read windows."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..config import CONTEXT_FRAMES, NIR, RED, VALID
from ..cube.cog import write_cog
from ..cube.masks import ndvi
from ..cube.netcdf import CHUNK_XY
from ..cube.readers import open_cube
from ..errors import UsageError
from ..qgis.products import OBSERVED


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


def write_observed_cogs(cube: xr.Dataset, frames: Sequence[int], folder: str | os.PathLike) -> list[Path]:
    """``observed_ndvi_<YYYY-MM-DD>.tif`` in `folder` for each frame index: clear-sky NDVI, nodata elsewhere.

    One frame is held in memory at a time. A cube without a CRS gets none (a COG must be placed).
    """
    crs = cube.rio.crs
    if crs is None or len(frames) == 0:
        return []
    transform = cube.rio.transform(recalc=True)
    dates = pd.DatetimeIndex(cube["time"].values)
    written = []
    for index in frames:
        date = f"{dates[index]:%Y-%m-%d}"
        values = observed_ndvi(cube, [index])[0].astype("float32")
        tags = {"DATE": dates[index].isoformat(), "VARIABLE": OBSERVED, "UNITS": "1", "FRAME": str(int(index))}
        written.append(write_cog(values, Path(folder) / f"{OBSERVED}_{date}.tif", crs=crs.to_string(),
                                 transform=transform, description=f"observed NDVI (clear sky) {date}", tags=tags))
    return written


def write_context_cogs(cube_path: str | os.PathLike, dates: Sequence[str], folder: str | os.PathLike) -> list[Path]:
    """write_observed_cogs for the frames of the cube at `dates` (YYYY-MM-DD; dates it lacks are skipped)."""
    cube = open_cube(cube_path)
    try:
        found = pd.DatetimeIndex(cube["time"].values).normalize().get_indexer(pd.DatetimeIndex(list(dates)))
        return write_observed_cogs(cube, [int(i) for i in found if i >= 0], folder)
    finally:
        cube.close()


def context_indices(first_forecast_frame: int, *, context_frames: int = CONTEXT_FRAMES) -> np.ndarray:
    """The `context_frames` frames before the first forecast frame (fewer when the cube starts later)."""
    if context_frames < 1:
        raise UsageError(f"`context_frames` {context_frames} must be at least 1", fix="use the default of 10")
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
