"""Open-Meteo: ERA5 daily series without an account (archive API) and short-range forecasts (forecast API).

Why this source (docs/prepare.md, "Meteorology without an account"): one 110 km tile and one
season cost about 0.3 MB of JSON in a handful of requests, against tens of GB of whole-globe
hourly chunks from the ARCO-ERA5 Zarr store (benchmarks/meteo_transfer.py).

What is asked for:

- ``models=era5``: the 0.25 deg ERA5 reanalysis itself (the default ``best_match`` blends in
  ERA5-Land and recent forecasts); ``cell_selection=nearest`` and ``elevation=nan`` return the
  raw grid cell, with no land-cell search and no lapse-rate downscaling, so a point queried on
  the 0.25 deg lattice gets exactly that ERA5 cell.
- daily aggregates in UTC (``timezone=GMT``): ``temperature_2m_mean/min/max``,
  ``precipitation_sum``, ``pressure_msl_mean``, ``relative_humidity_2m_mean``,
  ``wind_speed_10m_mean`` (``wind_speed_unit=ms``) and ``shortwave_radiation_sum`` (MJ m-2),
  which are the E-OBS variables tg tn tx rr pp hu fg qq once radiation is divided by 0.0864.
  Open-Meteo sums the hourly accumulations stamped 00:00..23:00 of a day, ECMWF's daily total
  the ones stamped 01:00..24:00: precipitation can move by one hour between days (radiation
  cannot in Europe: that hour is night).

Several locations go in one request (comma-separated ``latitude``/``longitude``; the answer is
a list). Archive answers are cached on disk by request (``$VEGEDIFF_CACHE_DIR`` or
``~/.cache/vegediff``): a rerun after a failure resumes where it stopped, and the past does not
change. Forecasts are never cached. Failures follow fetch's rules (sources/http.py): 408, 429 and
5xx, stalls and cut-short bodies are retried with back-off (``Retry-After`` honoured); other
answers and exhausted retries are a ``RemoteError`` (exit 8) naming the endpoint; an API key
(``OPEN_METEO_API_KEY``, for commercial use) is never shown in logs or errors.

Terms: the free API is for non-commercial use (https://open-meteo.com/en/terms); the data are
CC BY 4.0 and need attribution (``ATTRIBUTION``, written into every cube and forecast that uses them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import requests
import xarray as xr

from ..atomic import atomic_file
from ..errors import CorruptInputError, RemoteError, RunInterrupted
from . import daily_meteo as eobs
from .daily_meteo import MeteoRequest, to_eobs_units
from .http import RETRY_STATUS, RetryPolicy, new_session, pause, resolution_failure, retry_after_seconds

log = logging.getLogger("vegediff.meteo")

ARCHIVE_URL = "https://archive-api.open-meteo.com/v1/archive"
FORECAST_URL = "https://api.open-meteo.com/v1/forecast"
CUSTOMER_ARCHIVE_URL = "https://customer-archive-api.open-meteo.com/v1/archive"
CUSTOMER_FORECAST_URL = "https://customer-api.open-meteo.com/v1/forecast"
ARCHIVE_ENV, FORECAST_ENV, KEY_ENV, CACHE_ENV = (
    "VEGEDIFF_OPEN_METEO_ARCHIVE_URL", "VEGEDIFF_OPEN_METEO_FORECAST_URL", "OPEN_METEO_API_KEY", "VEGEDIFF_CACHE_DIR")
ERA5_SPACING = 0.25  # degrees: the ERA5 grid Open-Meteo serves with models=era5
LOCATIONS_PER_REQUEST = 20  # keeps URLs short; each location still counts as its own call against the quota
FORECAST_DAYS = 16  # the forecast API's longest range (today + 15 days)
ATTRIBUTION = ("Weather data by Open-Meteo.com (CC BY 4.0), https://open-meteo.com; ERA5: Hersbach et al. (2020), "
               "Copernicus Climate Change Service. Open-Meteo's free API is for non-commercial use only.")

# E-OBS variable -> Open-Meteo daily variable and the unit Open-Meteo writes in daily_units.
DAILY_VARIABLES = {
    "tg": ("temperature_2m_mean", "°C"), "tn": ("temperature_2m_min", "°C"), "tx": ("temperature_2m_max", "°C"),
    "rr": ("precipitation_sum", "mm"), "pp": ("pressure_msl_mean", "hPa"), "hu": ("relative_humidity_2m_mean", "%"),
    "fg": ("wind_speed_10m_mean", "m/s"), "qq": ("shortwave_radiation_sum", "MJ/m²"),
}
MJ_PER_DAY_TO_W = 1e6 / 86400.0  # a daily sum in MJ m-2 is a mean flux of x / 0.0864 W m-2


class Unreachable(RemoteError):
    """No connection at all (the name does not resolve, or every try was refused): ``--weather auto`` goes without."""


@dataclass
class Transfer:
    """What the network cost: for logs, --json and benchmarks."""

    requests: int = 0  # HTTP requests sent (retries included)
    bytes: int = 0  # response bytes received (bodies of successful answers)
    cached: int = 0  # requests answered from the disk cache
    seconds: float = 0.0  # wall time inside HTTP calls


@dataclass(frozen=True)
class OpenMeteo:
    """Where and how to ask Open-Meteo."""

    archive_url: str = ARCHIVE_URL  # historical weather API (ERA5 archive)
    forecast_url: str = FORECAST_URL  # forecast API (16 days)
    api_key: str | None = None  # commercial key: appended as apikey=..., never logged
    policy: RetryPolicy = RetryPolicy()
    cache_dir: Path | None = None  # archive answers are kept here; None: no cache
    stop: threading.Event | None = None  # set on Ctrl-C/SIGTERM: waits between retries end at once
    transfer: Transfer = field(default_factory=Transfer, compare=False)

    @classmethod
    def from_env(cls, *, policy: RetryPolicy | None = None, stop: threading.Event | None = None) -> OpenMeteo:
        """Endpoints from $VEGEDIFF_OPEN_METEO_ARCHIVE_URL / _FORECAST_URL, key from $OPEN_METEO_API_KEY."""
        key = os.environ.get(KEY_ENV) or None
        archive = os.environ.get(ARCHIVE_ENV) or (CUSTOMER_ARCHIVE_URL if key else ARCHIVE_URL)
        forecast = os.environ.get(FORECAST_ENV) or (CUSTOMER_FORECAST_URL if key else FORECAST_URL)
        cache = Path(os.environ.get(CACHE_ENV) or Path("~/.cache/vegediff").expanduser()) / "open-meteo"
        return cls(archive, forecast, key, policy or RetryPolicy(), cache, stop)

    def redact(self, text: str) -> str:
        return text.replace(self.api_key, "***") if self.api_key else text


# --- points and the ERA5 lattice ------------------------------------------------------------------
def lattice(lon: Sequence[float], lat: Sequence[float], spacing: float = ERA5_SPACING) -> tuple[np.ndarray, np.ndarray]:
    """Grid-cell centres (lat ascending, lon ascending) enclosing every point, at least 2 x 2.

    Bilinear interpolation at a point needs the cells on both sides of it; querying exactly these
    cells (not the points) gives the same values as a gridded ERA5 file.
    """
    def axis(values: Sequence[float]) -> np.ndarray:
        low = math.floor(min(values) / spacing + 1e-9)
        high = math.ceil(max(values) / spacing - 1e-9)
        high = max(high, low + 1)
        return np.round(np.arange(low, high + 1) * spacing, 6)

    return axis(lat), axis(lon)


def _daily_params(start: pd.Timestamp, end: pd.Timestamp, lat: Sequence[float], lon: Sequence[float], *,
                  model: str | None) -> dict[str, str]:
    params = {
        "latitude": ",".join(f"{v:.4f}" for v in lat),
        "longitude": ",".join(f"{v:.4f}" for v in lon),
        "start_date": f"{start:%Y-%m-%d}",
        "end_date": f"{end:%Y-%m-%d}",
        "daily": ",".join(name for name, _ in DAILY_VARIABLES.values()),
        "timezone": "GMT",
        "wind_speed_unit": "ms",
        "cell_selection": "nearest",
        "elevation": ",".join("nan" for _ in lat),
    }
    if model:
        params["models"] = model
    return params


# --- HTTP ---------------------------------------------------------------------------------------------
def _get(client: OpenMeteo, url: str, params: dict[str, str], *, what: str, cache: bool) -> list[dict]:
    """One API call -> the list of per-location answers, from the cache when possible."""
    shown = requests.Request("GET", url, params=params).prepare().url or url
    if client.api_key:
        params = {**params, "apikey": client.api_key}
    key = hashlib.sha256(shown.encode()).hexdigest()[:32]
    cached = client.cache_dir / f"{key}.json" if cache and client.cache_dir is not None else None
    if cached is not None and cached.exists():
        try:
            client.transfer.cached += 1
            return _locations(json.loads(cached.read_text()), what=what, url=shown)
        except (ValueError, CorruptInputError):
            cached.unlink(missing_ok=True)  # a damaged cache entry is fetched again
    body = _send(client, url, params, what=what, shown=shown)
    answers = _locations(body, what=what, url=shown)
    if cached is not None:
        try:
            with atomic_file(cached) as tmp:
                tmp.write_text(json.dumps(body))
        except Exception as exc:  # a read-only cache must not stop the run
            log.debug("cannot cache %s: %s", shown, exc)
    return answers


def _send(client: OpenMeteo, url: str, params: dict[str, str], *, what: str, shown: str) -> object:
    """GET with fetch's retry rules; a body that is not complete JSON counts as cut short and is retried."""
    policy, session = client.policy, new_session()
    last = ""
    reached = False  # some try got an answer (or a timeout after connecting): the service is there
    for attempt in range(1, policy.attempts + 1):
        if client.stop is not None and client.stop.is_set():
            raise RunInterrupted(f"stopped before requesting {what}")
        retry_after = None
        connected = True
        started = pd.Timestamp.now()
        try:
            client.transfer.requests += 1
            response = session.get(url, params=params, timeout=(policy.connect_timeout, policy.timeout))
            content = response.content
        except requests.exceptions.ConnectTimeout:
            last = f"no connection to {urlparse(url).netloc} within {policy.connect_timeout:g} s"
            connected = False
        except requests.exceptions.Timeout:
            last = f"no answer within {policy.timeout:g} s"
        except requests.exceptions.ChunkedEncodingError:
            last = "the answer was cut short"
        except requests.exceptions.ConnectionError as exc:
            if resolution_failure(exc):  # no network: another try would not help
                raise Unreachable(f"no network / cannot resolve {urlparse(url).hostname} ({what})",
                                  fix="check the network connection, or pass `weather` none / `meteo` none "
                                      "to go without downloaded weather") from None
            last = f"cannot connect to {urlparse(url).netloc}"
            connected = False
        else:
            client.transfer.seconds += (pd.Timestamp.now() - started).total_seconds()
            if response.status_code < 400:
                try:
                    body = json.loads(content)
                    client.transfer.bytes += len(content)
                    return body
                except ValueError:
                    last = f"an incomplete or non-JSON answer ({len(content)} bytes)"
            else:
                reason = _reason(content)
                last = f"HTTP {response.status_code}" + (f" ({reason})" if reason else "")
                if response.status_code not in RETRY_STATUS:
                    raise RemoteError(f"{what} ({urlparse(url).netloc}) refused the request: {client.redact(last)}",
                                      fix="check the dates (the archive starts 1940 and lags ~5 days) and the area")
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                if response.status_code == 429 and retry_after is None:
                    retry_after = policy.max_wait  # Open-Meteo's quotas are per minute, hour and day: wait the longest
        reached = reached or connected
        if attempt == policy.attempts:
            break
        delay = policy.wait(attempt, retry_after)
        log.warning("%s: %s; try %d of %d in %.1f s", what, last, attempt + 1, policy.attempts, delay)
        pause(delay, client.stop)
    raise (RemoteError if reached else Unreachable)(
        f"{what} failed after {policy.attempts} tries (last: {last}; {urlparse(url).netloc}, {params['start_date']}.."
        f"{params['end_date']})",
        fix="check the network (rerun resumes from the cache), pass `era5`/`eobs`/`meteo_from` FILE, "
            "or `meteo` none / `weather` none to go without downloaded weather",
    )


