"""The vegediff cube: the one analysis-ready format every command reads and writes.

A cube is an ``xarray.Dataset`` (on disk: NetCDF4, CF-1.8) with

- dims ``time`` (one frame every 5 days, the Sentinel-2 acquisition date), ``y``, ``x``
  (pixel centres in the cube's CRS, north-up) and ``stat`` (``mean, min, max``) for meteorology;
- ``s2_B02, s2_B03, s2_B04, s2_B8A`` ``(time, y, x)``: surface reflectance 0-1, NaN = no data;
- ``valid_mask`` ``(time, y, x)``: 1 where the observation is clear and usable;
- optional ``s2_SCL`` and ``s2_dlmask`` ``(time, y, x)`` as delivered (kept for provenance);
- optional ``eobs_<var>`` ``(time, stat)`` for var in tg tn tx rr pp hu fg qq: E-OBS units,
  aggregated over the 5 days ending on each frame date (days t-4..t);
- optional static layers ``cop_dem, nasa_dem, alos_dem`` (m), ``esawc_lc`` (ESA WorldCover
  class), ``geom_cls`` (geomorphon class) ``(y, x)``;
- the CRS in ``spatial_ref`` (written by rioxarray, read by GDAL and QGIS).

GreenEarthNet variable names are used throughout so that published minicubes map onto it
one to one. Full description: docs/cube-format.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from ..config import (
    BANDS,
    DLMASK,
    METEO_LONG_NAMES,
    METEO_STATS,
    METEO_UNITS,
    METEO_VARS,
    SCL,
    STATIC_LAYERS,
    VALID,
    meteo_name,
)
from ..errors import CorruptInputError, GeoreferenceError, MissingVariableError
from ..geo import GridSpec

CUBE_VERSION = "1"

BAND_LONG_NAMES = {
    "s2_B02": "Sentinel-2 B02 (blue) surface reflectance",
    "s2_B03": "Sentinel-2 B03 (green) surface reflectance",
    "s2_B04": "Sentinel-2 B04 (red) surface reflectance",
    "s2_B8A": "Sentinel-2 B8A (narrow NIR) surface reflectance",
}
STATIC_ATTRS = {
    "cop_dem": {"long_name": "Copernicus DEM GLO-30 elevation", "units": "m"},
    "nasa_dem": {"long_name": "NASADEM elevation", "units": "m"},
    "alos_dem": {"long_name": "ALOS World 3D-30m elevation", "units": "m"},
    "esawc_lc": {"long_name": "ESA WorldCover land cover class", "units": "1"},
    "geom_cls": {"long_name": "Geomorpho90m geomorphon class", "units": "1"},
}


def recorded_crs(ds: xr.Dataset | xr.DataArray) -> str | None:
    """The CRS (WKT) a file's ``spatial_ref`` variable records as ``crs_wkt`` (CF, as rioxarray writes it), or None."""
    names = ds.variables if isinstance(ds, xr.Dataset) else ds.coords
    if "spatial_ref" in names:
        return ds["spatial_ref"].attrs.get("crs_wkt")
    return None


def with_crs(ds: xr.Dataset) -> xr.Dataset:
    """`ds` with the CRS its ``spatial_ref`` records attached where rioxarray found none: the one CRS reader."""
    if ds.rio.crs is None and (wkt := recorded_crs(ds)) is not None:
        return ds.rio.write_crs(wkt)
    return ds


def grid_of(ds: xr.Dataset | xr.DataArray) -> GridSpec:
    """The cube's grid; raises GeoreferenceError when the CRS is missing."""
    crs = ds.rio.crs
    if crs is None:
        raise GeoreferenceError(
            "the cube has no CRS",
            fix="write one with rioxarray (ds.rio.write_crs) or re-run `vegediff prepare`",
        )
    return GridSpec(crs=crs.to_string(), transform=ds.rio.transform(), width=ds.sizes["x"], height=ds.sizes["y"])


def centre_latitude(ds: xr.Dataset | xr.DataArray) -> float:
    """Latitude (degrees north) of the grid's centre; GeoreferenceError without a CRS."""
    from pyproj import Transformer

    grid = grid_of(ds)
    left, bottom, right, top = grid.bounds
    to_wgs84 = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    _, latitude = to_wgs84.transform(0.5 * (left + right), 0.5 * (bottom + top))
    return float(latitude)


