"""Meteorology for a forecast: which source feeds each model frame, and its value at a chip centre.

The model conditions every frame (10 context + 20 future) on 24 E-OBS channels. Sources, in
order of preference (docs/forecast.md, "Meteorology"):

- context frames: the cube, else the ``--weather`` file;
- future frames: the ``--weather`` file (a forecast or a scenario: given on purpose, so it wins),
  else the cube (hindcasts, where the cube runs past the forecast start), else the climatology of
  the cube's own history (mean of the frames within 7 days of the same day of year in earlier
  years; needs at least one year of cube before the start);
- when no source covers any requested forecast date the forecast is *unconditional*: the model's
  condition-free branch, which drops the static layers too.

A requested date no source covers (a partly covered horizon) gets the E-OBS mean (standardised
value 0) and is listed as ``none`` in ``meteo_source_per_step``.

Meteorology comes as one series per cube (``eobs_<var> (time, stat)``) or on a coarse grid in the
cube's CRS (``(time, stat, meteo_y, meteo_x)``), interpolated bilinearly to each chip's centre.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ...config import METEO_STATS, METEO_VARS, meteo_name
from ...cube import schema
from ...cube.readers import open_netcdf
from ...cube.schema import with_crs
from ...errors import GeoreferenceError, MissingVariableError, UsageError
from ...model.inputs import standardise_meteo

log = logging.getLogger("vegediff.forecast")
CLIMATOLOGY_WINDOW_DAYS = 7  # frames within +-7 days of the same day of year count as "the same season"
MIN_HISTORY_DAYS = 365  # climatology needs a full year of the cube before the start


@dataclass(frozen=True)
class MeteoValues:
    """Meteorology in E-OBS units at some dates, as a series or on grid nodes."""

    dates: pd.DatetimeIndex  # (N,) frame dates
    values: np.ndarray  # (N, 8 vars, 3 stats, ny, nx) float32, NaN = missing; ny = nx = 1 for a series
    node_y: np.ndarray | None = None  # (ny,) node y in the cube's CRS, descending; None for a series
    node_x: np.ndarray | None = None  # (nx,) node x, ascending
    span: tuple[pd.Timestamp, pd.Timestamp] | None = None  # first and last date of the source file, for messages

    def covered(self, dates: pd.DatetimeIndex) -> np.ndarray:
        """(len(dates),) True where this source has any finite value for the date."""
        index = self.dates.get_indexer(dates)
        finite = np.isfinite(self.values).reshape(len(self.dates), -1).any(axis=1)
        return (index >= 0) & finite[np.maximum(index, 0)]

    def select(self, dates: pd.DatetimeIndex) -> MeteoValues:
        return MeteoValues(dates, self.values[self.dates.get_indexer(dates)], self.node_y, self.node_x, self.span)

    def at(self, y: float, x: float) -> np.ndarray:
        """(N, 8, 3) values at a point: bilinear between the grid nodes (NaN-aware), the series as is."""
        if self.node_y is None or self.node_x is None:
            return self.values[..., 0, 0]
        rows, row_w = _neighbours(self.node_y[::-1], y)
        cols, col_w = _neighbours(self.node_x, x)
        rows = [len(self.node_y) - 1 - r for r in rows]  # back to the descending order
        total = np.zeros(self.values.shape[:3], dtype="float64")
        weight = np.zeros(self.values.shape[:3], dtype="float64")
        for r, wr in zip(rows, row_w, strict=True):
            for c, wc in zip(cols, col_w, strict=True):
                node = self.values[..., r, c]
                ok = np.isfinite(node)
                total += np.where(ok, node, 0.0) * wr * wc
                weight += ok * wr * wc
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(weight > 0, total / weight, np.nan).astype("float32")


def _neighbours(axis: np.ndarray, value: float) -> tuple[list[int], list[float]]:
    """The two nodes of an ascending axis around `value` and their linear weights (clamped at the ends)."""
    if axis.size == 1:
        return [0], [1.0]
    position = float(np.clip(np.interp(value, axis, np.arange(axis.size)), 0, axis.size - 1))
    low = min(int(np.floor(position)), axis.size - 2)
    frac = position - low
    return [low, low + 1], [1.0 - frac, frac]


@dataclass(frozen=True)
class MeteoInputs:
    """Which source feeds each model frame; `at` gives a chip's standardised condition.

    With scenarios (``--weather auto|open-meteo|scenarios`` beyond the known weather), the frames
    in `scenario_rows` differ per member: member m reads ``scenarios[m % len(scenarios)]``.
    """

    frames: int  # model frames, context + future
    parts: tuple[tuple[np.ndarray, MeteoValues], ...]  # (model frame indices, their values) per source
    source: str  # meteo_source attribute: "cube", "climatology", "unconditional", the weather file, joined by "+"
    per_step: tuple[str, ...]  # source of each requested forecast step ("scenario" where members differ)
    conditioned: bool  # False: the unconditional model (no meteorology, no static layers)
    ignored: tuple[str, ...] = ()  # variables the weights were (almost) never trained with: always the mean
    scenario_rows: np.ndarray | None = None  # (S,) model frame indices filled by scenarios
    scenarios: tuple[MeteoValues, ...] = ()  # one per scenario (past year), at the dates of scenario_rows
    scenario_labels: tuple[str, ...] = ()  # "era5 2019", ... one per scenario
    members: int = 1  # ensemble members (scenario m % len(scenarios) feeds member m)
    attribution: str = ""  # terms of the downloaded weather (Open-Meteo: CC BY 4.0), "" when none

    @property
    def per_member(self) -> bool:
        return bool(self.scenarios)

    def member_labels(self) -> list[list[str]]:
        """(members, requested steps) the weather each member used at each step."""
        rows = []
        for m in range(self.members):
            label = self.scenario_labels[m % len(self.scenario_labels)] if self.scenarios else ""
            rows.append([label if step == "scenario" else step for step in self.per_step])
        return rows

    def at(self, y: float, x: float) -> np.ndarray:
        """(frames, 24) standardised meteorology at a chip centre, or (members, frames, 24) with scenarios."""
        raw = np.full((self.frames, len(METEO_VARS), len(METEO_STATS)), np.nan, dtype="float32")
        for rows, values in self.parts:
            raw[rows] = values.at(y, x)
        if self.scenarios:
            per_member = np.repeat(raw[None], self.members, axis=0)
            for m in range(self.members):
                per_member[m, self.scenario_rows] = self.scenarios[m % len(self.scenarios)].at(y, x)
            for var in self.ignored:
                per_member[:, :, METEO_VARS.index(var)] = np.nan
            return np.stack([standardise_meteo(r, self.frames) for r in per_member])
        for var in self.ignored:
            raw[:, METEO_VARS.index(var)] = np.nan
        return standardise_meteo(raw, self.frames)


def cube_meteo(cube: xr.Dataset) -> MeteoValues | None:
    """The cube's ``eobs_*`` variables (series or gridded), or None when it has none with data."""
    present = schema.meteo_vars_present(cube)
    if not present:
        return None
    return _dataset_values(cube, pd.DatetimeIndex(cube["time"].values).normalize(), source="the cube")


