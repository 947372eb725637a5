"""Figures of one scored cube: pick what to draw from the datasets and hand arrays to plots.py."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ... import plots
from ...config import LANDCOVER, NIR, RED, VALID
from ...cube.masks import ndvi
from ...cube.predictions import MEMBER, PRED
from ...metrics.aggregate import CLASS_NAMES
from ..observed import observed_ndvi
from .windows import PixelMaps

MAP_PIXELS = 256  # maps are drawn at most this many pixels across (strided), whatever the cube size
SAMPLE_PIXELS = 4


def safe_name(text: str) -> str:
    """A file-name-safe form of a cube or forecast name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unnamed"


def sample_pixels(maps: PixelMaps, landcover: np.ndarray | None, *, count: int = SAMPLE_PIXELS) -> list[tuple[int, int]]:
    """Scored pixels to plot: the median-RMSE pixel of each vegetation class, then RMSE quartiles."""
    scored = maps.scored & np.isfinite(maps.rmse)
    picks: list[tuple[int, int]] = []

    def median_pixel(mask: np.ndarray, quantile: float = 0.5) -> tuple[int, int] | None:
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            return None
        values = maps.rmse[rows, cols]
        k = int(np.argsort(values, kind="stable")[min(rows.size - 1, int(quantile * rows.size))])
        return int(rows[k]), int(cols[k])

    if landcover is not None:
        for lc in CLASS_NAMES:
            pick = median_pixel(scored & (landcover == lc))
            if pick is not None:
                picks.append(pick)
    for quantile in (0.25, 0.75, 0.5, 0.1, 0.9):
        if len(picks) >= count:
            break
        pick = median_pixel(scored, quantile)
        if pick is not None and pick not in picks:
            picks.append(pick)
    return picks[:count]


def _pixel_series(target: xr.Dataset, frames: np.ndarray, row: int, col: int) -> np.ndarray:
    window = {"time": frames, "y": row, "x": col}
    values = ndvi(target[RED].isel(window).values, target[NIR].isel(window).values)
    return np.where(target[VALID].isel(window).values.astype(bool), values, np.nan)


def cube_figures(
    target: xr.Dataset,
    forecasts: dict[str, xr.Dataset],
    maps: dict[str, PixelMaps],
    folder: Path,
    *,
    cube: str,
) -> list[Path]:
    """Per cube: NDVI maps per forecast, one RMSE map panel per forecast (baselines too), sample time series."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    crs = target.rio.crs
    stride = max(1, math.ceil(max(target.sizes["y"], target.sizes["x"]) / MAP_PIXELS))
    grid = plots.MapGrid(target["x"].values[::stride], target["y"].values[::stride],
                         geographic=bool(crs is not None and crs.is_geographic), crs=crs.to_string() if crs else None)
    landcover = target[LANDCOVER].values if LANDCOVER in target else None
    first = next(iter(forecasts))
    base = maps[first]
    dates = pd.DatetimeIndex(target["time"].values)
    for name, forecast in forecasts.items():
        if name not in maps or forecast.attrs.get("baseline"):
            continue
        frames = maps[name].frames
        observed = observed_ndvi(target, frames, slice(None, None, stride))[:, :, ::stride]
        predicted = forecast[PRED].isel(y=slice(None, None, stride), x=slice(None, None, stride)).values
        written.append(plots.ndvi_maps(
            observed, predicted, dates[frames], folder / f"{safe_name(cube)}_{safe_name(name)}_ndvi_maps.png",
            grid=grid, title=f"{cube} - {name}"))
    written.append(plots.rmse_maps(
        {name: m.rmse[::stride, ::stride] for name, m in maps.items()}, base.scored[::stride, ::stride],
        folder / f"{safe_name(cube)}_rmse_maps.png", grid=grid, title=cube))

    pixels = sample_pixels(base, landcover)
    if pixels:
        all_frames = np.concatenate([base.context, base.frames])
        observed = np.stack([_pixel_series(target, all_frames, r, c) for r, c in pixels])
        lines = {name: np.stack([np.asarray(ds[PRED].isel(y=r, x=c).values, dtype="float64") for r, c in pixels])
                 for name, ds in forecasts.items() if ds.sizes["time"] == base.frames.size}
        band = None
        if MEMBER in forecasts[first]:
            members = np.stack([forecasts[first][MEMBER].isel(y=r, x=c).values for r, c in pixels])  # (P, M, T)
            band = np.moveaxis(np.nanquantile(members, [0.1, 0.9], axis=1), 0, -1)  # (P, T, 2)
        labels = []
        for r, c in pixels:
            lc = None if landcover is None else landcover[r, c]
            cover = f", land cover {int(lc)} ({CLASS_NAMES.get(int(lc), 'other')})" if lc is not None and np.isfinite(lc) else ""
            where = f"y {target['y'].values[r]:.6g}, x {target['x'].values[c]:.6g}"
            labels.append(f"pixel row {r}, col {c} ({where}){cover}: {first} RMSE {base.rmse[r, c]:.3f}")
        written.append(plots.time_series(
            dates[all_frames], observed, dates[base.frames], lines,
            folder / f"{safe_name(cube)}_{safe_name(first)}_series.png", labels=labels,
            first_forecast=dates[base.frames[0]], band=band, band_label=f"{first}: members 10-90 %",
            title=f"{cube}: NDVI at sample pixels (median-RMSE pixel per land cover)"))
    return written