def _reason(content: bytes) -> str:
    try:
        body = json.loads(content)
        return str(body.get("reason", ""))[:200] if isinstance(body, dict) else ""
    except ValueError:
        return content[:120].decode("utf-8", "replace").strip()


def _locations(body: object, *, what: str, url: str) -> list[dict]:
    answers = body if isinstance(body, list) else [body]
    for answer in answers:
        if not isinstance(answer, dict) or "daily" not in answer or "latitude" not in answer:
            raise CorruptInputError(f"{what} answered without daily data: {str(body)[:160]}",
                                    fix=f"check that {url.split('?')[0]} is an Open-Meteo API")
    return answers




# --- daily series ---------------------------------------------------------------------------------------
def fetch_daily(client: OpenMeteo, lat: Sequence[float], lon: Sequence[float], start: pd.Timestamp,
                end: pd.Timestamp, *, forecast: bool = False) -> list[dict]:
    """Per-location Open-Meteo answers for the days start..end (archive: ERA5; forecast: best match)."""
    url, what = (client.forecast_url, "Open-Meteo forecast API") if forecast else (client.archive_url, "Open-Meteo archive API")
    answers: list[dict] = []
    for first in range(0, len(lat), LOCATIONS_PER_REQUEST):
        rows = slice(first, first + LOCATIONS_PER_REQUEST)
        params = _daily_params(start, end, lat[rows], lon[rows], model=None if forecast else "era5")
        answers += _get(client, url, params, what=what, cache=not forecast)
    return answers