def _dataset_values(ds: xr.Dataset, dates: pd.DatetimeIndex, *, source: str) -> MeteoValues:
    """``eobs_<var> (time, stat[, meteo_y, meteo_x])`` -> MeteoValues (missing variables stay NaN)."""
    gridded = "meteo_y" in ds.dims and "meteo_x" in ds.dims
    ny, nx = (ds.sizes["meteo_y"], ds.sizes["meteo_x"]) if gridded else (1, 1)
    values = np.full((len(dates), len(METEO_VARS), len(METEO_STATS), ny, nx), np.nan, dtype="float32")
    for i, var in enumerate(METEO_VARS):
        name = meteo_name(var)
        if name not in ds:
            continue
        da = ds[name]
        expected = {"time", "stat", "meteo_y", "meteo_x"} if gridded else {"time", "stat"}
        if set(da.dims) != expected:
            raise MissingVariableError(f"{source}: {name} has dims {da.dims}, expected {tuple(sorted(expected))}",
                                       fix="see docs/cube-format.md for the meteorology layouts")
        order = ("time", "stat", "meteo_y", "meteo_x") if gridded else ("time", "stat")
        block = da.sel(stat=list(METEO_STATS)).transpose(*order).values.astype("float32")
        values[:, i] = block if gridded else block[..., None, None]
    if not gridded:
        return MeteoValues(dates, values)
    node_y, node_x = ds["meteo_y"].values.astype("float64"), ds["meteo_x"].values.astype("float64")
    y_order, x_order = np.argsort(-node_y), np.argsort(node_x)
    values = values[..., y_order, :][..., x_order]
    return MeteoValues(dates, values, node_y[y_order], node_x[x_order])


