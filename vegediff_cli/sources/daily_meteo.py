"""E-OBS conventions: the daily meteorology every source becomes, unit checks, coverage, readers.

Daily meteorology ("daily" below) is an ``xr.Dataset`` with a ``time`` axis of UTC days and either

- a regular grid: dims ``(time, latitude, longitude)``, 1-D ascending degree coordinates; or
- points: dims ``(time, location)`` with ``latitude`` / ``longitude`` coordinates on ``location``,

holding the E-OBS variables ``tg tn tx rr pp hu fg qq`` in E-OBS units (degC, mm, hPa, %, m s-1,
W m-2). ERA5 (sources/era5.py), E-OBS files and the ``eobs_*`` series of GreenEarthNet minicubes
all become this; pipeline/meteo/frames.py aggregates it onto the cube's 5-day frames.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..config import METEO_LONG_NAMES, METEO_UNITS, METEO_VARS, meteo_name
from ..cube.readers import open_netcdf
from ..errors import CorruptInputError, GeoreferenceError, MissingVariableError

log = logging.getLogger("vegediff.meteo")

EARTH_RADIUS_KM = 6371.0


# --- units -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Quantity:
    """How one physical quantity is converted to its E-OBS unit and checked for plausibility."""

    target: str  # the E-OBS unit
    plausible: tuple[float, float]  # every finite daily value must fall in this range (target unit)
    reach: float | None  # the largest value must reach this; tells % from 0-1 fractions
    units: dict[str, tuple[float, float]]  # unit spelling (see unit_key) -> (scale, offset): target = value * scale + offset
    names: dict[tuple[float, float], str]  # conversion -> the unit's usual name, for messages


def _quantity(target: str, plausible: tuple[float, float], reach: float | None,
              *groups: tuple[str, tuple[float, float]]) -> Quantity:
    """Each group is 'name|alias|alias' and its conversion; the first spelling names the unit."""
    units = {alias.lower(): conversion for spellings, conversion in groups for alias in spellings.split("|")}
    names = {conversion: spellings.split("|")[0] for spellings, conversion in groups}
    return Quantity(target, plausible, reach, units, names)


QUANTITIES: dict[str, Quantity] = {
    "temperature": _quantity("degC", (-90.0, 60.0), None,
                             ("degC|celsius|deg_c|°c|c|degrees_celsius|degree_celsius", (1.0, 0.0)),
                             ("K|kelvin|degk|degrees_kelvin", (1.0, -273.15))),
    "pressure": _quantity("hPa", (850.0, 1090.0), None,
                          ("hPa|mbar|mb|millibar|millibars", (1.0, 0.0)), ("Pa|pascal", (0.01, 0.0)), ("kPa", (10.0, 0.0))),
    # Daily amounts. A mean flux in kg m-2 s-1 (CF daily files) times 86400 s is mm per day.
    "precipitation": _quantity("mm", (-1.0, 1000.0), None,
                               ("mm|kg m-2|mm d-1|mm/day|mm day-1|mm/d", (1.0, 0.0)), ("m", (1000.0, 0.0)),
                               ("kg m-2 s-1|mm s-1", (86400.0, 0.0))),
    "humidity": _quantity("%", (0.0, 100.5), 1.5, ("%|percent|pct", (1.0, 0.0)), ("fraction 0-1|1|fraction|0-1", (100.0, 0.0))),
    "wind": _quantity("m s-1", (0.0, 75.0), None,
                      ("m s-1|m/s|ms-1|m.s-1|meter second-1|metre second-1", (1.0, 0.0)), ("km h-1|km/h", (1.0 / 3.6, 0.0))),
    "radiation": _quantity("W m-2", (0.0, 500.0), None, ("W m-2|w/m2|w/m^2|w m^-2|watt m-2", (1.0, 0.0))),
}
QUANTITY_OF: dict[str, str] = {
    "tg": "temperature", "tn": "temperature", "tx": "temperature", "rr": "precipitation",
    "pp": "pressure", "hu": "humidity", "fg": "wind", "qq": "radiation",
}


def unit_key(text: object) -> str:
    """'kg m**-2 s**-1' -> 'kg m-2 s-1', 'Celsius' -> 'celsius': one spelling per unit."""
    key = " ".join(str(text or "").replace("**", "").replace("^", "").lower().split())
    return key


def to_eobs_units(
    values: xr.DataArray,
    quantity: str,
    *,
    name: str,
    source: str,
    declared: str | None = None,
    notes: list[str] | None = None,
) -> xr.DataArray:
    """Convert `values` to the E-OBS unit of `quantity`, checking the result by its range.

    The declared unit (``units`` attribute unless `declared` is given) is trusted when the
    converted values are plausible. When they are not, and exactly one other known unit makes
    them plausible (Kelvin labelled Celsius, Pa labelled hPa, a 0-1 fraction labelled %), that
    unit is used and a warning is logged (and appended to `notes`). Anything else is an error:
    a value range that fits no unit means the file is not what it claims to be.
    """
    spec = QUANTITIES[quantity]
    declared = values.attrs.get("units") if declared is None else declared
    key = unit_key(declared)
    data = np.asarray(values.values, dtype="float64")
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        raise GeoreferenceError(
            f"{name} in {source} has no values over the cube's area and dates",
            fix="use meteorology that covers the cube (E-OBS has no data over the sea: check the area)",
        )
    low, high = float(finite.min()), float(finite.max())

    def fits(scale: float, offset: float) -> bool:
        lo, hi = low * scale + offset, high * scale + offset
        ok = spec.plausible[0] <= lo and hi <= spec.plausible[1]
        return ok and (spec.reach is None or hi >= spec.reach)

    chosen = spec.units.get(key)
    if chosen is None or not fits(*chosen):
        candidates = {conv: name for conv, name in spec.names.items() if fits(*conv)}
        shown = f"{low:.4g}..{high:.4g}"
        if len(candidates) == 1 or (chosen is None and (1.0, 0.0) in candidates):
            conversion = next(iter(candidates)) if len(candidates) == 1 else (1.0, 0.0)
            guess = candidates[conversion]
            label = f"labelled '{declared}'" if declared not in (None, "") else "without a units attribute"
            message = f"{name} in {source} is {label} but its values ({shown}) fit only '{guess}': converted from {guess} to {spec.target}"
            if chosen is None and len(candidates) > 1:
                message = f"{name} in {source} is {label}; values ({shown}) assumed to be in {spec.target}"
            log.warning(message)
            if notes is not None:
                notes.append(message)
            chosen = conversion
        else:
            expected = ", ".join(spec.names.values())
            raise CorruptInputError(
                f"{name} in {source} (units '{declared}') has values {shown} that are not a plausible "
                f"{quantity} in any known unit ({expected})",
                fix="check the variable and its units attribute, or convert the file to E-OBS units",
            )
    scale, offset = chosen
    out = values.astype("float64") * scale + offset
    if quantity in ("precipitation", "radiation"):
        out = out.clip(min=0.0)  # ERA5 accumulations carry tiny negative round-off values
    out.attrs = {"units": spec.target}
    return out


# --- the request: which days and which area the cube needs -----------------------------------
@dataclass(frozen=True)
class MeteoRequest:
    """What the cube needs from a meteorology source."""

    days: pd.DatetimeIndex  # every UTC day some frame aggregates (frame t needs days t-4..t)
    bbox: tuple[float, float, float, float]  # cube footprint in degrees: west, south, east, north
    max_point_distance_km: float = 25.0  # farthest a point series (station, minicube) may lie from the cube centre

    @property
    def centre(self) -> tuple[float, float]:
        west, south, east, north = self.bbox
        return ((west + east) / 2.0, (south + north) / 2.0)

    def describe_period(self) -> str:
        return f"{self.days[0]:%Y-%m-%d}..{self.days[-1]:%Y-%m-%d}"

    def describe_area(self) -> str:
        west, south, east, north = self.bbox
        return f"lon {west:.3f}..{east:.3f}, lat {south:.3f}..{north:.3f}"


def haversine_km(lon1, lat1, lon2, lat2) -> np.ndarray:
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(v, dtype="float64")) for v in (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def is_gridded(ds: xr.Dataset) -> bool:
    return "latitude" in ds.dims and "longitude" in ds.dims


def normalise_coords(ds: xr.Dataset) -> xr.Dataset:
    """lat/lon names -> latitude/longitude, longitudes in -180..180, grid axes ascending."""
    renames = {old: new for old, new in (("lat", "latitude"), ("lon", "longitude")) if old in ds.variables and new not in ds.variables}
    ds = ds.rename(renames)
    if "latitude" not in ds.variables or "longitude" not in ds.variables:
        raise MissingVariableError(
            "meteorology file has no latitude/longitude coordinates",
            fix="use a file as delivered by the Copernicus Climate Data Store or E-OBS",
        )
    lon = ds["longitude"]
    if float(lon.max()) > 180.0:
        ds = ds.assign_coords(longitude=((lon + 180.0) % 360.0) - 180.0)
    if is_gridded(ds):
        ds = ds.sortby(["latitude", "longitude"])
    return ds


def grid_spacing(ds: xr.Dataset) -> float:
    """Median spacing of a regular lat/lon grid in degrees (one cell when the grid is a single point)."""
    steps = [np.abs(np.diff(ds[c].values)) for c in ("latitude", "longitude") if ds.sizes[c] > 1]
    steps = np.concatenate(steps) if steps else np.array([0.25])
    return float(np.median(steps))


def check_area(ds: xr.Dataset, request: MeteoRequest, *, source: str) -> None:
    """GeoreferenceError unless the source covers the cube (grid) or lies close to it (points)."""
    if is_gridded(ds):
        half = grid_spacing(ds) / 2.0
        lon, lat = ds["longitude"].values, ds["latitude"].values
        have = (lon.min() - half, lat.min() - half, lon.max() + half, lat.max() + half)
        west, south, east, north = request.bbox
        if west < have[0] or south < have[1] or east > have[2] or north > have[3]:
            raise GeoreferenceError(
                f"{source} covers lon {have[0]:.2f}..{have[2]:.2f}, lat {have[1]:.2f}..{have[3]:.2f} "
                f"but the cube spans {request.describe_area()}",
                fix=f"download meteorology for an area that includes it (CDS 'area' N/W/S/E = "
                f"{math.ceil(north * 4) / 4:g}/{math.floor(west * 4) / 4:g}/{math.floor(south * 4) / 4:g}/{math.ceil(east * 4) / 4:g})",
            )
        return
    lon0, lat0 = request.centre
    distance = haversine_km(ds["longitude"].values, ds["latitude"].values, lon0, lat0)
    nearest = int(np.argmin(distance))
    if distance[nearest] > request.max_point_distance_km:
        label = str(ds["location"].values[nearest]) if "location" in ds.coords else f"#{nearest}"
        raise GeoreferenceError(
            f"the nearest location in {source} ({label} at lat {float(ds['latitude'].values[nearest]):.2f}, "
            f"lon {float(ds['longitude'].values[nearest]):.2f}) is {distance[nearest]:.0f} km from the cube centre "
            f"(lat {lat0:.3f}, lon {lon0:.3f}); the limit is {request.max_point_distance_km:g} km",
            fix="use meteorology for the cube's area, or raise `max_meteo_distance`",
        )


def subset(ds: xr.Dataset, request: MeteoRequest) -> xr.Dataset:
    """Keep the cells around the cube (two cells of margin for interpolation) or the nearest point."""
    if is_gridded(ds):
        margin = 2.0 * grid_spacing(ds)
        west, south, east, north = request.bbox
        return ds.sel(latitude=slice(south - margin, north + margin), longitude=slice(west - margin, east + margin))
    lon0, lat0 = request.centre
    nearest = int(np.argmin(haversine_km(ds["longitude"].values, ds["latitude"].values, lon0, lat0)))
    return ds.isel(location=[nearest])


def _ranges(days: pd.DatetimeIndex) -> str:
    """'2021-06-01..2021-06-03, 2021-07-09' for a sorted set of days (at most 4 ranges shown)."""
    if len(days) == 0:
        return ""
    groups: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    start = prev = days[0]
    for day in days[1:]:
        if day - prev != pd.Timedelta(days=1):
            groups.append((start, prev))
            start = day
        prev = day
    groups.append((start, prev))
    text = [f"{a:%Y-%m-%d}" if a == b else f"{a:%Y-%m-%d}..{b:%Y-%m-%d}" for a, b in groups[:4]]
    return ", ".join(text) + (f" and {len(groups) - 4} more gaps" if len(groups) > 4 else "")


def check_period(times, request: MeteoRequest, *, source: str, file_period: str) -> None:
    """GeoreferenceError naming the days the frames need that are not on the source's time axis."""
    missing = request.days.difference(pd.DatetimeIndex(times).normalize())
    if len(missing):
        raise GeoreferenceError(
            f"{source} ({file_period}) lacks {len(missing)} of the {len(request.days)} days the cube's frames "
            f"need: {_ranges(missing)}",
            fix=f"supply meteorology covering {request.describe_period()} (frame t aggregates days t-4..t)",
        )


