"""A loopback Open-Meteo (archive and forecast API) with fault injection, for tests and benchmarks.

Real HTTP on 127.0.0.1 speaking Open-Meteo's protocol as documented at open-meteo.com/en/docs:

- ``GET /v1/archive`` and ``GET /v1/forecast`` with ``latitude``/``longitude`` (comma-separated
  lists for several locations: the answer is then a JSON list, each entry with ``location_id``),
  ``start_date``/``end_date`` (or ``forecast_days`` on the forecast API), ``daily``,
  ``timezone`` (GMT only), ``wind_speed_unit`` (``kmh`` default, ``ms``), ``models``,
  ``cell_selection``, ``elevation``, ``apikey`` (checked when the server has one);
- answers: ``latitude``/``longitude`` of the grid cell used (nearest cell), ``daily_units``,
  ``daily`` with ``time`` and one list per variable, ``null`` where the archive has no value;
  values rounded as Open-Meteo writes them (temperatures, pressure, precipitation, wind to 0.1,
  humidity to 1 %, radiation to 0.01 MJ m-2);
- errors as Open-Meteo sends them: HTTP 400 ``{"error": true, "reason": ...}`` (unknown
  variable, bad dates, dates outside the archive), 401 for a wrong key;
- :class:`~tests.stac_server.Fault` rules (500, 429 with Retry-After, stalls, bodies cut short).

The served data is an :class:`Archive`: daily values on a lat/lon grid of cells in Open-Meteo's
units. :func:`archive_from_minicubes` and :func:`archive_from_cf_era5` build one from the real
series in ../shared/data; :func:`era5_cf_file` writes the same values as a CF-named ERA5 daily
NetCDF, the file ``prepare --era5`` reads, so both paths can be compared.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import xarray as xr

from tests.stac_server import FaultLog, Logged

# E-OBS variable -> (Open-Meteo daily name, unit, decimals in Open-Meteo's JSON)
VARIABLES = {
    "tg": ("temperature_2m_mean", "°C", 1), "tn": ("temperature_2m_min", "°C", 1), "tx": ("temperature_2m_max", "°C", 1),
    "rr": ("precipitation_sum", "mm", 1), "pp": ("pressure_msl_mean", "hPa", 1), "hu": ("relative_humidity_2m_mean", "%", 0),
    "fg": ("wind_speed_10m_mean", "m/s", 1), "qq": ("shortwave_radiation_sum", "MJ/m²", 2),
}
BY_NAME = {name: (var, unit, decimals) for var, (name, unit, decimals) in VARIABLES.items()}
KNOWN_DAILY = set(BY_NAME) | {"weather_code", "sunrise", "sunset", "wind_speed_10m_max", "et0_fao_evapotranspiration"}
W_TO_MJ = 86400.0 / 1e6


@dataclass
class Archive:
    """Daily values (time, latitude, longitude) in Open-Meteo units, keyed by E-OBS name, and the last day served."""

    data: xr.Dataset  # variables tg tn tx rr pp hu fg qq; qq in MJ m-2 per day; NaN = no value
    first: pd.Timestamp = pd.Timestamp("1940-01-01")
    last: pd.Timestamp | None = None  # last day the API accepts (the archive's ~5-day lag); None: the data's end


def archive_from_minicubes(paths: list[Path], *, half_width_deg: float = 1.5, lat_gradient: float = 0.0,
                           missing_as: dict[str, float] | None = None) -> Archive:
    """A 0.25 deg lattice around the minicubes' sites; each cell takes the nearest site's real daily E-OBS series.

    Several minicubes (sites, years) merge on one time axis; days a site has no data stay NaN.
    `lat_gradient` adds degC per degree north to tg/tn/tx (to check interpolation between cells).
    `missing_as` fills a variable a minicube lacks entirely (EarthNet2021x has no wind) with a constant.
    """
    sites = []
    for path in paths:
        with xr.open_dataset(path) as raw:
            lat0 = float(raw["lat"].mean()) if "lat" in raw else float(raw.attrs.get("meteo_latitude"))
            lon0 = float(raw["lon"].mean()) if "lon" in raw else float(raw.attrs.get("meteo_longitude"))
            series = {v: raw[f"eobs_{v}"].values.astype("float64") for v in VARIABLES}
            for var, value in (missing_as or {}).items():
                if not np.isfinite(series[var]).any():
                    series[var] = np.full_like(series[var], value)
            sites.append((lat0, lon0, pd.DatetimeIndex(raw["time"].values).normalize(), series))
    days = pd.DatetimeIndex(sorted(set().union(*[set(s[2]) for s in sites])))
    lat_all = [s[0] for s in sites]
    lon_all = [s[1] for s in sites]
    lats = np.round(np.arange(math.floor((min(lat_all) - half_width_deg) * 4), math.ceil((max(lat_all) + half_width_deg) * 4) + 1) / 4, 2)
    lons = np.round(np.arange(math.floor((min(lon_all) - half_width_deg) * 4), math.ceil((max(lon_all) + half_width_deg) * 4) + 1) / 4, 2)
    grid = {v: np.full((len(days), len(lats), len(lons)), np.nan) for v in VARIABLES}
    glat, glon = np.meshgrid(lats, lons, indexing="ij")
    distance = np.stack([np.hypot(glat - s[0], (glon - s[1]) * np.cos(np.radians(s[0]))) for s in sites])  # (S, ny, nx)
    order = np.argsort(distance, axis=0)
    for rank in range(len(sites) - 1, -1, -1):  # nearest site last, so it wins where it has data
        for k, (_, _, times, series) in enumerate(sites):
            cells = order[rank] == k
            rows = days.get_indexer(times)
            for var in VARIABLES:
                block = grid[var][rows]
                values = series[var][:, None].repeat(cells.sum(), axis=1)
                current = block[:, cells]
                block[:, cells] = np.where(np.isfinite(values), values, current)
                grid[var][rows] = block
    if lat_gradient:
        for var in ("tg", "tn", "tx"):
            grid[var] += lat_gradient * (glat - np.mean(lat_all))[None]
    grid["qq"] = grid["qq"] * W_TO_MJ
    data = xr.Dataset({v: (("time", "latitude", "longitude"), grid[v]) for v in VARIABLES},
                      coords={"time": days, "latitude": lats, "longitude": lons})
    return Archive(data)


def archive_from_cf_era5(path: Path, *, location: str | None = None, place_at: tuple[float, float] | None = None) -> Archive:
    """The real ERA5 daily sample (xclim's Canadian cities): each city's series on the 2 x 2 cells around it.

    `location` keeps one city; `place_at` (lon, lat) serves its real series at another place (for
    tests whose synthetic cubes lie elsewhere; the values stay Victoria's, Halifax's...).
    """
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    if location is not None:
        ds = ds.sel(location=[location])
    days = pd.DatetimeIndex(ds["time"].values).normalize()
    frames = []
    for loc in ds["location"].values:
        one = ds.sel(location=loc)
        lat0, lon0 = float(one["lat"]), float(one["lon"])
        if place_at is not None:
            lon0, lat0 = place_at
        lon0 = ((lon0 + 180.0) % 360.0) - 180.0
        lats = np.array([math.floor(lat0 * 4) / 4, math.floor(lat0 * 4) / 4 + 0.25])
        lons = np.array([math.floor(lon0 * 4) / 4, math.floor(lon0 * 4) / 4 + 0.25])
        rh = one["hurs"].values * (100.0 if float(one["hurs"].max()) <= 1.5 else 1.0)
        series = {"tg": one["tas"].values - 273.15, "tn": one["tasmin"].values - 273.15, "tx": one["tasmax"].values - 273.15,
                  "rr": one["pr"].values * 86400.0, "pp": one["psl"].values / 100.0, "hu": rh,
                  "fg": one["sfcWind"].values, "qq": one["rsds"].values * W_TO_MJ}
        frames.append(xr.Dataset({v: (("time", "latitude", "longitude"), np.broadcast_to(s[:, None, None], (len(days), 2, 2)))
                                  for v, s in series.items()}, coords={"time": days, "latitude": lats, "longitude": lons}))
    return Archive(xr.combine_by_coords(frames, join="outer"))


def era5_cf_file(archive: Archive, path: Path, *, start: str, end: str) -> Path:
    """The archive's values (full precision) as a CF-named ERA5 daily NetCDF for `prepare --era5`."""
    ds = archive.data.sel(time=slice(start, end))
    out = xr.Dataset(coords={"time": ds["time"].values, "lat": ds["latitude"].values, "lon": ds["longitude"].values})
    dims = ("time", "lat", "lon")
    out["tas"] = (dims, ds["tg"].values + 273.15, {"units": "K"})
    out["tasmin"] = (dims, ds["tn"].values + 273.15, {"units": "K"})
    out["tasmax"] = (dims, ds["tx"].values + 273.15, {"units": "K"})
    out["pr"] = (dims, ds["rr"].values / 86400.0, {"units": "kg m-2 s-1"})
    out["psl"] = (dims, ds["pp"].values * 100.0, {"units": "Pa"})
    out["hurs"] = (dims, ds["hu"].values, {"units": "%"})
    out["sfcWind"] = (dims, ds["fg"].values, {"units": "m s-1"})
    out["rsds"] = (dims, ds["qq"].values / W_TO_MJ, {"units": "W m-2"})
    out.to_netcdf(path)
    return path


class OpenMeteoServer(FaultLog):
    """Serve an :class:`Archive` (archive API) and optionally another (forecast API) on a loopback port."""

    def __init__(self, archive: Archive, *, forecast: Archive | None = None, api_key: str | None = None,
                 today: str | None = None) -> None:
        super().__init__()
        self.archive, self.forecast = archive, forecast
        self.api_key = api_key
        self.today = pd.Timestamp(today) if today else None  # forecast_days count from here
        self.latency = 0.0  # seconds added before every answer (a distant server, for benchmarks)
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def archive_url(self) -> str:
        return f"{self.url}/v1/archive"

    @property
    def forecast_url(self) -> str:
        return f"{self.url}/v1/forecast"

    def __enter__(self) -> OpenMeteoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()


class ApiError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _one(params: dict[str, list[str]], name: str, default: str | None = None) -> str | None:
    return params[name][0] if name in params else default


def answer(server: OpenMeteoServer, endpoint: str, params: dict[str, list[str]]) -> Any:
    """The JSON document Open-Meteo would send for this query (raises ApiError like its 400s)."""
    archive = server.archive if endpoint == "archive" else (server.forecast or server.archive)
    if server.api_key is not None and _one(params, "apikey") != server.api_key:
        raise ApiError(401, "The supplied API key is invalid.")
    try:
        lats = [float(v) for v in _one(params, "latitude", "").split(",")]
        lons = [float(v) for v in _one(params, "longitude", "").split(",")]
    except ValueError:
        raise ApiError(400, "Parameter 'latitude' and 'longitude' must be floating point numbers") from None
    if len(lats) != len(lons):
        raise ApiError(400, "Parameter 'latitude' and 'longitude' must have the same number of elements")
    if any(abs(v) > 90 for v in lats) or any(abs(v) > 180 for v in lons):
        raise ApiError(400, "Latitude must be in range of -90 to 90°. Given: out of range.")
    if _one(params, "timezone", "GMT") not in ("GMT", "UTC"):
        raise ApiError(400, "This loopback server serves timezone=GMT only")
    names = [n for n in _one(params, "daily", "").split(",") if n]
    unknown = [n for n in names if n not in KNOWN_DAILY]
    if unknown:
        raise ApiError(400, f"Cannot initialize ForecastVariableDaily from invalid String value {unknown[0]}.")
    names = [n for n in names if n in BY_NAME]
    if "start_date" in params or endpoint == "archive":
        try:
            start, end = pd.Timestamp(_one(params, "start_date")), pd.Timestamp(_one(params, "end_date"))
        except (TypeError, ValueError):
            raise ApiError(400, "Parameter 'start_date' and 'end_date' must be set and be a date (yyyy-mm-dd)") from None
    else:
        today = server.today or pd.Timestamp.now().normalize()
        start, end = today, today + pd.Timedelta(days=int(_one(params, "forecast_days", "7")) - 1)
    last = archive.last if archive.last is not None else pd.Timestamp(archive.data["time"].values[-1])
    if end < start:
        raise ApiError(400, "Parameter 'end_date' must be after 'start_date'")
    if start < archive.first or end > last:
        raise ApiError(400, f"Parameter 'start_date' is out of allowed range from {archive.first:%Y-%m-%d} to {last:%Y-%m-%d}")
    days = pd.date_range(start, end, freq="D")
    wind_scale = 1.0 if _one(params, "wind_speed_unit", "kmh") == "ms" else 3.6
    data = archive.data
    out = []
    for i, (lat, lon) in enumerate(zip(lats, lons, strict=True)):
        row = int(np.argmin(np.abs(data["latitude"].values - lat)))
        col = int(np.argmin(np.abs(data["longitude"].values - lon)))
        cell = data.isel(latitude=row, longitude=col).reindex(time=days)
        daily: dict[str, Any] = {"time": [f"{d:%Y-%m-%d}" for d in days]}
        units: dict[str, str] = {"time": "iso8601"}
        for name in names:
            var, unit, decimals = BY_NAME[name]
            values = cell[var].values * (wind_scale if var == "fg" else 1.0)
            daily[name] = [None if not np.isfinite(v) else round(float(v), decimals) for v in values]
            units[name] = "km/h" if var == "fg" and wind_scale != 1.0 else unit
        doc = {"latitude": float(np.float32(data["latitude"].values[row])),
               "longitude": float(np.float32(data["longitude"].values[col])),
               "generationtime_ms": 0.5, "utc_offset_seconds": 0, "timezone": "GMT", "timezone_abbreviation": "GMT",
               "elevation": 100.0, "daily_units": units, "daily": daily}
        if len(lats) > 1:
            doc["location_id"] = i
        out.append(doc)
    return out if len(lats) > 1 else out[0]


def _handler(server: OpenMeteoServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def _send(self, status: int, doc: Any, *, truncate: bool = False, headers: dict[str, str] | None = None) -> None:
            server.send(self, status, json.dumps(doc).encode(), "application/json; charset=utf-8", headers,
                        truncate=truncate)

        def do_GET(self) -> None:
            if server.latency:
                time.sleep(server.latency)
            fault = server._fault_for("GET", self.path)
            if fault is not None and fault.kind == "status":
                headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
                reason = "Minutely API request limit exceeded. Please try again in one minute." if fault.status == 429 else "injected fault"
                self._send(fault.status, {"error": True, "reason": reason}, headers=headers)
                return
            if fault is not None and fault.kind == "stall":
                server._record(Logged("GET", self.path, 0, 0))
                server._stopping.wait(fault.seconds)
                self.close_connection = True
                return
            url = urlparse(self.path)
            endpoint = {"/v1/archive": "archive", "/v1/forecast": "forecast"}.get(url.path)
            if endpoint is None:
                self._send(404, {"error": True, "reason": "Not Found"})
                return
            try:
                doc = answer(server, endpoint, parse_qs(url.query))
            except ApiError as exc:
                self._send(exc.status, {"error": True, "reason": exc.reason})
                return
            self._send(200, doc, truncate=fault is not None)

    return Handler