def read_weather(path: str | os.PathLike, *, dates: pd.DatetimeIndex, crs: object) -> MeteoValues:
    """A ``--weather`` file at the model's frame dates.

    Accepted: ``eobs_<var> (time)`` daily series (GreenEarthNet minicubes, or a file you write),
    aggregated over the 5 days ending on each frame date; ``eobs_<var> (time, stat)`` on frame
    dates; a vegediff cube, series or gridded (its grid must be in the cube's CRS).
    """
    path = Path(path)
    with open_netcdf(path) as ds:
        names = [meteo_name(v) for v in METEO_VARS if meteo_name(v) in ds]  # never load a cube's imagery
        return _weather_values(ds[names].load(), path, dates=dates, crs=crs)


def _weather_values(ds: xr.Dataset, path: Path, *, dates: pd.DatetimeIndex, crs: object) -> MeteoValues:
    present = [v for v in METEO_VARS if meteo_name(v) in ds]
    if not present:
        raise MissingVariableError(
            f"`weather` {path} has none of the variables {', '.join(meteo_name(v) for v in METEO_VARS)}",
            fix="write the forecast or scenario as eobs_<var> series in E-OBS units (docs/forecast.md)")
    if "time" not in ds.dims:
        raise MissingVariableError(f"`weather` {path} has no time axis", fix="give eobs_* a 'time' dimension")
    missing = [meteo_name(v) for v in METEO_VARS if v not in present]
    if missing:
        log.warning("`weather` %s lacks %s: those channels are set to the E-OBS mean", path.name, ", ".join(missing))
    file_dates = pd.DatetimeIndex(ds["time"].values).normalize()
    span = (file_dates.min(), file_dates.max())
    if all(ds[meteo_name(v)].dims == ("time",) for v in present):  # daily series
        daily = {v: ds[meteo_name(v)].values.astype("float64") for v in present}
        frames = schema.add_meteo(xr.Dataset(coords={"time": dates}), daily, file_dates)
        return dataclasses.replace(_dataset_values(frames, dates, source=f"`weather` {path}"), span=span)
    if "meteo_y" in ds.dims:
        crs_weather = with_crs(ds).rio.crs
        if crs_weather is None or crs is None or crs_weather != crs:
            raise GeoreferenceError(
                f"`weather` {path} has gridded meteorology in {crs_weather} but the cube is in {crs}",
                fix="grid the weather in the cube's CRS (vegediff prepare) or pass a series")
    return dataclasses.replace(_dataset_values(ds, file_dates, source=f"`weather` {path}"), span=span)