def check_days(daily: xr.Dataset, request: MeteoRequest, *, source: str, file_period: str, notes: list[str]) -> None:
    """GeoreferenceError naming the days the frames need but the source lacks.

    Days inside the source's time axis with missing values (E-OBS and GreenEarthNet series have
    a few) are not an error: the frame statistics use the remaining days, and a note says so.
    """
    have = pd.DatetimeIndex(daily["time"].values).normalize()
    check_period(have, request, source=source, file_period=file_period)
    spatial = [d for d in daily.dims if d != "time"]
    needed = daily.sel(time=have.isin(request.days))
    for var in needed.data_vars:
        empty = ~np.asarray(np.isfinite(needed[var]).any(dim=spatial).values)
        if empty.any():
            message = (f"{var} from {source} has no value on {int(empty.sum())} of the {len(request.days)} days "
                       f"({_ranges(pd.DatetimeIndex(needed['time'].values[empty]))}); frames use the other days")
            log.warning(message)
            notes.append(message)


def period_of(times: np.ndarray) -> str:
    index = pd.DatetimeIndex(times)
    return f"covers {index.min():%Y-%m-%d}..{index.max():%Y-%m-%d}" if len(index) else "has no dates"


def finish_daily(
    daily: xr.Dataset, request: MeteoRequest, *, source: str, file_period: str, notes: list[str]
) -> xr.Dataset:
    """Check the variables, units and days of a converted daily dataset; add E-OBS attributes."""
    missing = [v for v in METEO_VARS if v not in daily]
    if missing:
        raise MissingVariableError(
            f"{source} lacks the meteorology needed for {', '.join(missing)}",
            fix="add the missing variables (see docs/prepare.md for what each source must contain)",
        )
    daily = daily[list(METEO_VARS)].transpose("time", ...)
    check_days(daily, request, source=source, file_period=file_period, notes=notes)
    daily = daily.sel(time=daily["time"].dt.floor("D").isin(request.days.values))
    for var in METEO_VARS:
        daily[var].attrs = {"units": METEO_UNITS[var], "long_name": METEO_LONG_NAMES[var]}
    daily.attrs = {"meteo_source": source, "meteo_unit_notes": " | ".join(notes)}
    return daily


