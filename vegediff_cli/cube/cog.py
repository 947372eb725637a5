"""The Cloud-Optimized GeoTIFF writer: one file per variable and time step, QGIS-ready (docs/cube-format.md).

Two ways in, one layout (deflate, 256 px blocks, average overviews, nodata -9999, DATE / VARIABLE /
UNITS / STEP tags, ``{prefix}_{YYYY-MM-DD}.tif``):

- `write_cog` / `write_time_series_cogs` build each COG from an in-memory (y, x) array (about 36
  bytes per pixel at peak: 1.2 GiB for one step of a 5490 x 5490 tile): observed NDVI, maps, cubes.
- `export_cogs` streams large NetCDF grids (forecast.nc, ensemble.nc) in bounded memory: each step
  is copied from the file in bands of 256 rows into a tiled GeoTIFF on disk, and rio-cogeo builds the
  overviews and the COG layout from that file (``in_memory=False``), so memory does not grow with
  the area.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import xarray as xr
from rasterio.io import MemoryFile
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles

from ..atomic import atomic_dir, atomic_file
from ..errors import GeoreferenceError
from .netcdf_stream import open_grid, small_chunk_cache

FLOAT_NODATA = -9999.0
BLOCK = 256  # COG block edge, px
ROWS = 256  # rows copied per read when streaming: one row of NetCDF chunks
GDAL_CACHE_BYTES = 64 * 2**20  # GDAL's block cache defaults to 5 % of RAM


def cog_profile(*, predictor: int, blocksize: int = BLOCK, **extra) -> dict:
    """rio-cogeo's deflate profile with our block size and the predictor (3: floating point, 2: integers)."""
    profile = cog_profiles.get("deflate")
    profile.update({"blockxsize": blocksize, "blockysize": blocksize, "predictor": predictor, **extra})
    return profile


def step_tags(when: pd.Timestamp, step: int, *, variable: str, units: str,
              extra: dict[str, str] | None = None) -> dict[str, str]:
    """The tags of one time step's COG (`step` counts from 0)."""
    return {"DATE": when.isoformat(), "VARIABLE": variable, "UNITS": units, "STEP": str(step + 1), **(extra or {})}


def write_cog(
    values: np.ndarray,
    path: str | os.PathLike,
    *,
    crs: str,
    transform,
    nodata: float = FLOAT_NODATA,
    description: str = "",
    tags: dict[str, str] | None = None,
    overview_blocksize: int = 256,
) -> Path:
    """Write one 2-D (H, W) band as a deflate COG with overviews; NaN becomes `nodata`."""
    if values.ndim != 2:
        raise ValueError(f"write_cog takes a 2-D array, got shape {values.shape}")
    if crs is None:
        raise GeoreferenceError(f"cannot write {path} without a CRS", fix="give the cube a CRS first")
    data = np.asarray(values)
    if np.issubdtype(data.dtype, np.floating):
        data = np.where(np.isfinite(data), data, nodata).astype("float32")
    height, width = data.shape
    src_profile = {
        "driver": "GTiff", "dtype": data.dtype.name, "count": 1, "height": height, "width": width,
        "crs": crs, "transform": transform, "nodata": nodata,
    }
    profile = cog_profile(predictor=3 if data.dtype.kind == "f" else 2, blocksize=overview_blocksize)
    final = Path(path)
    with MemoryFile() as memfile, atomic_file(final) as tmp:
        with memfile.open(**src_profile) as mem:
            mem.write(data, 1)
            mem.set_band_description(1, description)
            mem.update_tags(**(tags or {}))
            mem.update_tags(1, **(tags or {}))
        with memfile.open() as src:  # cog_translate wants a read-only source
            cog_translate(
                src, str(tmp), profile, in_memory=True, quiet=True,
                overview_resampling="average", overview_level=None, use_cog_driver=False,
            )
    return final


def write_time_series_cogs(
    da: xr.DataArray,
    folder: str | os.PathLike,
    *,
    prefix: str,
    extra_tags: dict[str, str] | None = None,
) -> list[Path]:
    """One COG per time step of a (time, y, x) DataArray, named ``{prefix}_{YYYY-MM-DD}.tif``.

    The folder is replaced as a whole, so readers never see half a series.
    """
    if tuple(da.dims) != ("time", "y", "x"):
        raise ValueError(f"expected dims (time, y, x), got {da.dims}")
    crs = da.rio.crs
    if crs is None:
        raise GeoreferenceError(f"{da.name} has no CRS", fix="write one with rioxarray before exporting COGs")
    transform = da.rio.transform(recalc=True)
    written = []
    final_dir = Path(folder)
    with atomic_dir(final_dir) as tmp_dir:
        for step, when in enumerate(pd.DatetimeIndex(da["time"].values)):
            date = when.strftime("%Y-%m-%d")
            tags = step_tags(when, step, variable=str(da.name), units=str(da.attrs.get("units", "")), extra=extra_tags)
            name = f"{prefix}_{date}.tif"
            write_cog(
                da.isel(time=step).values, tmp_dir / name, crs=crs.to_string(), transform=transform,
                description=f"{da.attrs.get('long_name', da.name)} {date}", tags=tags,
            )
            written.append(final_dir / name)
    return written


