"""Reference forecasts made from the target cube itself, in the forecast format, so they score like any model.

- ``persistence``: the last clear NDVI of the context window, held for every forecast date
  (GreenEarthNet's persistence baseline);
- ``context-mean``: the mean clear NDVI of the context window;
- ``climatology``: for each forecast date, the mean clear NDVI of the frames of earlier years
  within +-15 days of its day of year (needs a cube with history before the context window).

Persistence and context mean see only the context frames; climatology sees only frames before
the context window. Pixels with no clear value take the value of the nearest pixel that has one
(2-D nearest neighbour; GreenEarthNet fills along lat then lon), and 0.5 when the whole context
is cloudy, which is also the official scorer's value for a missing prediction.

Each function returns ``ndvi_pred (time, y, x)`` on the cube's grid and CRS, with attribute
``baseline``; persistence and context mean broadcast one (y, x) field over time (no copies).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

from ...config import CONTEXT_FRAMES
from ...errors import NoValidDataError, UsageError
from ...metrics.deterministic import MISSING_PREDICTION
from ..observed import context_indices, observed_ndvi

BASELINES: tuple[str, ...] = ("persistence", "context-mean", "climatology")
CLIMATOLOGY_WINDOW_DAYS = 15  # half-width of the day-of-year window (GreenEarthNet smooths over 30 days)


def _first_frame(cube: xr.Dataset, forecast_times: pd.DatetimeIndex) -> int:
    frames = pd.DatetimeIndex(cube["time"].values).normalize()
    first = frames.get_indexer([pd.DatetimeIndex(forecast_times).normalize()[0]])[0]
    if first < 0:
        raise UsageError(f"{forecast_times[0]:%Y-%m-%d} is not a frame date of the cube",
                         fix="forecast dates must be frame dates of the target cube")
    return int(first)


def fill_gaps(field: np.ndarray) -> np.ndarray:
    """Replace NaN by the value of the nearest finite pixel; all-NaN becomes 0.5."""
    missing = ~np.isfinite(field)
    if not missing.any():
        return field
    if missing.all():
        return np.full_like(field, MISSING_PREDICTION)
    nearest = ndimage.distance_transform_edt(missing, return_distances=False, return_indices=True)
    return field[tuple(nearest)]


def _as_forecast(cube: xr.Dataset, forecast_times: pd.DatetimeIndex, values: np.ndarray, *, name: str,
                 attrs: dict) -> xr.Dataset:
    """ndvi_pred on the cube's grid; `values` is (H, W) (broadcast over time) or (T, H, W)."""
    times = pd.DatetimeIndex(forecast_times)
    if values.ndim == 2:
        values = np.broadcast_to(values.astype("float32"), (len(times), *values.shape))
    ds = xr.Dataset(
        {"ndvi_pred": (("time", "y", "x"), values, {"long_name": f"NDVI forecast of the {name} baseline", "units": "1"})},
        coords={"time": times, "y": cube["y"].values, "x": cube["x"].values},
        attrs={"baseline": name, **attrs},
    )
    # in place: a copy would materialise the broadcast field, T times its size (GBs on a tile)
    return ds.rio.write_crs(cube.rio.crs, inplace=True) if cube.rio.crs is not None else ds


def _context(cube: xr.Dataset, forecast_times: pd.DatetimeIndex, context_frames: int) -> tuple[np.ndarray, dict]:
    frames = context_indices(_first_frame(cube, forecast_times), context_frames=context_frames)
    if frames.size == 0:
        raise NoValidDataError(
            f"the cube has no frame before the first forecast date {forecast_times[0]:%Y-%m-%d}",
            fix="baselines need context frames: use a cube that starts before the forecast, or `baseline` none")
    dates = pd.DatetimeIndex(cube["time"].values[frames])
    return frames, {"context_dates": " ".join(f"{d:%Y-%m-%d}" for d in dates)}


