"""Meteorology on the cube: which source, which days and area, and where the values go.

Placement (docs/prepare.md, "Meteorology placement"):

- ``series``: one ``eobs_<var>`` ``(time, stat)`` series for the whole cube, taken at the cube's
  centre (bilinear between grid cells; point sources use their nearest location). Right for
  chip-sized cubes, which lie inside one ERA5 / E-OBS cell.
- ``grid``: ``eobs_<var>`` ``(time, stat, meteo_y, meteo_x)`` on a coarse grid of nodes in the
  cube's CRS, spaced like the source (0.25 deg ERA5 ~ 28 km, 0.1 deg E-OBS ~ 11 km) and
  centred on the cube, with the outermost nodes beyond the cube's edges; node values are
  bilinear interpolations of the source. ``forecast`` interpolates bilinearly to chip centres.
- ``auto`` (default): ``grid`` when the cube spans more than one source cell, else ``series``.

Both aggregate the daily values over the 5 days ending on each frame date (t-4..t) into mean,
min and max: 8 variables x 3 statistics = the 24 conditioning channels per frame.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pandas as pd
import xarray as xr
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from ...config import METEO_LONG_NAMES, METEO_STATS, METEO_UNITS, METEO_VARS, STEP_DAYS, meteo_name
from ...cube.schema import TargetGrid
from ...errors import UsageError
from ...sources import daily_meteo, era5
from ...sources.daily_meteo import MeteoRequest

log = logging.getLogger("vegediff.prepare")
LAYOUTS = ("auto", "series", "grid")
METRES_PER_DEGREE = 111_320.0


def request_for(frames: pd.DatetimeIndex, target: TargetGrid, *, max_point_distance_km: float) -> MeteoRequest:
    """The days (frame t needs t-4..t) and lon/lat area the cube needs."""
    days = pd.DatetimeIndex(sorted({f - pd.Timedelta(days=k) for f in frames.normalize() for k in range(STEP_DAYS)}))
    return MeteoRequest(days=days, bbox=tuple(target.lonlat_bounds()), max_point_distance_km=max_point_distance_km)


def load_daily(
    request: MeteoRequest, *, era5_files=(), eobs_files=(), meteo_from=None
) -> xr.Dataset | None:
    """Daily E-OBS-unit meteorology from the one source given (None when none is)."""
    given = [name for name, value in (("`era5`", era5_files), ("`eobs`", eobs_files), ("`meteo_from`", meteo_from)) if value]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} were both given", fix="pass one meteorology source per run")
    if era5_files:
        return era5.read_era5(list(era5_files), request)
    if eobs_files:
        return daily_meteo.read_eobs(list(eobs_files), request)
    if meteo_from:
        return daily_meteo.read_minicube_meteo(meteo_from, request)
    return None


def load_open_meteo(request: MeteoRequest, target: TargetGrid, *, layout: str, client) -> xr.Dataset:
    """ERA5 daily series from Open-Meteo on the ERA5 cells that the chosen layout's positions need."""
    from ...sources import openmeteo  # requests-only, but keep prepare's import light

    chosen = layout_for(layout, target, openmeteo.ERA5_SPACING)
    lon, lat, _, _ = sample_positions(target, chosen, openmeteo.ERA5_SPACING)
    return openmeteo.read_archive(request, lon=lon, lat=lat, client=client)


def aggregate(values: np.ndarray, days: pd.DatetimeIndex, frames: pd.DatetimeIndex) -> np.ndarray:
    """(D, ...) daily values -> (T, 3, ...) mean/min/max over the days t-4..t of each frame."""
    out = np.full((len(frames), len(METEO_STATS), *values.shape[1:]), np.nan, dtype="float32")
    day_index = days.normalize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
        for t, frame in enumerate(frames.normalize()):
            window = values[(day_index > frame - pd.Timedelta(days=STEP_DAYS)) & (day_index <= frame)]
            if len(window):
                out[t] = np.stack([np.nanmean(window, 0), np.nanmin(window, 0), np.nanmax(window, 0)])
    return out


