"""Training sequences: every accepted real source -> one in-memory `Sequence` on the 5-day grid.

Sources: anything `open_cube` reads (vegediff cubes, GreenEarthNet / EarthNet2021x minicubes,
EarthNet2021 samples: with meteorology), plain Sentinel-2 L2A time series in NetCDF
(``B2/B02, B3/B03, B4/B04, B8A or B8, SCL`` digital numbers, e.g. the `nrt` package's Romanian
forest and Rhone valley series: no meteorology, used with the condition dropped; a missing B02 is
estimated from the other bands, band_models.py) and 8-bit L1C series (toa_series.py). 10 m
series are averaged to 20 m, and a 10 m series is skipped where the same acquisitions exist at
20 m (true B8A). Irregular acquisition dates are placed on the 5-day grid (latest clear view wins).
Every sequence knows its latitude, for the model's date features.

:func:`load_frames` reads a range of frames only: from a GreenEarthNet minicube the days of those
frames (and the 4 days before the first, for its meteorology), from this tool's cubes the frames
themselves; other sources are small and read whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..config import BANDS, METEO_STATS, METEO_VARS, REFLECTANCE_SCALE, STEP_DAYS, VALID, meteo_name
from ..cube import greenearthnet
from ..cube.masks import clear_from_scl
from ..cube.readers import open_cube, open_netcdf
from ..cube.schema import centre_latitude, with_crs
from ..errors import CorruptInputError, MissingVariableError
from ..model.inputs import STATIC_ORDER
from .band_models import estimate_blue
from .toa_series import is_toa_series, read_toa_series


@dataclass
class Sequence:
    """One real time series of frames on the 5-day grid."""

    name: str  # file stem, used for hold-out selection and logs
    frames: np.ndarray  # (T, 4, H, W) float32 reflectance, NaN where missing
    valid: np.ndarray  # (T, H, W) bool clear-sky flag
    times: pd.DatetimeIndex  # (T,) frame dates
    meteo: np.ndarray | None  # (T, 8, 3) E-OBS units (NaN = missing) or None
    static: dict[str, np.ndarray]  # available static layers, (H, W) each
    latitude: float  # degrees north of the series' centre (date features)

    @property
    def has_meteo(self) -> bool:
        return self.meteo is not None and bool(np.isfinite(self.meteo).any())


def from_cube(ds: xr.Dataset, name: str) -> Sequence:
    """A cube (already read by open_cube) -> Sequence; meteorology must be (time, stat)."""
    frames = np.stack([ds[b].values for b in BANDS], axis=1).astype("float32")
    valid = ds[VALID].values.astype(bool) & np.isfinite(frames).all(axis=1)
    meteo = None
    names = [meteo_name(v) for v in METEO_VARS]
    if any(n in ds and ds[n].dims == ("time", "stat") for n in names):
        meteo = np.full((ds.sizes["time"], len(METEO_VARS), len(METEO_STATS)), np.nan, dtype="float32")
        for i, n in enumerate(names):
            if n in ds and ds[n].dims == ("time", "stat"):
                meteo[:, i] = ds[n].sel(stat=list(METEO_STATS)).values
    static = {n: ds[n].values.astype("float32") for n in STATIC_ORDER if n in ds}
    return Sequence(name, frames, valid, pd.DatetimeIndex(ds["time"].values), meteo, static, centre_latitude(ds))


def _band(ds: xr.Dataset, *names: str, required: bool = True) -> np.ndarray | None:
    for n in names:
        if n in ds:
            return ds[n].transpose("time", "y", "x").values.astype("float32")
    if not required:
        return None
    raise MissingVariableError(f"Sentinel-2 series lacks band {names[0]}", fix="provide B03, B04, B8A/B8 and SCL (B02 optional)")


def from_s2_series(path: Path) -> Sequence:
    """A NetCDF of Sentinel-2 L2A digital numbers (x 1e-4 = reflectance) with SCL, any revisit."""
    ds = open_netcdf(path, load=True)
    green, red = _band(ds, "B03", "B3"), _band(ds, "B04", "B4")
    nir, blue = _band(ds, "B8A", "B8"), _band(ds, "B02", "B2", required=False)
    if blue is None:  # e.g. the nrt package's 20 m series
        blue = 1e4 * estimate_blue(green * REFLECTANCE_SCALE, red * REFLECTANCE_SCALE, nir * REFLECTANCE_SCALE)
    dn = np.stack([blue, green, red, nir], 1)
    scl = _band(ds, "SCL")
    resolution = abs(float(ds["x"].values[1] - ds["x"].values[0]))
    if resolution < 15:  # 10 m -> 20 m by 2 x 2 means (SCL: any cloudy sub-pixel makes it unclear)
        t, c, h, w = dn.shape
        h2, w2 = h // 2, w // 2
        dn = dn[:, :, : 2 * h2, : 2 * w2].reshape(t, c, h2, 2, w2, 2).mean(axis=(3, 5))
        clear = clear_from_scl(scl[:, : 2 * h2, : 2 * w2]).reshape(t, h2, 2, w2, 2).all(axis=(2, 4))
    else:
        clear = clear_from_scl(scl)
    reflectance = dn * REFLECTANCE_SCALE
    valid = clear & np.isfinite(reflectance).all(axis=1) & (reflectance[:, 3] > 0)
    frames, valid, times = to_five_day_grid(reflectance, valid, pd.DatetimeIndex(ds["time"].values))
    return Sequence(path.stem, frames, valid, times, None, {}, _series_latitude(ds))


def _series_latitude(ds: xr.Dataset) -> float:
    return centre_latitude(with_crs(ds))


def from_toa_series(path: Path) -> Sequence:
    """An 8-bit L1C series (toa_series.py) on the 5-day grid; repeated frames count as missing."""
    reflectance, clear, fresh, dates, latitude = read_toa_series(path)
    frames, valid, times = to_five_day_grid(reflectance[fresh], clear[fresh], dates[fresh])
    return Sequence(path.stem, frames, valid, times, None, {}, latitude)


def to_five_day_grid(frames: np.ndarray, valid: np.ndarray, times: pd.DatetimeIndex):
    """Place irregular acquisitions on a 5-day grid: per pixel the latest clear view in days t-4..t."""
    grid = pd.date_range(times.min().normalize(), times.max().normalize() + pd.Timedelta(days=STEP_DAYS - 1),
                         freq=f"{STEP_DAYS}D") + pd.Timedelta(days=STEP_DAYS - 1)
    out = np.full((len(grid), *frames.shape[1:]), np.nan, dtype="float32")
    out_valid = np.zeros((len(grid), *valid.shape[1:]), dtype=bool)
    slot = np.searchsorted(grid.values, times.normalize().values)  # first frame date >= acquisition
    for i in np.argsort(times.values):  # later acquisitions overwrite earlier ones in the same slot
        k = slot[i]
        if k < len(grid):
            out[k] = np.where(valid[i][None], frames[i], out[k])
            out_valid[k] |= valid[i]
    return out, out_valid, grid


def source_kind(path: Path) -> str | None:
    """"cube" (open_cube reads it), "series" (Sentinel-2 L2A DN series), "toa" (8-bit L1C series) or None."""
    if path.suffix == ".npz":
        return "cube" if path.name.startswith("context_") else None
    if is_toa_series(path):
        return "toa"
    if path.suffix != ".nc":
        return None
    with xr.open_dataset(path) as raw:
        if "s2_B02" in raw or "vegediff_cube_version" in raw.attrs:
            return "cube"
        if any(b in raw for b in ("B03", "B3")) and "SCL" in raw:
            return "series"
    return None


def load_sequence(path: Path) -> Sequence:
    """Any supported training source -> Sequence."""
    path = Path(path)
    kind = source_kind(path)
    if kind == "cube":
        return from_cube(open_cube(path).load(), path.stem)
    if kind == "series":
        return from_s2_series(path)
    if kind == "toa":
        return from_toa_series(path)
    raise MissingVariableError(f"{path} holds no Sentinel-2 imagery", fix="pass cubes, minicubes or S2 series")


def minicube_frames(path: Path) -> tuple[int, int] | None:
    """(frames, phase) of a GreenEarthNet / EarthNet2021x minicube: its Sentinel-2 days are
    phase, phase + 5, ...; None for any other file."""
    if path.suffix != ".nc":
        return None
    with open_netcdf(path) as raw:
        if not greenearthnet.is_minicube(raw):
            return None
        phase = greenearthnet.frame_phase(raw)
        return len(range(phase, raw.sizes["time"], STEP_DAYS)), phase


def load_frames(path: Path, start: int, stop: int, *, phase: int | None = None) -> Sequence:
    """Frames start..stop-1 of a source as a Sequence. A minicube with its `phase` (from
    :func:`minicube_frames`) and this tool's cubes are read partially, other sources whole."""
    path = Path(path)
    if phase is not None:
        return _minicube_days(path, start, stop, phase)
    if path.suffix == ".nc":
        with xr.open_dataset(path) as raw:
            own = "vegediff_cube_version" in raw.attrs
        if own:
            return from_cube(open_cube(path).isel(time=slice(start, stop)).load(), path.stem)
    return _slice(load_sequence(path), start, stop)