def new_cube(
    *,
    times: Sequence[np.datetime64] | pd.DatetimeIndex,
    y: np.ndarray,
    x: np.ndarray,
    crs: str,
    bands: np.ndarray,
    valid: np.ndarray,
    source: str,
    attrs: dict | None = None,
) -> xr.Dataset:
    """Assemble a cube from arrays: `bands` (T, 4, H, W) reflectance, `valid` (T, H, W) bool.

    `y` and `x` are pixel-centre coordinates (y descending); they are kept exactly as
    given so that outputs align pixel for pixel with the input they came from.
    """
    expected = (len(times), len(BANDS), len(y), len(x))
    if bands.shape != expected:
        raise ValueError(f"bands shape {bands.shape} != {expected}")
    coords = {
        "time": pd.DatetimeIndex(times).as_unit("ns"),
        "y": np.asarray(y, dtype="float64"),
        "x": np.asarray(x, dtype="float64"),
    }
    data_vars = {
        name: (("time", "y", "x"), bands[:, i].astype("float32"), {"long_name": BAND_LONG_NAMES[name], "units": "1"})
        for i, name in enumerate(BANDS)
    }
    data_vars[VALID] = (("time", "y", "x"), valid.astype("uint8"), {"long_name": "clear-sky valid observation flag"})
    ds = xr.Dataset(data_vars, coords=coords)
    return finalise(ds, crs=crs, source=source, attrs=attrs)