def _nearest_valid(daily: xr.DataArray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """(D, N) series of the nearest grid cell (or point) with data to each of N lon/lat positions."""
    if daily_meteo.is_gridded(daily):
        stacked = daily.stack(cell=("latitude", "longitude")).transpose("time", "cell")
        cell_lat, cell_lon = stacked["latitude"].values, stacked["longitude"].values
    else:
        stacked = daily.transpose("time", "location")
        cell_lat, cell_lon = stacked["latitude"].values, stacked["longitude"].values
    values = np.asarray(stacked.values, dtype="float64")
    has_data = np.isfinite(values).any(axis=0)
    values, cell_lat, cell_lon = values[:, has_data], cell_lat[has_data], cell_lon[has_data]
    distance = daily_meteo.haversine_km(cell_lon[None, :], cell_lat[None, :], np.asarray(lon)[:, None], np.asarray(lat)[:, None])
    return values[:, np.argmin(distance, axis=1)]


def _sample(daily: xr.DataArray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """(D, N) daily values at N lon/lat positions: bilinear on grids, nearest cell with data as fallback."""
    nearest = _nearest_valid(daily, lon, lat)
    if not daily_meteo.is_gridded(daily) or daily.sizes["latitude"] < 2 or daily.sizes["longitude"] < 2:
        return nearest
    points = daily.interp(latitude=xr.DataArray(lat, dims="node"), longitude=xr.DataArray(lon, dims="node"))
    values = np.asarray(points.transpose("time", "node").values, dtype="float64")
    return np.where(np.isfinite(values), values, nearest)  # coasts, edges: bilinear touched a cell without data


def choose_layout(layout: str, daily: xr.Dataset, target: TargetGrid) -> str:
    if layout not in LAYOUTS:
        raise UsageError(f"`meteo_layout` '{layout}' is not one of {', '.join(LAYOUTS)}")
    gridded = daily_meteo.is_gridded(daily)
    if layout == "grid" and not gridded:
        raise UsageError(f"{daily.attrs.get('meteo_source', 'the meteorology')} is a point series and cannot be gridded",
                         fix="use `meteo_layout` series (or auto) with point sources such as `meteo_from`")
    return layout_for(layout, target, daily_meteo.grid_spacing(daily)) if gridded else "series"


def layout_for(layout: str, target: TargetGrid, spacing_deg: float) -> str:
    """`auto` -> grid when the cube spans more than one cell of a gridded source, else series."""
    if layout not in LAYOUTS:
        raise UsageError(f"`meteo_layout` '{layout}' is not one of {', '.join(LAYOUTS)}")
    if layout != "auto":
        return layout
    west, south, east, north = target.lonlat_bounds()
    return "grid" if max(east - west, north - south) > spacing_deg else "series"


def sample_positions(target: TargetGrid, layout: str, spacing_deg: float):
    """Where meteorology is sampled: lon, lat (N,) and, for the grid layout, node y, x in the cube's CRS."""
    if layout == "series":
        west, south, east, north = target.lonlat_bounds()
        return np.array([(west + east) / 2.0]), np.array([(south + north) / 2.0]), None, None
    node_y, node_x = _node_axes(target, spacing_deg)
    grid_x, grid_y = np.meshgrid(node_x, node_y)
    lon_list, lat_list = warp_transform(CRS.from_user_input(target.grid.crs), CRS.from_epsg(4326),
                                        grid_x.ravel().tolist(), grid_y.ravel().tolist())
    return np.asarray(lon_list), np.asarray(lat_list), node_y, node_x


def _node_axes(target: TargetGrid, spacing_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Node coordinates (y descending, x ascending) in the cube's CRS, centred on the cube."""
    geographic = CRS.from_user_input(target.grid.crs).is_geographic
    spacing = spacing_deg if geographic else max(1000.0, round(spacing_deg * METRES_PER_DEGREE / 1000.0) * 1000.0)
    left, bottom, right, top = target.grid.bounds
    nx = max(2, math.ceil((right - left) / spacing) + 1)
    ny = max(2, math.ceil((top - bottom) / spacing) + 1)
    cx, cy = (left + right) / 2.0, (bottom + top) / 2.0
    x = cx + (np.arange(nx) - (nx - 1) / 2.0) * spacing
    y = cy - (np.arange(ny) - (ny - 1) / 2.0) * spacing
    return y, x


def place(cube: xr.Dataset, daily: xr.Dataset, target: TargetGrid, *, layout: str = "auto") -> xr.Dataset:
    """Add the 8 ``eobs_*`` variables, aggregated to the cube's frames, in the chosen layout."""
    chosen = choose_layout(layout, daily, target)
    frames = pd.DatetimeIndex(cube["time"].values)
    days = pd.DatetimeIndex(daily["time"].values)
    cube = cube.drop_vars([meteo_name(v) for v in METEO_VARS if meteo_name(v) in cube] +
                          [c for c in ("meteo_y", "meteo_x") if c in cube.coords])
    spacing = daily_meteo.grid_spacing(daily) if daily_meteo.is_gridded(daily) else 0.25  # unused for series
    lon, lat, node_y, node_x = sample_positions(target, chosen, spacing)
    if chosen == "series":
        dims: tuple[str, ...] = ("time", "stat")
        shape: tuple[int, ...] = ()
        cube.attrs.update({"meteo_longitude": float(lon[0]), "meteo_latitude": float(lat[0])})
    else:
        dims, shape = ("time", "stat", "meteo_y", "meteo_x"), (len(node_y), len(node_x))
        units = "degrees" if CRS.from_user_input(target.grid.crs).is_geographic else "m"
        cube = cube.assign_coords(
            meteo_y=("meteo_y", node_y, {"long_name": "y of meteorology grid nodes (cube CRS)", "units": units}),
            meteo_x=("meteo_x", node_x, {"long_name": "x of meteorology grid nodes (cube CRS)", "units": units}),
        )
    for var in METEO_VARS:
        sampled = _sample(daily[var], lon, lat)  # (D, N)
        values = aggregate(sampled, days, frames).reshape((len(frames), len(METEO_STATS), *shape))
        cube[meteo_name(var)] = (dims, values, {
            "long_name": METEO_LONG_NAMES[var], "units": METEO_UNITS[var],
            "cell_methods": "time: mean/min/max over the 5 days t-4..t",
        })
        empty = np.isnan(values).all(axis=tuple(range(1, values.ndim)))
        if empty.any():
            log.warning("eobs_%s has no data for %d frame(s) (first %s)", var, int(empty.sum()),
                        f"{frames[np.argmax(empty)]:%Y-%m-%d}")
    if "stat" not in cube.coords:
        cube = cube.assign_coords(stat=list(METEO_STATS))
    cube.attrs.update({
        "meteo_source": daily.attrs.get("meteo_source", "unknown"),
        "meteo_layout": chosen,
        "meteo_unit_notes": daily.attrs.get("meteo_unit_notes", ""),
    })
    if daily.attrs.get("meteo_attribution"):  # Open-Meteo's CC BY 4.0 terms travel with the cube
        cube.attrs["meteo_attribution"] = daily.attrs["meteo_attribution"]
    return cube