def _copy_step(da: xr.DataArray, path: Path, *, crs: str, transform, description: str, tags: dict[str, str]) -> None:
    """A tiled GeoTIFF of one (y, x) DataArray, written in bands of ROWS rows (uncompressed: compressing this
    staging copy as well cost a third of the export's CPU time)."""
    height, width = da.sizes["y"], da.sizes["x"]
    profile = {"driver": "GTiff", "dtype": "float32", "count": 1, "height": height, "width": width, "crs": crs,
               "transform": transform, "nodata": FLOAT_NODATA, "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK,
               "BIGTIFF": "IF_SAFER"}  # uncompressed: a staging copy, compressed once, by cog_translate
    with rasterio.open(path, "w", **profile) as dst:
        for row0 in range(0, height, ROWS):
            rows = min(ROWS, height - row0)
            values = np.asarray(da.isel(y=slice(row0, row0 + rows)).values, dtype="float32")
            dst.write(np.where(np.isfinite(values), values, FLOAT_NODATA).astype("float32"), 1,
                      window=Window(0, row0, width, rows))
        dst.set_band_description(1, description)
        dst.update_tags(**tags)
        dst.update_tags(1, **tags)


def export_cogs(path: str | os.PathLike, layers: Sequence[tuple[str, dict, str]], folder: str | os.PathLike,
                *, extra_tags: dict[str, str] | None = None,
                finish: Callable[[Path], object] | None = None) -> list[Path]:
    """COGs ``{prefix}_{YYYY-MM-DD}.tif`` of (variable, selection, prefix) layers of a NetCDF grid, in one folder.

    Each layer is a (time, y, x) variable after `selection` (e.g. ``{"threshold": 0}``). The folder
    is replaced as a whole, so readers never see half a set. `finish` is called with the temporary
    folder once the COGs are in it, to add files that must appear with them (the QGIS project).
    """
    with small_chunk_cache():  # the default 64 MiB per variable would fill up with steps already copied
        ds = open_grid(path)
    written: list[Path] = []
    profile = cog_profile(predictor=3, num_threads="all_cpus")  # GDAL compresses the COG's blocks on every core
    try:
        crs = ds.rio.crs.to_string()
        transform = ds.rio.transform(recalc=True)
        with atomic_dir(folder) as tmp, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
            for variable, selection, prefix in layers:
                da = ds[variable].isel(selection)
                for step, when in enumerate(pd.DatetimeIndex(da["time"].values)):
                    date = when.strftime("%Y-%m-%d")
                    tags = step_tags(when, step, variable=prefix, units=str(da.attrs.get("units", "")), extra=extra_tags)
                    name = f"{prefix}_{date}.tif"
                    staging = tmp / f".{name}"
                    level = f" ({prefix})" if selection else ""  # names the threshold or drop of a probability
                    _copy_step(da.isel(time=step), staging, crs=crs, transform=transform,
                               description=f"{da.attrs.get('long_name', variable)}{level} {date}", tags=tags)
                    cog_translate(str(staging), str(tmp / name), profile, in_memory=False, quiet=True,
                                  overview_resampling="average", use_cog_driver=False)
                    staging.unlink()
                    written.append(Path(folder) / name)
            if finish is not None:
                finish(tmp)
    finally:
        ds.close()
    return written


class _BlockWriter:
    """dask.array.store target: writes (band, y, x) blocks into an open rasterio dataset.

    dask calls ``__setitem__`` under ``lock``. When one block fails, dask raises at once while
    other blocks may still be running; :meth:`close` takes the lock, so the dataset is never
    closed under a write in progress, and blocks arriving afterwards are dropped.
    """

    def __init__(self, dataset: rasterio.io.DatasetWriter) -> None:
        self.dataset = dataset
        self.lock = threading.Lock()
        self.closed = False

    def __setitem__(self, key: tuple[slice, slice, slice], block: np.ndarray) -> None:
        if self.closed:
            return
        bands, rows, cols = key
        indexes = list(range(bands.start + 1, bands.stop + 1))
        self.dataset.write(block, indexes=indexes, window=Window.from_slices(rows, cols))

    def close(self) -> None:
        with self.lock:
            self.closed = True


def write_strips(data, path: Path, *, crs: str, transform, names: Sequence[str], nodata: float, rows: int,
                 blocksize: int, compress: dict) -> Path:
    """Write a lazy (band, y, x) dask array as a tiled GeoTIFF, computing `rows` image rows at a time.

    One strip at a time bounds memory: dask would otherwise start every read of the array (the roots
    of its graph) before writing any block. Band descriptions are `names`; written atomically.
    """
    import dask.array as da

    bands, height, width = data.shape
    profile = {"driver": "GTiff", "width": width, "height": height, "count": bands,
               "dtype": str(data.dtype), "crs": crs, "transform": transform, "nodata": nodata,
               "tiled": True, "blockxsize": blocksize, "blockysize": blocksize, "interleave": "band",
               **compress, "predictor": 2, "BIGTIFF": "IF_SAFER"}
    with atomic_file(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
        # Blocks are computed (read from the network) in parallel and written one at a time:
        # a GDAL dataset may be used from several threads, but not at once.
        writer = _BlockWriter(dst)
        try:
            for top in range(0, height, rows):
                strip = np.s_[:, top : min(top + rows, height), :]
                da.store(data[strip], writer, regions=strip, lock=writer.lock)
        finally:
            writer.close()
    return Path(path)


def validate_cog(path: str | os.PathLike) -> tuple[bool, list[str], list[str]]:
    """rio-cogeo's validator: (is_valid, errors, warnings)."""
    return cog_validate(str(path), quiet=True)


def read_cog_tags(path: str | os.PathLike) -> dict[str, str]:
    with rasterio.open(path) as src:
        return src.tags()
