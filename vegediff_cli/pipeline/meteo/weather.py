"""Weather for the forecast period from Open-Meteo: known weather, then a scenario ensemble.

``--weather`` modes (docs/forecast.md, "Weather for the forecast period"):

- ``auto`` (the CLI default): frames the cube covers use the cube; other frames whose five days
  all lie on or before today + 15 days use *known* weather (ERA5 from the archive API up to six
  days ago, the forecast API after that); later frames use *scenarios*.
- ``open-meteo``: the same, but the cube's meteorology is not used for future frames.
- ``scenarios``: every future frame from scenarios (hindcast experiments).
- ``none``: no network (the cube, else its climatology, else the unconditional model).

Scenarios: the same calendar window (the frames' days, shifted by whole years) of past years'
ERA5 at the cube's centre, one year per member, most recent years first; so an ensemble spreads
over plausible weather as well as over diffusion noise. A one-member forecast takes the mean
of the last ``CLIMATOLOGY_YEARS`` years instead of one arbitrary year.

Values are one series at the cube's centre: bilinear between the four ERA5 cells around it,
as prepare does for chip-sized cubes.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...config import METEO_VARS, STEP_DAYS
from ...errors import UsageError
from ...sources import openmeteo
from .frames import aggregate as frame_statistics

log = logging.getLogger("vegediff.forecast")
WEATHER_MODES = ("auto", "open-meteo", "scenarios", "none")
ARCHIVE_LAG_DAYS = 6  # ERA5 reaches Open-Meteo's archive about 5 days late; later days come from the forecast API
CLIMATOLOGY_YEARS = 10  # a one-member forecast takes the mean of this many past years
MAX_SCENARIO_YEARS = 40
TODAY_ENV = "VEGEDIFF_TODAY"  # fixes "today" (tests, reproducing a past run); default: the UTC date


def today() -> pd.Timestamp:
    value = os.environ.get(TODAY_ENV)
    return pd.Timestamp(value).normalize() if value else pd.Timestamp.now(tz="UTC").tz_localize(None).normalize()


@dataclass(frozen=True)
class Series:
    """Per-frame meteorology (N, 8, 3) at some frame dates, in E-OBS units, with its label."""

    label: str  # what is recorded per step: "open-meteo forecast", "era5 2019", ...
    dates: pd.DatetimeIndex  # (N,) frame dates
    values: np.ndarray  # (N, 8, 3) float32


def frame_days(frames: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Every day some frame aggregates (frame t: days t-4..t)."""
    return pd.DatetimeIndex(sorted({f - pd.Timedelta(days=k) for f in frames.normalize() for k in range(STEP_DAYS)}))


def aggregate(daily: np.ndarray, days: pd.DatetimeIndex, frames: pd.DatetimeIndex) -> np.ndarray:
    """(D, 8) daily values -> (N, 8, 3) mean/min/max over each frame's 5 days (NaN-aware): frames.aggregate's
    statistics, with the statistic last."""
    return np.ascontiguousarray(np.moveaxis(frame_statistics(daily, days, frames), 1, -1))


def _site_daily(client: openmeteo.OpenMeteo, lon: float, lat: float, days: pd.DatetimeIndex, *,
                forecast: bool = False) -> np.ndarray:
    """(D, 8) daily E-OBS values at a point: bilinear between the four ERA5 cells around it."""
    cell_lat, cell_lon = openmeteo.lattice([lon], [lat])
    grid_lat, grid_lon = np.meshgrid(cell_lat, cell_lon, indexing="ij")
    answers = openmeteo.fetch_daily(client, grid_lat.ravel().tolist(), grid_lon.ravel().tolist(), days[0], days[-1],
                                    forecast=forecast)
    source = "Open-Meteo forecast API" if forecast else "Open-Meteo ERA5 archive"
    daily = openmeteo.to_daily(answers, days, source=source, notes=[], allow_empty=True)
    if forecast:  # the forecast model's grid is not ERA5's: take the cell nearest the site
        point = daily.sel(latitude=lat, longitude=lon, method="nearest")
    else:
        point = daily.interp(latitude=lat, longitude=lon)
    return np.stack([np.asarray(point[v].values, dtype="float64") for v in METEO_VARS], axis=1)


