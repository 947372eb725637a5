"""COG export of large grids in bounded memory: one step at a time, 256 rows at a time.

`cube/cog.write_cog` builds each COG from an in-memory array (about 36 bytes per pixel at peak:
1.2 GiB for one step of a 5490 x 5490 tile). Here each step is copied from the NetCDF in bands of
rows into a tiled GeoTIFF on disk, and rio-cogeo builds the overviews and the COG layout from
that file (``in_memory=False``), so memory does not grow with the area. Naming, nodata, tags and
band description follow docs/cube-format.md, as write_cog does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import xarray as xr
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

from ..atomic import atomic_dir
from .cog import FLOAT_NODATA
from .forecast_writer import open_grid, small_chunk_cache

ROWS = 256  # rows copied per read: one row of NetCDF chunks
GDAL_CACHE_BYTES = 64 * 2**20  # GDAL's block cache defaults to 5 % of RAM


def _copy_step(da: xr.DataArray, path: Path, *, crs: str, transform, description: str, tags: dict[str, str]) -> None:
    """A tiled GeoTIFF of one (y, x) DataArray, written in bands of ROWS rows (uncompressed: compressing this
    staging copy as well cost a third of the export's CPU time)."""
    height, width = da.sizes["y"], da.sizes["x"]
    profile = {"driver": "GTiff", "dtype": "float32", "count": 1, "height": height, "width": width, "crs": crs,
               "transform": transform, "nodata": FLOAT_NODATA, "tiled": True, "blockxsize": 256, "blockysize": 256,
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
    profile = cog_profiles.get("deflate")
    # GDAL compresses the COG's blocks on every core
    profile.update({"blockxsize": 256, "blockysize": 256, "predictor": 3, "num_threads": "all_cpus"})
    try:
        crs = ds.rio.crs.to_string()
        transform = ds.rio.transform(recalc=True)
        with atomic_dir(folder) as tmp, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
            for variable, selection, prefix in layers:
                da = ds[variable].isel(selection)
                for step, when in enumerate(pd.DatetimeIndex(da["time"].values)):
                    date = when.strftime("%Y-%m-%d")
                    tags = {"DATE": when.isoformat(), "VARIABLE": prefix, "UNITS": str(da.attrs.get("units", "")),
                            "STEP": str(step + 1), **(extra_tags or {})}
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
