"""Maps of one scored cube for QGIS: what was observed, what each forecast said, where it erred.

Written into the evaluation folder (inside its atomic temporary folder, run.py)::

    qgis/<cube>/observed_ndvi_<date>.tif    clear-sky NDVI of the context and target frames (nodata elsewhere)
    qgis/<cube>/forecast_<name>_<date>.tif  NDVI of each scored forecast at its dates
    qgis/<cube>/rmse_<name>.tif             per-pixel RMSE of each forecast and baseline over the clear
                                            target frames (every pixel with one; the scores use the
                                            quality-rule pixels only)
    qgis/<cube>/evaluation.qgs, styles/     the QGIS project and a QML style per product (qgis/folder.py)

Arrays are written one 2-D map at a time (cube/cog.write_cog), the size of the cube's grid.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ...cube.cog import write_cog
from ...cube.predictions import PRED
from ...qgis.folder import write_folder_project
from ...qgis.products import FORECAST_PREFIX, RMSE_PREFIX
from ..observed import write_observed_cogs
from .figures import safe_name
from .windows import PixelMaps

log = logging.getLogger("vegediff.evaluate")


def write_cube_maps(target: xr.Dataset, forecasts: dict[str, xr.Dataset], maps: dict[str, PixelMaps], folder: Path,
                    *, cube: str) -> Path | None:
    """COGs and the QGIS project of one cube in `folder`; None (with a warning) when the cube has no CRS."""
    crs = target.rio.crs
    if crs is None:
        log.warning("%s has no CRS: no QGIS maps for it", cube)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    transform = target.rio.transform(recalc=True)
    dates = pd.DatetimeIndex(target["time"].values)
    first = maps[next(iter(forecasts))]
    write_observed_cogs(target, sorted(set(first.context.tolist()) | set(first.frames.tolist())), folder)
    for name, forecast in forecasts.items():
        if name not in maps:
            continue
        for step, frame in enumerate(maps[name].frames):
            date = f"{dates[frame]:%Y-%m-%d}"
            values = np.asarray(forecast[PRED].isel(time=step).values, dtype="float32")
            write_cog(values, folder / f"{FORECAST_PREFIX}{safe_name(name)}_{date}.tif", crs=crs.to_string(),
                      transform=transform, description=f"NDVI forecast {name} {date}",
                      tags={"DATE": dates[frame].isoformat(), "VARIABLE": PRED, "FORECAST": name, "UNITS": "1"})
    for name, pixel_maps in maps.items():
        write_cog(pixel_maps.rmse.astype("float32"), folder / f"{RMSE_PREFIX}{safe_name(name)}.tif",
                  crs=crs.to_string(), transform=transform, description=f"RMSE of NDVI per pixel, {name}",
                  tags={"VARIABLE": "rmse", "FORECAST": name, "UNITS": "1",
                        "FIRST_DATE": f"{dates[pixel_maps.frames[0]]:%Y-%m-%d}",
                        "LAST_DATE": f"{dates[pixel_maps.frames[-1]]:%Y-%m-%d}"})
    return write_folder_project(folder, name="evaluation", title=f"vegediff evaluation {cube}")