def grid_coords(grid: GridSpec) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre (y, x) coordinate arrays of a grid."""
    return np.asarray(grid.y_coords()), np.asarray(grid.x_coords())


def finalise(ds: xr.Dataset, *, crs: str, source: str, attrs: dict | None = None) -> xr.Dataset:
    """Attach CRS, CF coordinate attributes and the cube's global attributes."""
    ds = ds.rio.write_crs(crs)
    ds = ds.rio.write_coordinate_system()
    geographic = ds.rio.crs.is_geographic
    ds["x"].attrs.update(
        {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east", "axis": "X"}
        if geographic
        else {"standard_name": "projection_x_coordinate", "long_name": "x coordinate of pixel centre", "units": "m", "axis": "X"}
    )
    ds["y"].attrs.update(
        {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north", "axis": "Y"}
        if geographic
        else {"standard_name": "projection_y_coordinate", "long_name": "y coordinate of pixel centre", "units": "m", "axis": "Y"}
    )
    if "time" in ds.coords:
        ds["time"].attrs.update({"standard_name": "time", "long_name": "Sentinel-2 frame date", "axis": "T"})
    for name in ds.data_vars:
        if {"y", "x"} <= set(ds[name].dims):
            ds[name].attrs["grid_mapping"] = "spatial_ref"
    ds.attrs.update(
        {
            "Conventions": "CF-1.8",
            "vegediff_cube_version": CUBE_VERSION,
            "source": source,
            **(attrs or {}),
        }
    )
    return ds


def add_meteo(ds: xr.Dataset, daily: dict[str, np.ndarray] | None, day_times: pd.DatetimeIndex | None) -> xr.Dataset:
    """Aggregate daily E-OBS series to (time, stat) over the 5 days ending on each frame date."""
    if not daily:
        return ds
    frame_times = pd.DatetimeIndex(ds["time"].values)
    day_index = pd.DatetimeIndex(day_times).normalize()
    for var in METEO_VARS:
        series = daily.get(var)
        if series is None:
            continue
        values = np.asarray(series, dtype="float64")
        out = np.full((len(frame_times), len(METEO_STATS)), np.nan, dtype="float32")
        for t, frame in enumerate(frame_times.normalize()):
            window = (day_index > frame - pd.Timedelta(days=5)) & (day_index <= frame)
            chunk = values[window]
            chunk = chunk[np.isfinite(chunk)]
            if chunk.size:
                out[t] = (chunk.mean(), chunk.min(), chunk.max())
        ds[meteo_name(var)] = (
            ("time", "stat"),
            out,
            {"long_name": METEO_LONG_NAMES[var], "units": METEO_UNITS[var], "cell_methods": "time: mean/min/max over 5 days"},
        )
    if "stat" not in ds.coords:
        ds = ds.assign_coords(stat=list(METEO_STATS))
    return ds


def add_static(ds: xr.Dataset, layers: dict[str, np.ndarray]) -> xr.Dataset:
    """Attach (y, x) static layers named as in GreenEarthNet; records the missing ones."""
    for name, values in layers.items():
        if name not in STATIC_LAYERS:
            raise ValueError(f"unknown static layer {name}")
        ds[name] = (("y", "x"), np.asarray(values, dtype="float32"), dict(STATIC_ATTRS[name], grid_mapping="spatial_ref"))
    ds.attrs["missing_static_layers"] = " ".join(n for n in STATIC_LAYERS if n not in ds)
    return ds


def meteo_vars_present(ds: xr.Dataset) -> list[str]:
    """E-OBS variables with at least one finite value."""
    return [v for v in METEO_VARS if meteo_name(v) in ds and bool(np.isfinite(ds[meteo_name(v)].values).any())]


def require(ds: xr.Dataset, names: Iterable[str], *, what: str, source: str, fix: str) -> None:
    """Raise MissingVariableError naming the first absent variable."""
    missing = [n for n in names if n not in ds.variables]
    if missing:
        raise MissingVariableError(f"{source} lacks {what} {', '.join(missing)}", fix=fix)


def validate(ds: xr.Dataset, *, source: str = "cube") -> xr.Dataset:
    """Check the invariants every command relies on; return the dataset unchanged."""
    require(ds, BANDS, what="band(s)", source=source,
            fix="pass a cube made by `vegediff fetch`/`prepare` or a GreenEarthNet minicube")
    if VALID not in ds:
        raise MissingVariableError(f"{source} lacks {VALID}", fix="re-create it with `vegediff prepare`")
    for dim in ("time", "y", "x"):
        if dim not in ds.dims:
            raise MissingVariableError(f"{source} has no '{dim}' dimension", fix="see docs/cube-format.md")
    for name in (*BANDS, VALID):
        dims = tuple(ds[name].dims)
        if set(dims) != {"time", "y", "x"}:
            raise CorruptInputError(f"{source}: {name} has dims {dims}, expected (time, y, x)",
                                    fix="see docs/cube-format.md for the cube layout")
        if dims != ("time", "y", "x"):  # the same data stored in another axis order: read it as it is meant
            ds[name] = ds[name].transpose("time", "y", "x")
    if "stat" in ds.dims and "stat" not in ds.coords:  # NetCDF3 files cannot store the string coordinate
        if ds.sizes["stat"] != len(METEO_STATS):
            raise CorruptInputError(f"{source}: the stat dimension has {ds.sizes['stat']} entries and no labels",
                                    fix=f"meteorology needs stat = {', '.join(METEO_STATS)} (docs/cube-format.md)")
        ds = ds.assign_coords(stat=list(METEO_STATS))  # the documented order
    if not np.issubdtype(ds["time"].dtype, np.datetime64):
        raise CorruptInputError(f"{source}: the time axis holds {ds['time'].dtype} values, not dates",
                                fix="store time with CF units, e.g. 'days since 1970-01-01'")
    from .validate import check_band_types

    check_band_types(ds, source=source)
    grid_of(ds)
    times = pd.DatetimeIndex(ds["time"].values)
    if not times.is_monotonic_increasing or times.has_duplicates:
        raise GeoreferenceError(f"{source} has unsorted or repeated dates", fix="sort the time axis before use")
    return ds


def optional_vars() -> tuple[str, ...]:
    """Variables a cube may carry beyond the required ones (for docs and tests)."""
    return (SCL, DLMASK, *(meteo_name(v) for v in METEO_VARS), *STATIC_LAYERS)


@dataclass(frozen=True, eq=False)
class TargetGrid:
    """The grid a cube is written on: CRS and transform, plus the exact coordinates to write."""

    grid: GridSpec  # CRS, transform of the upper-left corner, size
    y: np.ndarray = field(repr=False)  # pixel-centre y (descending), kept bit for bit from --like cubes
    x: np.ndarray = field(repr=False)  # pixel-centre x (ascending)

    @classmethod
    def of_grid(cls, grid: GridSpec) -> TargetGrid:
        y, x = grid_coords(grid)
        return cls(grid, y, x)

    @classmethod
    def of_dataset(cls, ds: xr.Dataset) -> TargetGrid:
        return cls(grid_of(ds), np.asarray(ds["y"].values, dtype="float64"), np.asarray(ds["x"].values, dtype="float64"))

    def same_as(self, other: GridSpec) -> bool:
        """True when `other` has this grid's CRS, size and (to 1e-6 px) transform."""
        mine = self.grid
        if (mine.width, mine.height) != (other.width, other.height) or CRS.from_user_input(mine.crs) != CRS.from_user_input(other.crs):
            return False
        tolerance = 1e-6 * max(abs(mine.transform.a), abs(mine.transform.e))
        return all(abs(a - b) <= tolerance for a, b in zip(mine.transform[:6], other.transform[:6], strict=True))

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees."""
        return transform_bounds(CRS.from_user_input(self.grid.crs), CRS.from_epsg(4326), *self.grid.bounds, densify_pts=21)