def climatology(history: MeteoValues, dates: pd.DatetimeIndex, *, before: pd.Timestamp) -> MeteoValues | None:
    """Mean of earlier years' frames within CLIMATOLOGY_WINDOW_DAYS of each date's day of year.

    None unless the history (frames before `before`) spans MIN_HISTORY_DAYS.
    """
    past = history.dates < before
    if not past.any() or (before - history.dates[past][0]).days < MIN_HISTORY_DAYS:
        return None
    past_dates, past_values = history.dates[past], history.values[past]
    values = np.full((len(dates), *history.values.shape[1:]), np.nan, dtype="float32")
    for i, date in enumerate(dates):
        gap = np.abs(past_dates.day_of_year.values - date.day_of_year)
        same_season = (np.minimum(gap, 365 - gap) <= CLIMATOLOGY_WINDOW_DAYS) & (past_dates <= date - pd.Timedelta(days=300))
        if same_season.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN node series stay NaN
                values[i] = np.nanmean(past_values[same_season], axis=0)
    return MeteoValues(dates, values, history.node_y, history.node_x)


def resolve_meteo(
    cube: xr.Dataset,
    *,
    model_dates: pd.DatetimeIndex,
    context_frames: int,
    requested: int,
    weather: str | os.PathLike | None = None,
    ignore: tuple[str, ...] = (),
    members: int = 1,
    client=None,
) -> MeteoInputs:
    """Choose the source of every model frame (see the module docstring); `ignore`d variables stay at the mean.

    `weather`: None or "none" (no network), a NetCDF path, or an Open-Meteo mode (pipeline/meteo/weather.py:
    "auto", "open-meteo", "scenarios"), which may download; `client` overrides the Open-Meteo endpoints.
    """
    from . import weather as online

    dates = pd.DatetimeIndex(model_dates).normalize()
    future = dates[context_frames:]
    start = future[0]
    mode = online.check_mode(weather) if weather is not None else "none"
    from_cube = cube_meteo(cube)
    from_weather = None
    weather_label = ""
    if mode is None:
        from_weather = read_weather(weather, dates=dates, crs=cube.rio.crs)
        weather_label = Path(weather).name
        if not from_weather.covered(future[:requested]).any():
            first, last = from_weather.span or (from_weather.dates.min(), from_weather.dates.max())
            raise UsageError(
                f"`weather` {weather_label} covers {first:%Y-%m-%d} to {last:%Y-%m-%d}, none of the forecast dates "
                f"{future[0]:%Y-%m-%d} to {future[requested - 1]:%Y-%m-%d}",
                fix="pass weather for the forecast period, or leave `weather` out")
    known = scenario_set = None
    attribution = ""
    if mode in ("auto", "open-meteo", "scenarios"):
        try:
            known, scenario_set = _online(cube, dates, context_frames, requested, mode=mode, from_cube=from_cube,
                                          members=members, client=client, weather=weather)
            attribution = online.openmeteo.ATTRIBUTION
        except online.openmeteo.Unreachable as exc:
            if mode != "auto":  # weather asked for by name: no silent substitute
                raise
            log.warning("%s: forecasting without downloaded weather, as with `weather` none "
                        "(pass `weather` open-meteo to require it)", exc.problem)
            mode = "none"
    clim = climatology(from_cube, future, before=start) if from_cube is not None and mode == "none" else None
    use_cube_future = mode in ("none", "auto") or mode is None
    known_label = known[0] if known else ""
    future_order = [(weather_label, from_weather), ("cube", from_cube if use_cube_future else None),
                    (known_label, known[1] if known else None), ("climatology", clim)]
    context_order = [("cube", from_cube), (weather_label, from_weather), (known_label, known[1] if known else None)]
    labels = np.full(len(dates), "none", dtype=object)
    chosen: dict[str, tuple[MeteoValues, list[int]]] = {}
    scenario_rows: list[int] = []
    for frame, date in enumerate(dates):
        order = context_order if frame < context_frames else future_order
        for label, values in order:
            if values is not None and values.covered(pd.DatetimeIndex([date]))[0]:
                labels[frame] = label
                chosen.setdefault(label, (values, []))[1].append(frame)
                break
        else:
            if context_frames <= frame < context_frames + requested and scenario_set:
                labels[frame] = "scenario"
                scenario_rows.append(frame)
    per_step = tuple(str(v) for v in labels[context_frames:context_frames + requested])
    if all(label == "none" for label in per_step):
        log.info("no meteorology for the forecast dates: using the unconditional model")
        return MeteoInputs(len(dates), (), "unconditional", tuple("unconditional" for _ in per_step), False)
    uncovered = [f"{d:%Y-%m-%d}" for d, label in zip(future, per_step, strict=False) if label == "none"]
    if uncovered:
        log.warning("no meteorology for %d forecast date(s) (first %s): the E-OBS mean is used there",
                    len(uncovered), uncovered[0])
    parts = tuple((np.asarray(rows), values.select(dates[rows])) for values, rows in chosen.values())
    used = [label for label, _ in future_order if label and label in per_step]
    scenarios: tuple[MeteoValues, ...] = ()
    scenario_labels: tuple[str, ...] = ()
    if scenario_rows and scenario_set:
        rows_dates = dates[scenario_rows]
        scenarios = tuple(s.select(rows_dates) for _, s in scenario_set)
        scenario_labels = tuple(label for label, _ in scenario_set)
        used.append("scenarios (" + ", ".join(scenario_labels) + ")" if len(scenario_labels) > 1 else scenario_labels[0])
        log.info("weather beyond the known period: %s", ", ".join(scenario_labels))
    if ignore:
        log.info("meteorology: %s left at the E-OBS mean (the weights were hardly trained with them)", " ".join(ignore))
    return MeteoInputs(len(dates), parts, "+".join(used), per_step, True, tuple(ignore),
                       np.asarray(scenario_rows, dtype=int) if scenarios else None, scenarios, scenario_labels,
                       members, attribution)


