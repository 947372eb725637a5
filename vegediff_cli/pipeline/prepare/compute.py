"""Running the lazy cube: dask computations with a progress bar, streaming writes, NDVI on the fly."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path

import dask
import numpy as np
import xarray as xr
from dask.callbacks import Callback

from ...config import NIR, RED, VALID
from ...cube.masks import ndvi
from ...cube.netcdf import chunk_cache, write_netcdf
from ...progress import ProgressBar, ProgressFactory, no_progress

# HDF5 keeps a chunk cache per open variable: netCDF4's default of 64 MiB each, over the ~12
# variables read and written here, would cost ~0.7 GiB. Reads and writes are chunk-aligned
# (dask chunks are multiples of the 256 px file chunks), so a few MiB per variable suffice.
NETCDF_CHUNK_CACHE_BYTES = 8 * 2**20


def small_netcdf_cache(size: int = NETCDF_CHUNK_CACHE_BYTES) -> AbstractContextManager[None]:
    """Files opened or created inside get a `size`-byte chunk cache per variable (cube/netcdf.py)."""
    return chunk_cache(size)


class DaskProgress(Callback):
    """A dask callback that drives a vegediff progress bar, one tick per finished task."""

    def __init__(self, progress: ProgressFactory, desc: str) -> None:
        super().__init__()
        self._progress = progress
        self._desc = desc
        self._context: AbstractContextManager[ProgressBar] | None = None
        self._bar: ProgressBar | None = None

    def _start_state(self, dsk, state) -> None:
        total = sum(len(state[key]) for key in ("ready", "waiting", "running", "finished") if key in state)
        self._context = self._progress(total, self._desc)
        self._bar = self._context.__enter__()

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def _finish(self, dsk, state, errored) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
        self._context = self._bar = None


def compute(value, *, progress: ProgressFactory = no_progress, desc: str = "computing") -> np.ndarray:
    """Compute a (small) lazy result with a progress bar; numpy in, numpy out."""
    data = value.data if isinstance(value, xr.DataArray) else value
    if not dask.is_dask_collection(data):
        return np.asarray(data)
    with DaskProgress(progress, desc):
        return np.asarray(dask.compute(data)[0])


def write_prepared(cube: xr.Dataset, path: str | os.PathLike, *, progress: ProgressFactory = no_progress) -> Path:
    """Stream the lazy cube to NetCDF (atomic: temp file + rename), chunk by chunk."""
    with small_netcdf_cache(), DaskProgress(progress, "writing cube"):
        return write_netcdf(cube, path)


def lazy_ndvi(cube: xr.Dataset) -> xr.DataArray:
    """NDVI (time, y, x) of the clear observations, computed on the fly (never stored in the cube)."""
    values = xr.apply_ufunc(ndvi, cube[RED], cube[NIR], dask="parallelized", output_dtypes=[np.float32])
    values = values.where(cube[VALID].astype(bool))
    values.attrs = {"long_name": "NDVI (clear-sky observations)", "units": "1"}
    return values.rio.write_crs(cube.rio.crs)