def known_weather(client: openmeteo.OpenMeteo, lon: float, lat: float, frames: pd.DatetimeIndex, *,
                  now: pd.Timestamp) -> Series | None:
    """Frames whose five days all lie on or before now + 15 days: ERA5 (archive) and the forecast API."""
    horizon_end = now + pd.Timedelta(days=openmeteo.FORECAST_DAYS - 1)
    frames = pd.DatetimeIndex([f for f in frames if f <= horizon_end])
    if not len(frames):
        return None
    days = frame_days(frames)
    archive_end = now - pd.Timedelta(days=ARCHIVE_LAG_DAYS)
    parts = []
    past, recent = days[days <= archive_end], days[days > archive_end]
    if len(past):
        parts.append(_site_daily(client, lon, lat, past))
    if len(recent):
        parts.append(_site_daily(client, lon, lat, recent, forecast=True))
    label = "open-meteo forecast" if len(recent) else "era5 (open-meteo)"
    return Series(label, frames, aggregate(np.concatenate(parts), days, frames))


def scenario_years(frames: pd.DatetimeIndex, count: int, *, now: pd.Timestamp) -> list[int]:
    """The `count` most recent year offsets whose shifted window lies in the archive, newest first."""
    last_day = frames.max()
    first_offset = 1
    while last_day - pd.DateOffset(years=first_offset) > now - pd.Timedelta(days=ARCHIVE_LAG_DAYS):
        first_offset += 1
    offsets = [k for k in range(first_offset, first_offset + count) if (frames.min() - pd.DateOffset(years=k)).year >= 1940]
    return offsets


def scenarios(client: openmeteo.OpenMeteo, lon: float, lat: float, frames: pd.DatetimeIndex, *, members: int,
              now: pd.Timestamp, years: list[int] | None = None) -> list[Series]:
    """One Series per member (a different past year each), or one multi-year mean for a single member.

    `years` picks the years (the calendar window of the first frame moved to each), instead of
    the most recent ones.
    """
    count = min(members, MAX_SCENARIO_YEARS) if members > 1 else CLIMATOLOGY_YEARS
    offsets = [frames.min().year - y for y in years] if years else scenario_years(frames, count, now=now)
    if not offsets:
        raise UsageError(f"no past year of ERA5 covers the calendar window of {frames.min():%Y-%m-%d}..{frames.max():%Y-%m-%d}",
                         fix="pass `weather` FILE or `weather` none")
    days = frame_days(frames)
    by_year = []
    for k in offsets:
        shifted = pd.DatetimeIndex([d - pd.DateOffset(years=k) for d in days])
        unique = pd.DatetimeIndex(sorted(set(shifted)))
        daily = _site_daily(client, lon, lat, unique)
        rows = unique.get_indexer(shifted)  # Feb 29 of the forecast maps to Feb 28 of a common year
        by_year.append((frames.min().year - k, aggregate(daily[rows], days, frames)))
    if members == 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(np.stack([v for _, v in by_year]), axis=0).astype("float32")
        years = [y for y, _ in by_year]
        return [Series(f"era5 mean {min(years)}-{max(years)}", frames, mean)]
    if len(by_year) < members:
        log.warning("only %d past years of ERA5 for %d members: years repeat across members", len(by_year), members)
    return [Series(f"era5 {year}", frames, values) for year, values in by_year]


def check_mode(weather: object) -> str | None:
    """The mode named by --weather (auto, open-meteo, scenarios[:YEARS], none), or None when it is a file path."""
    text = str(weather).lower()
    if text.startswith("scenarios:"):
        return "scenarios"
    return text if text in WEATHER_MODES else None


def chosen_years(weather: object) -> list[int] | None:
    """The years of ``--weather scenarios:2017,2019`` (None: the most recent past years)."""
    text = str(weather).lower()
    if not text.startswith("scenarios:"):
        return None
    try:
        years = [int(y) for y in text.split(":", 1)[1].split(",") if y.strip()]
    except ValueError:
        years = []
    if not years or any(not 1940 <= y <= 2100 for y in years):
        raise UsageError(f"`weather` {weather} does not list years", fix="write e.g. `weather` scenarios:2017,2018,2019")
    return years