def _series_values(series) -> MeteoValues:
    return MeteoValues(series.dates, series.values[..., None, None].astype("float32"))


def _online(cube: xr.Dataset, dates: pd.DatetimeIndex, context_frames: int, requested: int, *, mode: str,
            from_cube: MeteoValues | None, members: int, client, weather: object = None):
    """Known weather (label, MeteoValues) and scenarios [(label, MeteoValues)] for the frames that need them."""
    from ...sources.openmeteo import OpenMeteo
    from . import weather as online

    client = client or OpenMeteo.from_env()
    lon, lat = cube_centre_lonlat(cube)
    now = online.today()
    future = dates[context_frames:context_frames + requested]
    covered_by_cube = from_cube.covered(dates) if from_cube is not None else np.zeros(len(dates), bool)
    # Only the context and the requested steps: later model frames keep whatever covers them (else the mean).
    need_known = [d for i, d in enumerate(dates[:context_frames + requested])
                  if not (covered_by_cube[i] and (i < context_frames or mode == "auto"))]
    if mode == "scenarios":
        need_known = [d for d in need_known if d < future[0]]  # context frames only
    known = None
    if need_known:
        series = online.known_weather(client, lon, lat, pd.DatetimeIndex(need_known), now=now)
        if series is not None:
            known = (series.label, _series_values(series))
    known_dates = known[1].dates if known else pd.DatetimeIndex([])
    rest = pd.DatetimeIndex([d for i, d in enumerate(future) if d not in known_dates
                             and not (mode == "auto" and covered_by_cube[context_frames + i])])
    scenario_set = []
    if len(rest):
        picked = online.chosen_years(weather)
        scenario_set = [(s.label, _series_values(s))
                        for s in online.scenarios(client, lon, lat, rest, members=members, now=now, years=picked)]
    return known, scenario_set


def cube_centre_lonlat(cube: xr.Dataset) -> tuple[float, float]:
    """Longitude and latitude of the cube's centre."""
    from rasterio.warp import transform as warp_transform

    y, x = cube["y"].values, cube["x"].values
    cy, cx = float((y.min() + y.max()) / 2), float((x.min() + x.max()) / 2)
    crs = cube.rio.crs
    if crs is None:
        raise GeoreferenceError("the cube has no CRS, so its weather cannot be downloaded",
                                fix="prepare the cube with vegediff prepare, or pass `weather` FILE")
    (lon,), (lat,) = warp_transform(crs, "EPSG:4326", [cx], [cy])
    return float(lon), float(lat)
