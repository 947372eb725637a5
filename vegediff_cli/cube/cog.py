"""Cloud-Optimized GeoTIFF writer: one file per variable and time step, QGIS-ready."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import xarray as xr
from rasterio.io import MemoryFile
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles

from ..atomic import atomic_dir, atomic_file
from ..errors import GeoreferenceError

FLOAT_NODATA = -9999.0


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
    profile = cog_profiles.get("deflate")
    profile.update({"blockxsize": overview_blocksize, "blockysize": overview_blocksize, "predictor": 3 if data.dtype.kind == "f" else 2})
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
            tags = {
                "DATE": when.isoformat(), "VARIABLE": str(da.name), "UNITS": str(da.attrs.get("units", "")),
                "STEP": str(step + 1), **(extra_tags or {}),
            }
            name = f"{prefix}_{date}.tif"
            write_cog(
                da.isel(time=step).values, tmp_dir / name, crs=crs.to_string(), transform=transform,
                description=f"{da.attrs.get('long_name', da.name)} {date}", tags=tags,
            )
            written.append(final_dir / name)
    return written


def validate_cog(path: str | os.PathLike) -> tuple[bool, list[str], list[str]]:
    """rio-cogeo's validator: (is_valid, errors, warnings)."""
    return cog_validate(str(path), quiet=True)


def read_cog_tags(path: str | os.PathLike) -> dict[str, str]:
    with rasterio.open(path) as src:
        return src.tags()