def _series(answer: dict, var: str, days: pd.DatetimeIndex, *, source: str) -> np.ndarray:
    name, unit = DAILY_VARIABLES[var]
    daily = answer["daily"]
    if name not in daily:
        raise CorruptInputError(f"{source} answered without {name}", fix="check the Open-Meteo endpoint and its version")
    declared = answer.get("daily_units", {}).get(name, unit)
    if declared != unit:
        raise CorruptInputError(f"{source} gives {name} in '{declared}', expected '{unit}'",
                                fix="do not override units in the endpoint URL")
    times = pd.DatetimeIndex(pd.to_datetime(daily["time"])).normalize()
    values = pd.Series(np.array([np.nan if v is None else v for v in daily[name]], dtype="float64"), index=times)
    return values.reindex(days).to_numpy()


def to_daily(answers: list[dict], days: pd.DatetimeIndex, *, source: str, notes: list[str],
             allow_empty: bool = False) -> xr.Dataset:
    """Answers for the cells of a lattice (or for points) -> E-OBS daily dataset (time, latitude, longitude).

    A variable without any value is an error unless `allow_empty` (forecast weather: it then
    stays NaN, and the forecast sets it to the E-OBS mean).
    """
    lats = np.unique(np.round([a["latitude"] for a in answers], 4))
    lons = np.unique(np.round([a["longitude"] for a in answers], 4))
    if len(lats) * len(lons) != len(answers):
        raise CorruptInputError(f"{source} answered {len(answers)} locations that do not form a grid "
                                f"({len(lats)} latitudes x {len(lons)} longitudes)",
                                fix="use the ERA5 archive (models=era5), whose cells lie on a 0.25 deg grid")
    ds = xr.Dataset(coords={"time": days, "latitude": lats, "longitude": lons})
    for var in DAILY_VARIABLES:
        grid = np.full((len(days), len(lats), len(lons)), np.nan)
        for answer in answers:
            i = int(np.argmin(np.abs(lats - answer["latitude"])))
            j = int(np.argmin(np.abs(lons - answer["longitude"])))
            grid[:, i, j] = _series(answer, var, days, source=source)
        values = xr.DataArray(grid, dims=("time", "latitude", "longitude"), coords=ds.coords)
        if var == "qq":
            values = values * MJ_PER_DAY_TO_W
            declared = "W m-2"
        else:
            declared = {"°C": "degC", "m/s": "m s-1"}.get(DAILY_VARIABLES[var][1], DAILY_VARIABLES[var][1])
        if allow_empty and not np.isfinite(values.values).any():
            log.warning("%s has no %s for %s..%s: left at the E-OBS mean", source, DAILY_VARIABLES[var][0],
                        f"{days[0]:%Y-%m-%d}", f"{days[-1]:%Y-%m-%d}")
            ds[var] = values
            continue
        ds[var] = to_eobs_units(values.assign_attrs(units=declared), eobs.QUANTITY_OF[var],
                                name=DAILY_VARIABLES[var][0], source=source, notes=notes)
    return ds


