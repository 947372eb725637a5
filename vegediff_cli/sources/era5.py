"""ERA5 -> the 8 E-OBS equivalents (tg tn tx rr pp hu fg qq), from three file flavours.

1. CDS hourly ``reanalysis-era5-single-levels`` (NetCDF, dim ``valid_time``, or ``time`` in
   files from the legacy CDS; a .zip of "instant" and "accum" files is fine): ``t2m d2m msl u10
   v10`` are instantaneous; ``tp`` (m) and ``ssrd`` (J m-2) are accumulated over the hour
   *ending* at ``valid_time``, so the 00:00 step belongs to the day before (ECMWF's ERA5
   documentation: daily total = steps 01..23 of day d plus 00 of day d+1).
2. CDS ``derived-era5-single-levels-daily-statistics``: one file per statistic (daily_mean,
   daily_minimum, daily_maximum), same short names, daily ``valid_time``. Accumulated variables
   are daily means of the hourly accumulations (already shifted by the CDS), so the daily total
   precipitation is 24 x mean(tp) and the mean flux of radiation is mean(ssrd) / 3600 s.
3. CF-named daily files such as xclim's ERA5 sample (``tas tasmin tasmax pr psl|ps hurs|tdps
   rsds sfcWind|uas,vas``; fluxes in kg m-2 s-1 and W m-2), by ``location`` or on a grid.

Conversions: tg/tn/tx = daily mean/min/max of 2 m temperature in degC; rr = daily total in mm;
pp = daily mean sea-level pressure in hPa; hu = daily mean relative humidity in % from 2 m
dewpoint and temperature (Magnus formula, below); qq = daily mean downwelling shortwave flux in
W m-2; fg = daily mean of the hourly 10 m wind speeds sqrt(u10^2 + v10^2). Days are UTC.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..atomic import atomic_file
from ..cube.readers import open_netcdf
from ..errors import CorruptInputError, MissingVariableError, RemoteError, UsageError, VegediffError
from . import daily_meteo
from .daily_meteo import MeteoRequest, to_eobs_units

log = logging.getLogger("vegediff.meteo")

# Magnus formula with the constants of Alduchov & Eskridge (1996, J. Appl. Meteor. 35, 601-609),
# e_s(T) = 6.1094 hPa * exp(a T / (b + T)), T in degC; the 6.1094 cancels in the ratio e_s(Td) / e_s(T).
MAGNUS_A = 17.625
MAGNUS_B = 243.04  # degC

CDS_NAMES = frozenset({"t2m", "d2m", "tp", "msl", "ssrd", "u10", "v10", "si10"})
CF_NAMES = frozenset({"tas", "tasmin", "tasmax", "pr", "psl", "ps", "hurs", "tdps", "rsds", "sfcWind", "uas", "vas"})
SECONDS_PER_DAY = 86400.0
SECONDS_PER_HOUR = 3600.0


def relative_humidity(temperature_c, dewpoint_c):
    """Relative humidity (%) from temperature and dewpoint in degC (Magnus, Alduchov & Eskridge 1996)."""
    ratio = np.exp(MAGNUS_A * dewpoint_c / (MAGNUS_B + dewpoint_c) - MAGNUS_A * temperature_c / (MAGNUS_B + temperature_c))
    return (100.0 * ratio).clip(0.0, 100.0)


# --- opening ----------------------------------------------------------------------------------
def _expand(paths: Sequence[Path], stack: ExitStack) -> list[Path]:
    """Files to open: .zip archives from the CDS (instant + accum NetCDF files) are unpacked."""
    files: list[Path] = []
    for path in paths:
        if path.is_file() and zipfile.is_zipfile(path):
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vegediff-era5-")))
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.namelist() if m.lower().endswith((".nc", ".nc4"))]
                if not members:
                    raise CorruptInputError(f"{path} is a zip archive without NetCDF files",
                                            fix="download ERA5 with data_format 'netcdf'")
                for member in members:
                    files.append(Path(archive.extract(member, folder)))
        else:
            files.append(path)
    return files


def _open(path: Path) -> xr.Dataset:
    ds = open_netcdf(path)
    if "valid_time" in ds.dims:  # the new CDS (2024-) names the time axis valid_time
        ds = ds.rename({"valid_time": "time"}) if "time" not in ds.variables else ds.swap_dims({"valid_time": "time"})
    if "expver" in ds.dims:  # legacy CDS: ERA5 and ERA5T side by side, one of them NaN at each step
        ds = ds.max("expver", skipna=True)
    ds = ds.drop_vars([v for v in ("number", "expver") if v in ds.variables])
    if "time" not in ds.dims:
        raise MissingVariableError(f"{path} has no time (or valid_time) dimension",
                                   fix="pass ERA5 NetCDF as delivered by the Climate Data Store")
    ds = daily_meteo.normalise_coords(ds)
    if not daily_meteo.is_gridded(ds):
        others = [d for d in ds.dims if d != "time"]
        if len(others) != 1:
            raise MissingVariableError(f"{path} is neither a latitude/longitude grid nor a series by location "
                                       f"(dims {dict(ds.sizes)})", fix="pass ERA5 on a regular grid or by location")
        if others[0] != "location":
            ds = ds.rename({others[0]: "location"})
    return ds.sortby("time")


def _flavour(ds: xr.Dataset, path: Path) -> str:
    names = set(map(str, ds.data_vars))
    if names & CF_NAMES:
        return "cf-daily"
    if names & CDS_NAMES:
        step = pd.Series(pd.DatetimeIndex(ds["time"].values)).diff().median()
        return "cds-daily" if ds.sizes["time"] > 1 and step >= pd.Timedelta(hours=23) else "cds-hourly"
    raise MissingVariableError(
        f"{path} has none of the ERA5 variables vegediff reads (found {', '.join(sorted(names)) or 'none'})",
        fix="download 2m_temperature, 2m_dewpoint_temperature, total_precipitation, mean_sea_level_pressure, "
            "surface_solar_radiation_downwards, 10m_u/v_component_of_wind",
    )


def _combine(parts: list[xr.Dataset], source: str) -> xr.Dataset:
    try:
        return xr.combine_by_coords(parts, combine_attrs="drop_conflicts", join="outer", data_vars="all")
    except (ValueError, KeyError) as exc:
        raise CorruptInputError(f"ERA5 files {source} cannot be combined ({str(exc)[:120]})",
                                fix="pass files on one grid; split them by variable or by period, not both") from exc


def _need(ds: xr.Dataset, names: Sequence[str], *, purpose: str, source: str) -> None:
    missing = [n for n in names if n not in ds]
    if missing:
        raise MissingVariableError(f"{source} lacks {', '.join(missing)} (needed for {purpose})",
                                   fix="add the variable to the download (see docs/prepare.md)")


def read_era5(paths: Sequence[str | os.PathLike], request: MeteoRequest) -> xr.Dataset:
    """ERA5 NetCDF file(s) of any supported flavour -> daily E-OBS dataset for the request."""
    paths = [Path(p) for p in paths]
    source = ", ".join(p.name for p in paths)
    notes: list[str] = []
    with ExitStack() as stack:
        files = _expand(paths, stack)
        opened = [(_open(f), f) for f in files]
        flavours = {_flavour(ds, f) for ds, f in opened}
        if len(flavours) > 1:
            raise UsageError(f"ERA5 files {source} mix {' and '.join(sorted(flavours))} data",
                             fix="pass files of one product (hourly, daily statistics or CF daily) per run")
        flavour = flavours.pop()
        if flavour == "cds-daily":
            groups = _statistics(opened)
            probe = next(iter(groups.values()))
            daily_meteo.check_area(probe, request, source=source)
            for group in groups.values():
                daily_meteo.check_period(group["time"].values, request, source=source,
                                  file_period=daily_meteo.period_of(group["time"].values))
            groups = {k: daily_meteo.select_days(daily_meteo.subset(v, request), request, margin_days=0).load() for k, v in groups.items()}
            file_period = daily_meteo.period_of(probe["time"].values)
            daily = _from_daily_statistics(groups, source=source, notes=notes)
        else:
            ds = _combine([d for d, _ in opened], source)
            file_period = daily_meteo.period_of(ds["time"].values)
            daily_meteo.check_area(ds, request, source=source)
            daily_meteo.check_period(ds["time"].values, request, source=source, file_period=file_period)
            ds = daily_meteo.select_days(daily_meteo.subset(ds, request), request).load()
            if flavour == "cds-hourly":
                daily = _from_hourly(ds, source=source, notes=notes)
            else:
                ds = ds.assign_coords(time=daily_meteo.day_axis(ds["time"].values))
                daily = _from_cf_daily(ds, source=source, notes=notes)
    if flavour == "cds-hourly":
        file_period += " (hourly accumulations need the 00:00 step of the following day)"
    return daily_meteo.finish_daily(daily, request, source=f"ERA5 {source}", file_period=file_period, notes=notes)


# --- hourly -----------------------------------------------------------------------------------
def _daily(values: xr.DataArray, days: pd.DatetimeIndex, how: str, complete: pd.DatetimeIndex) -> xr.DataArray:
    """Reduce hourly values to days (`how` = mean, min, max or sum), keeping complete days only."""
    labelled = values.assign_coords(day=("time", days.values))
    reduced = getattr(labelled.groupby("day"), how)("time", skipna=False).rename(day="time")
    return reduced.sel(time=complete.values)


def _from_hourly(ds: xr.Dataset, *, source: str, notes: list[str]) -> xr.Dataset:
    times = pd.DatetimeIndex(ds["time"].values)
    step = pd.Series(times).diff().median() if len(times) > 1 else pd.Timedelta(hours=1)
    if step != pd.Timedelta(hours=1):
        raise UsageError(
            f"ERA5 {source} has a {step} time step; daily totals of tp and ssrd need every hour",
            fix="request all 24 times (00:00..23:00) of reanalysis-era5-single-levels, "
                "or use derived-era5-single-levels-daily-statistics",
        )
    instant_days = times.floor("D")
    accum_days = (times - pd.Timedelta(hours=1)).floor("D")  # the 00:00 step closes the day before

    def complete(days: pd.DatetimeIndex) -> pd.DatetimeIndex:
        counts = pd.Series(1, index=days).groupby(level=0).sum()
        return pd.DatetimeIndex(counts.index[counts == 24])

    # Days with all 24 instantaneous steps and all 24 accumulations; the others are left out, so
    # that a file ending at 23:00 reports its last day as missing instead of under-counting rain.
    instant_ok = accum_ok = complete(instant_days).intersection(complete(accum_days))
    _need(ds, ["t2m"], purpose="tg, tn, tx", source=source)
    _need(ds, ["d2m"], purpose="hu", source=source)
    _need(ds, ["msl"], purpose="pp", source=source)
    _need(ds, ["tp"], purpose="rr", source=source)
    _need(ds, ["ssrd"], purpose="qq", source=source)
    t2m = to_eobs_units(ds["t2m"], "temperature", name="t2m", source=source, notes=notes)
    d2m = to_eobs_units(ds["d2m"], "temperature", name="d2m", source=source, notes=notes)
    pressure = to_eobs_units(ds["msl"], "pressure", name="msl", source=source, notes=notes)
    if "si10" in ds:
        speed = ds["si10"]
    else:
        _need(ds, ["u10", "v10"], purpose="fg", source=source)
        speed = np.hypot(ds["u10"], ds["v10"])  # mean of speeds, not speed of the mean vector
    speed.attrs = {"units": "m s-1"}
    out = xr.Dataset()
    out["tg"] = _daily(t2m, instant_days, "mean", instant_ok)
    out["tn"] = _daily(t2m, instant_days, "min", instant_ok)
    out["tx"] = _daily(t2m, instant_days, "max", instant_ok)
    out["hu"] = _daily(relative_humidity(t2m, d2m), instant_days, "mean", instant_ok)
    out["pp"] = _daily(pressure, instant_days, "mean", instant_ok)
    out["fg"] = to_eobs_units(_daily(speed, instant_days, "mean", instant_ok), "wind", name="fg", source=source, notes=notes)
    rain = _daily(ds["tp"], accum_days, "sum", accum_ok)
    out["rr"] = to_eobs_units(rain, "precipitation", name="tp (daily sum)", source=source,
                              declared=ds["tp"].attrs.get("units", "m"), notes=notes)
    # ssrd is J m-2 per hour: the day's sum over 86400 s is the daily mean flux in W m-2.
    flux = _daily(ds["ssrd"], accum_days, "sum", accum_ok) / SECONDS_PER_DAY
    out["qq"] = to_eobs_units(flux, "radiation", name="ssrd (daily mean flux)", source=source, declared="W m-2", notes=notes)
    return out


# --- daily statistics ---------------------------------------------------------------------------
_STAT_WORDS = {"min": ("daily_minimum", "minimum", "min"), "max": ("daily_maximum", "maximum", "max"),
               "mean": ("daily_mean", "mean")}


def _statistic_of(ds: xr.Dataset, path: Path) -> str | None:
    """Which daily statistic a CDS daily-statistics file holds, from its attributes or file name."""
    texts = [str(v) for v in ds.attrs.values()] + [str(v) for var in ds.data_vars for v in ds[var].attrs.values()]
    for stat, words in _STAT_WORDS.items():
        if any(words[0] in text for text in texts):
            return stat
    tokens = set(re.split(r"[^a-z]+", path.stem.lower()))
    found = [stat for stat, words in _STAT_WORDS.items() if tokens & set(words)]
    return found[0] if len(found) == 1 else None


def _statistics(opened: list[tuple[xr.Dataset, Path]]) -> dict[str, xr.Dataset]:
    """Group daily-statistics files by statistic; unlabelled t2m files are told apart by their values."""
    labelled: dict[str, list[xr.Dataset]] = {}
    unknown: list[xr.Dataset] = []
    for ds, path in opened:
        stat = _statistic_of(ds, path)
        (labelled.setdefault(stat, []) if stat else unknown).append(ds)
    if unknown:
        if len(unknown) == 1 and "mean" not in labelled:
            labelled["mean"] = unknown
        elif len(unknown) == 3 and not labelled and all("t2m" in d for d in unknown):
            # min <= mean <= max holds every day, so the order of the t2m averages tells the files apart.
            order = np.argsort([float(d["t2m"].mean()) for d in unknown])
            labelled = {stat: [unknown[i]] for stat, i in zip(("min", "mean", "max"), order, strict=True)}
        else:
            raise UsageError(
                "cannot tell which ERA5 daily-statistics file holds the daily mean, minimum and maximum",
                fix="keep 'daily_mean', 'daily_minimum' or 'daily_maximum' in the file names",
            )
    return {stat: xr.combine_by_coords(parts, combine_attrs="drop_conflicts") if len(parts) > 1 else parts[0]
            for stat, parts in labelled.items()}


def _from_daily_statistics(groups: dict[str, xr.Dataset], *, source: str, notes: list[str]) -> xr.Dataset:
    for stat in ("mean", "min", "max"):
        if stat not in groups:
            raise MissingVariableError(
                f"ERA5 daily statistics {source} lack the daily_{'minimum' if stat == 'min' else 'maximum' if stat == 'max' else 'mean'} file",
                fix="download derived-era5-single-levels-daily-statistics with daily_mean, daily_minimum and "
                    "daily_maximum (2m_temperature at least for the latter two) and pass all files",
            )
    groups = {k: v.assign_coords(time=daily_meteo.day_axis(v["time"].values)) for k, v in groups.items()}
    mean = groups["mean"]
    _need(mean, ["t2m", "d2m", "msl", "tp", "ssrd"], purpose="tg, hu, pp, rr, qq", source=source)
    _need(groups["min"], ["t2m"], purpose="tn", source=source)
    _need(groups["max"], ["t2m"], purpose="tx", source=source)
    out = xr.Dataset()
    out["tg"] = to_eobs_units(mean["t2m"], "temperature", name="t2m daily mean", source=source, notes=notes)
    out["tn"] = to_eobs_units(groups["min"]["t2m"], "temperature", name="t2m daily minimum", source=source, notes=notes)
    out["tx"] = to_eobs_units(groups["max"]["t2m"], "temperature", name="t2m daily maximum", source=source, notes=notes)
    dewpoint = to_eobs_units(mean["d2m"], "temperature", name="d2m daily mean", source=source, notes=notes)
    out["hu"] = relative_humidity(out["tg"], dewpoint)  # from daily means: a close approximation
    out["pp"] = to_eobs_units(mean["msl"], "pressure", name="msl", source=source, notes=notes)
    out["rr"] = to_eobs_units(24.0 * mean["tp"], "precipitation", name="tp (24 x daily mean)", source=source,
                              declared=mean["tp"].attrs.get("units", "m"), notes=notes)
    out["qq"] = to_eobs_units(mean["ssrd"] / SECONDS_PER_HOUR, "radiation", name="ssrd (daily mean / 3600 s)",
                              source=source, declared="W m-2", notes=notes)
    if "si10" in mean:
        out["fg"] = to_eobs_units(mean["si10"], "wind", name="si10", source=source, notes=notes)
    else:
        _need(mean, ["u10", "v10"], purpose="fg", source=source)
        notes.append("fg from daily mean u10/v10 underestimates the mean hourly wind speed")
        log.warning("ERA5 %s: fg from daily mean u10/v10 underestimates the mean of hourly wind speeds", source)
        out["fg"] = to_eobs_units(np.hypot(mean["u10"], mean["v10"]).assign_attrs(units="m s-1"), "wind",
                                  name="fg", source=source, notes=notes)
    return out


# --- CF-named daily ------------------------------------------------------------------------------
def _from_cf_daily(ds: xr.Dataset, *, source: str, notes: list[str]) -> xr.Dataset:
    _need(ds, ["tas", "tasmin", "tasmax"], purpose="tg, tn, tx", source=source)
    _need(ds, ["pr"], purpose="rr", source=source)
    _need(ds, ["rsds"], purpose="qq", source=source)
    out = xr.Dataset()
    out["tg"] = to_eobs_units(ds["tas"], "temperature", name="tas", source=source, notes=notes)
    out["tn"] = to_eobs_units(ds["tasmin"], "temperature", name="tasmin", source=source, notes=notes)
    out["tx"] = to_eobs_units(ds["tasmax"], "temperature", name="tasmax", source=source, notes=notes)
    out["rr"] = to_eobs_units(ds["pr"], "precipitation", name="pr", source=source, notes=notes)
    out["qq"] = to_eobs_units(ds["rsds"], "radiation", name="rsds", source=source, notes=notes)
    if "psl" in ds:
        out["pp"] = to_eobs_units(ds["psl"], "pressure", name="psl", source=source, notes=notes)
    else:
        _need(ds, ["ps"], purpose="pp", source=source)
        message = f"{source} has no psl: pp uses surface pressure ps, which is lower than sea-level pressure above sea level"
        log.warning(message)
        notes.append(message)
        out["pp"] = to_eobs_units(ds["ps"], "pressure", name="ps", source=source, notes=notes)
    if "hurs" in ds:
        out["hu"] = to_eobs_units(ds["hurs"], "humidity", name="hurs", source=source, notes=notes)
    else:
        _need(ds, ["tdps"], purpose="hu", source=source)
        dewpoint = to_eobs_units(ds["tdps"], "temperature", name="tdps", source=source, notes=notes)
        out["hu"] = relative_humidity(out["tg"], dewpoint)
    if "sfcWind" in ds:
        out["fg"] = to_eobs_units(ds["sfcWind"], "wind", name="sfcWind", source=source, notes=notes)
    else:
        _need(ds, ["uas", "vas"], purpose="fg", source=source)
        notes.append("fg from daily mean uas/vas underestimates the mean hourly wind speed")
        out["fg"] = to_eobs_units(np.hypot(ds["uas"], ds["vas"]).assign_attrs(units="m s-1"), "wind",
                                  name="fg", source=source, notes=notes)
    return out


# --- optional download -----------------------------------------------------------------------------
CDS_DATASET = "reanalysis-era5-single-levels"
CDS_VARIABLES = (
    "2m_temperature", "2m_dewpoint_temperature", "total_precipitation", "mean_sea_level_pressure",
    "surface_solar_radiation_downwards", "10m_u_component_of_wind", "10m_v_component_of_wind",
)


def cds_request(request: MeteoRequest) -> dict:
    """The CDS API request for the hourly ERA5 a cube needs (area on the 0.25 deg grid, plus margin)."""
    days = request.days.union(pd.DatetimeIndex([request.days[-1] + pd.Timedelta(days=1)]))  # 00:00 closes the last day
    west, south, east, north = request.bbox
    area = [np.ceil(north * 4) / 4 + 0.25, np.floor(west * 4) / 4 - 0.25, np.floor(south * 4) / 4 - 0.25, np.ceil(east * 4) / 4 + 0.25]
    return {
        "product_type": ["reanalysis"],
        "variable": list(CDS_VARIABLES),
        "year": sorted({f"{d.year}" for d in days}),
        "month": sorted({f"{d.month:02d}" for d in days}),
        "day": sorted({f"{d.day:02d}" for d in days}),
        "time": [f"{h:02d}:00" for h in range(24)],
        "area": [float(a) for a in area],
        "data_format": "netcdf",
        "download_format": "unarchived",
    }


def cds_credentials_available() -> bool:
    return Path("~/.cdsapirc").expanduser().exists() or bool(os.environ.get("CDSAPI_URL") and os.environ.get("CDSAPI_KEY"))


def download_era5(request: MeteoRequest, target: str | os.PathLike) -> Path:
    """Download the hourly ERA5 the cube needs with `cdsapi` (optional extra) into `target`, atomically."""
    try:
        import cdsapi
    except ImportError as exc:
        raise UsageError("downloading ERA5 needs the optional cdsapi package",
                         fix="pip install 'vegediff-cli[era5]', or download the file yourself and pass `era5` FILE") from exc
    if not cds_credentials_available():
        raise UsageError("no Climate Data Store credentials (~/.cdsapirc or CDSAPI_URL/CDSAPI_KEY)",
                         fix="create ~/.cdsapirc with your CDS url and key (https://cds.climate.copernicus.eu/how-to-api)")
    target = Path(target)
    try:
        with atomic_file(target) as tmp:
            cdsapi.Client(quiet=True, progress=False).retrieve(CDS_DATASET, cds_request(request), str(tmp))
    except Exception as exc:  # cdsapi raises plain exceptions (HTTP errors, rejected requests)
        if isinstance(exc, VegediffError):
            raise
        raise RemoteError(f"ERA5 download from the CDS failed ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})",
                          fix="check your CDS key and licence acceptance, then retry") from exc
    return target
