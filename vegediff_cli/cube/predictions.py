"""Forecast and ensemble files: read them, put them on the cube's axes, and check they match the cube.

Accepted forecasts (docs/cube-format.md):

- this project's ``forecast.nc``: ``ndvi_pred (time, y, x)``, optional ``ndvi_member (member, time, y, x)``;
- GreenEarthNet prediction files: ``ndvi_pred (time, lat, lon)``, read with ``y = lat``, ``x = lon``
  exactly as GreenEarthNet minicubes are (cube/greenearthnet.py), so they line up with the cube.

A forecast must sit on the cube's grid (same size, pixel centres within 1 % of a pixel, same CRS
when it has one) and its dates must be frame dates of the cube. Anything else is a
GeoreferenceError that names the mismatch: vegediff does not reproject forecasts silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import CorruptInputError, GeoreferenceError, MissingVariableError
from .readers import open_netcdf
from .schema import with_crs

PRED, MEMBER = "ndvi_pred", "ndvi_member"
ENSEMBLE_PROBABILITIES = {"prob_ndvi_below": "threshold", "prob_ndvi_drop": "drop"}
GRID_TOLERANCE = 0.01  # of a pixel: coordinates written by different tools differ in the last digits
REGRID_FIX = "forecast the same cube, or resample the forecast onto the cube's grid (e.g. gdalwarp -te/-ts) first"


def _to_yx(ds: xr.Dataset) -> xr.Dataset:
    """lat/lon -> y/x; y descending (north-up) and x ascending, like every cube."""
    rename = {name: new for name, new in (("lat", "y"), ("lon", "x")) if name in ds.dims and new not in ds.dims}
    ds = ds.rename(rename) if rename else ds
    for dim, descending in (("y", True), ("x", False)):
        if dim in ds.dims and ds.sizes[dim] > 1:
            values = ds[dim].values
            order = np.argsort(-values if descending else values, kind="stable")
            if not np.array_equal(order, np.arange(values.size)):
                ds = ds.isel({dim: order})
    return ds


def normalise_forecast(ds: xr.Dataset, *, source: str = "forecast") -> xr.Dataset:
    """A forecast dataset with ``ndvi_pred (time, y, x)`` and, if present, ``ndvi_member (member, time, y, x)``."""
    if PRED not in ds:
        hint = " (it looks like a cube: pass it as `input`)" if "s2_B04" in ds else ""
        raise MissingVariableError(
            f"{source} has no {PRED} variable{hint}",
            fix="pass a forecast.nc from `vegediff forecast` or a GreenEarthNet prediction file",
        )
    ds = _to_yx(ds)
    ds = with_crs(ds)
    for name, dims in ((PRED, ("time", "y", "x")), (MEMBER, ("member", "time", "y", "x"))):
        if name not in ds:
            continue
        if set(ds[name].dims) != set(dims):
            raise CorruptInputError(f"{source}: {name} has dims {ds[name].dims}, expected {dims}",
                                    fix="see docs/cube-format.md for the forecast format")
        ds[name] = ds[name].transpose(*dims)
    times = pd.DatetimeIndex(ds["time"].values)
    if times.has_duplicates or not times.is_monotonic_increasing:
        raise GeoreferenceError(f"{source} has unsorted or repeated forecast dates",
                                fix="write one forecast per date, in date order")
    if MEMBER in ds:
        _check_members(ds, source=source)
    return ds


def _check_members(ds: xr.Dataset, *, source: str) -> None:
    members = ds.sizes["member"]
    declared = ds.attrs.get("members")
    if declared is not None and int(declared) != members:
        raise CorruptInputError(f"{source} declares members={declared} but {MEMBER} holds {members}",
                                fix="re-run `vegediff forecast`; the file was altered or cut short")
    if members < 2:
        raise CorruptInputError(f"{source}: {MEMBER} holds {members} member; probabilistic scores need at least 2",
                                fix="drop ndvi_member or forecast with `members` 2 or more")


def read_forecast(path: str | os.PathLike) -> xr.Dataset:
    """Open a forecast file lazily and normalise its axes (see module docstring)."""
    path = Path(path)
    return normalise_forecast(open_netcdf(path), source=str(path))


def check_alignment(forecast: xr.Dataset, target: xr.Dataset, *, source: str = "forecast") -> None:
    """Raise GeoreferenceError unless `forecast` lies on `target`'s grid and frame dates."""
    for dim in ("y", "x"):
        if forecast.sizes.get(dim) != target.sizes[dim]:
            raise GeoreferenceError(
                f"{source} is {forecast.sizes.get('y')} x {forecast.sizes.get('x')} pixels but the cube is "
                f"{target.sizes['y']} x {target.sizes['x']}", fix=REGRID_FIX)
    crs_f, crs_t = forecast.rio.crs, target.rio.crs
    if crs_f is not None and crs_t is not None and crs_f != crs_t:
        raise GeoreferenceError(f"{source} is in {crs_f.to_string()} but the cube is in {crs_t.to_string()}",
                                fix=REGRID_FIX)
    for dim in ("y", "x"):
        ours, theirs = target[dim].values.astype("float64"), forecast[dim].values.astype("float64")
        step = np.abs(np.diff(ours)).min() if ours.size > 1 else 1.0
        offset = np.abs(ours - theirs)
        if not np.all(offset <= GRID_TOLERANCE * step):
            worst = int(np.argmax(offset))
            raise GeoreferenceError(
                f"{source} is on another grid: its {dim} coordinate {theirs[worst]:.6f} differs from the cube's "
                f"{ours[worst]:.6f} by {offset[worst] / step:.2f} pixels", fix=REGRID_FIX)
    frames = pd.DatetimeIndex(target["time"].values).normalize()
    dates = pd.DatetimeIndex(forecast["time"].values).normalize()
    missing = dates[~dates.isin(frames)]
    if len(missing):
        later = bool((missing > frames[-1]).all())
        raise GeoreferenceError(
            f"{source} forecasts {missing[0]:%Y-%m-%d}, which is not a frame date of the cube "
            f"({len(missing)} of {len(dates)} dates; the cube runs {frames[0]:%Y-%m-%d} to {frames[-1]:%Y-%m-%d})",
            fix="evaluate against a cube that covers the forecast period (fetch and prepare the later dates), or "
                "hindcast with `vegediff forecast --start` inside the cube" if later
            else "score a forecast against the cube it was made for (same frame dates)")


def frame_indices(forecast: xr.Dataset, target: xr.Dataset) -> np.ndarray:
    """Index in the cube's time axis of each forecast date (after check_alignment)."""
    frames = pd.DatetimeIndex(target["time"].values).normalize()
    return frames.get_indexer(pd.DatetimeIndex(forecast["time"].values).normalize())


def read_ensemble(path: str | os.PathLike) -> xr.Dataset:
    """Open an ensemble.nc (probabilities of NDVI events) lazily on the cube's axes."""
    path = Path(path)
    ds = _to_yx(open_netcdf(path))
    present = [name for name in ENSEMBLE_PROBABILITIES if name in ds]
    if not present:
        raise MissingVariableError(f"{path} has neither {' nor '.join(ENSEMBLE_PROBABILITIES)}",
                                   fix="pass the ensemble.nc written by `vegediff ensemble`")
    for name in present:
        dims = (ENSEMBLE_PROBABILITIES[name], "time", "y", "x")
        if set(ds[name].dims) != set(dims):
            raise CorruptInputError(f"{path}: {name} has dims {ds[name].dims}, expected {dims}",
                                    fix="see docs/cube-format.md for the ensemble format")
        ds[name] = ds[name].transpose(*dims)
    return ds