def read_archive(request: MeteoRequest, *, lon: Sequence[float], lat: Sequence[float],
                 client: OpenMeteo) -> xr.Dataset:
    """ERA5 daily meteorology for the request's days on the ERA5 cells around the given points.

    The cells form a regular 0.25 deg lattice, so the result is a gridded daily dataset that
    prepare places exactly like a CDS ERA5 file (bilinear at the cube centre or its grid nodes).
    """
    cell_lat, cell_lon = lattice(lon, lat)
    grid_lat, grid_lon = np.meshgrid(cell_lat, cell_lon, indexing="ij")
    days = request.days
    source = "Open-Meteo ERA5 archive"
    log.info("%s: %d ERA5 cells x %d days", source, grid_lat.size, len(days))
    answers = fetch_daily(client, grid_lat.ravel().tolist(), grid_lon.ravel().tolist(), days[0], days[-1])
    notes: list[str] = []
    daily = to_daily(answers, days, source=source, notes=notes)
    finished = eobs.finish_daily(daily, request, source=source, file_period=f"asked for {request.describe_period()}",
                                 notes=notes)
    finished.attrs.update({"meteo_source": "open-meteo era5", "meteo_attribution": ATTRIBUTION,
                           "meteo_cells": int(grid_lat.size)})
    return finished