def day_axis(times: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(times).normalize()


def select_days(ds: xr.Dataset, request: MeteoRequest, *, dim: str = "time", margin_days: int = 1) -> xr.Dataset:
    """The request's days (with a margin) of a lazily opened file, before anything is loaded."""
    start = request.days[0] - pd.Timedelta(days=margin_days)
    end = request.days[-1] + pd.Timedelta(days=margin_days + 1)
    times = pd.DatetimeIndex(ds[dim].values)
    return ds.isel({dim: np.flatnonzero((times >= start) & (times < end))})


# --- readers -----------------------------------------------------------------------------------
def read_eobs(paths: Sequence[str | os.PathLike], request: MeteoRequest) -> xr.Dataset:
    """E-OBS NetCDF files (one per variable, as distributed, or merged) -> daily E-OBS dataset."""
    paths = [Path(p) for p in paths]
    source = ", ".join(p.name for p in paths)
    parts = [normalise_coords(open_netcdf(p)) for p in paths]
    try:
        ds = xr.merge(parts, compat="override", join="outer", combine_attrs="drop_conflicts")
    except (ValueError, KeyError) as exc:
        raise CorruptInputError(f"E-OBS files {source} do not share one grid ({exc})",
                                fix="pass files of the same E-OBS version and resolution") from exc
    if "time" not in ds.dims or not is_gridded(ds):
        raise MissingVariableError(f"{source} is not an E-OBS grid (dims {dict(ds.sizes)})",
                                   fix="pass E-OBS files with time, latitude and longitude dimensions")
    file_period = period_of(ds["time"].values)
    check_area(ds, request, source=source)
    check_period(ds["time"].values, request, source=source, file_period=file_period)
    ds = select_days(subset(ds, request), request, margin_days=0).load()
    ds = ds.assign_coords(time=day_axis(ds["time"].values))
    notes: list[str] = []
    daily = xr.Dataset(coords={c: ds[c] for c in ("time", "latitude", "longitude")})
    for var in METEO_VARS:
        if var in ds:
            daily[var] = to_eobs_units(ds[var], QUANTITY_OF[var], name=var, source=source, notes=notes)
    return finish_daily(daily, request, source=source, file_period=file_period, notes=notes)


def read_minicube_meteo(path: str | os.PathLike, request: MeteoRequest) -> xr.Dataset:
    """The daily ``eobs_*`` series of a GreenEarthNet / EarthNet2021x minicube, as one point at its centre."""
    path = Path(path)
    raw = open_netcdf(path)
    found = [v for v in METEO_VARS if meteo_name(v) in raw and raw[meteo_name(v)].dims == ("time",)]
    if not found or not {"lat", "lon"} <= set(raw.dims):
        raise MissingVariableError(
            f"{path} has no daily eobs_* series on lat/lon (not a GreenEarthNet minicube)",
            fix="pass a GreenEarthNet or EarthNet2021x minicube to `meteo_from`, or use `era5` / `eobs`",
        )
    lat, lon = raw["lat"].values, raw["lon"].values
    points = xr.Dataset(
        coords={
            "time": day_axis(raw["time"].values),
            "location": [path.stem],
            "latitude": ("location", [float(np.mean([lat.min(), lat.max()]))]),
            "longitude": ("location", [float(np.mean([lon.min(), lon.max()]))]),
        }
    )
    source = path.name
    file_period = period_of(raw["time"].values)
    check_area(points, request, source=source)
    check_period(points["time"].values, request, source=source, file_period=file_period)
    notes: list[str] = []
    for var in found:
        series = raw[meteo_name(var)].load()
        values = xr.DataArray(series.values[:, None], dims=("time", "location"), coords=points.coords, attrs=series.attrs)
        points[var] = to_eobs_units(values, QUANTITY_OF[var], name=meteo_name(var), source=source, notes=notes)
    raw.close()
    return finish_daily(points, request, source=source, file_period=file_period, notes=notes)