def persistence(cube: xr.Dataset, forecast_times: pd.DatetimeIndex, *,
                context_frames: int = CONTEXT_FRAMES) -> xr.Dataset:
    """The last clear context NDVI of each pixel, for every forecast date."""
    frames, attrs = _context(cube, forecast_times, context_frames)
    last = np.full((cube.sizes["y"], cube.sizes["x"]), np.nan)
    for frame in frames:  # one frame at a time: memory stays one (H, W) field on tile-sized cubes
        values = observed_ndvi(cube, [frame])[0]
        last = np.where(np.isfinite(values), values, last)
    return _as_forecast(cube, forecast_times, fill_gaps(last), name="persistence", attrs=attrs)


def _clear_mean(cube: xr.Dataset, frames) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean of the clear NDVI of `frames` (NaN where none) and the clear count, (y, x) each."""
    total = np.zeros((cube.sizes["y"], cube.sizes["x"]))
    count = np.zeros_like(total)
    for frame in frames:  # one frame at a time: a tile-sized cube never sits in memory whole
        values = observed_ndvi(cube, [frame])[0]
        total += np.nan_to_num(values)
        count += np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count, count


def context_mean(cube: xr.Dataset, forecast_times: pd.DatetimeIndex, *,
                 context_frames: int = CONTEXT_FRAMES) -> xr.Dataset:
    """The mean clear context NDVI of each pixel, for every forecast date."""
    frames, attrs = _context(cube, forecast_times, context_frames)
    mean, _ = _clear_mean(cube, frames)
    return _as_forecast(cube, forecast_times, fill_gaps(mean), name="context-mean", attrs=attrs)


def climatology(cube: xr.Dataset, forecast_times: pd.DatetimeIndex, *, context_frames: int = CONTEXT_FRAMES,
                window_days: int = CLIMATOLOGY_WINDOW_DAYS) -> xr.Dataset:
    """Mean clear NDVI of earlier years within +-window_days of each forecast date's day of year."""
    frames, attrs = _context(cube, forecast_times, context_frames)
    dates = pd.DatetimeIndex(cube["time"].values)
    history = np.arange(frames[0])  # strictly before the context window
    fallback = context_mean(cube, forecast_times, context_frames=context_frames)["ndvi_pred"].values[0]
    out = np.empty((len(forecast_times), cube.sizes["y"], cube.sizes["x"]), dtype="float32")
    years: set[int] = set()
    filled = 0
    for step, when in enumerate(pd.DatetimeIndex(forecast_times)):
        gap = np.abs(dates[history].day_of_year - when.day_of_year)
        matching = history[np.minimum(gap, 365 - gap) <= window_days]
        if matching.size == 0:
            first = dates[frames[0]]
            raise UsageError(
                f"climatology needs earlier years: the cube holds no frame within {window_days} days of the day "
                f"of year of {when:%Y-%m-%d} before {first:%Y-%m-%d}",
                fix="use a cube with at least one earlier year (fetch a longer period), or `baseline` persistence")
        years.update(int(y) for y in dates[matching].year)
        mean, count = _clear_mean(cube, matching)
        filled += int((count == 0).sum())
        out[step] = np.where(count > 0, mean, fallback)
    attrs.update({"climatology_years": " ".join(map(str, sorted(years))), "window_days": window_days,
                  "pixels_from_context_mean": filled})
    return _as_forecast(cube, forecast_times, out, name="climatology", attrs=attrs)


def baseline_forecast(name: str, cube: xr.Dataset, forecast_times: pd.DatetimeIndex, *,
                      context_frames: int = CONTEXT_FRAMES) -> xr.Dataset:
    """One of BASELINES by name."""
    makers = {"persistence": persistence, "context-mean": context_mean, "climatology": climatology}
    if name not in makers:
        raise UsageError(f"unknown baseline '{name}'", fix=f"choose one of {', '.join(BASELINES)} or none")
    return makers[name](cube, pd.DatetimeIndex(forecast_times), context_frames=context_frames)