def _minicube_days(path: Path, start: int, stop: int, phase: int) -> Sequence:
    first_day = phase + STEP_DAYS * start
    day0 = max(0, first_day - (STEP_DAYS - 1))  # the first frame's meteorology covers days t-4..t
    with open_netcdf(path) as raw:
        day1 = min(raw.sizes["time"], phase + STEP_DAYS * (stop - 1) + 1)
        try:
            days = raw.isel(time=slice(day0, day1)).load()
        except (OSError, RuntimeError) as exc:
            raise CorruptInputError(f"{path} could not be read to the end ({str(exc).splitlines()[0][:160]})",
                                    fix="the file may be truncated: delete it or download it again") from exc
    cube = greenearthnet.minicube_to_cube(days, path=path, phase=first_day - day0)
    return from_cube(cube, path.stem)


def _slice(seq: Sequence, start: int, stop: int) -> Sequence:
    meteo = None if seq.meteo is None else seq.meteo[start:stop]
    return Sequence(seq.name, seq.frames[start:stop], seq.valid[start:stop], seq.times[start:stop], meteo, seq.static,
                    seq.latitude)


def series_footprint(path: Path) -> tuple | None:
    """(first date, last date, count, rounded bounds) and resolution of an L2A series; None for other sources."""
    if path.suffix != ".nc" or source_kind(path) != "series":
        return None
    with xr.open_dataset(path) as ds:
        x, y, t = ds["x"].values, ds["y"].values, ds["time"].values
        resolution = abs(float(x[1] - x[0]))
        half = resolution / 2
        bounds = tuple(round(float(v) / 100) for v in (x.min() - half, y.min() - half, x.max() + half, y.max() + half))
        return (str(t[0]), str(t[-1]), len(t), bounds), resolution


def drop_finer_duplicates(paths: list[Path], footprint=series_footprint) -> list[Path]:
    """`paths` less the 10 m series that have a coarser twin: the model reads 20 m pixels, and the 20 m
    file has the true B8A (the `nrt` package ships the Romanian forest at 10 m and 20 m).
    `footprint(path)` as series_footprint's."""
    footprints = {p: footprint(p) for p in paths}
    coarsest: dict[tuple, float] = {}
    for found in filter(None, footprints.values()):
        key, resolution = found
        coarsest[key] = max(resolution, coarsest.get(key, 0.0))
    return [p for p in paths if footprints[p] is None or footprints[p][1] >= coarsest[footprints[p][0]]]
