"""The streamed NetCDF4 writer for grids too large to hold in memory (forecast.nc, ensemble.nc); encodings from netcdf.py.

Variables are defined up front (compressed, chunked (1, 256, 256)), then filled region by region
as blocks finish, then renamed into place: a reader never sees a half-written file, and Ctrl-C
leaves nothing behind (vegediff_cli/atomic.py). Coordinates are the input cube's ``y``/``x``
values, copied bit for bit, and the CRS goes into a ``spatial_ref`` variable with the attributes
rioxarray writes (``crs_wkt``, ``spatial_ref``, ``GeoTransform``), which GDAL, QGIS and rioxarray read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine

from ..atomic import atomic_file
from ..config import REFLECTANCE_SCALE
from .netcdf import CHUNK_XY, chunk_cache, time_units
from .schema import with_crs

INT16_FILL = -32768
WRITE_CACHE_BYTES = 1 << 20  # per variable; one 256 x 256 float32 chunk is 256 KiB
READ_CACHE_BYTES = 4 << 20  # per variable read: a row of 256 x 256 int16 chunks of a tile is 2.7 MiB


@dataclass(frozen=True)
class VariableSpec:
    """One gridded variable of a streamed file."""

    name: str
    dims: tuple[str, ...]  # ending in ("y", "x"), e.g. ("member", "time", "y", "x")
    attrs: dict = field(default_factory=dict)  # long_name, units, ...
    dtype: str = "f4"  # "f4" (NaN = missing), "i2" (packed with `scale`), "u1"
    scale: float | None = None  # i2 only: stored = round(value / scale), INT16_FILL where NaN


def small_chunk_cache(size: int = READ_CACHE_BYTES) -> AbstractContextManager[None]:
    """A `size`-byte HDF5 chunk cache per variable for the files opened inside (cube/netcdf.py)."""
    return chunk_cache(size)


def float_var(name: str, dims: tuple[str, ...], long_name: str, units: str = "1") -> VariableSpec:
    return VariableSpec(name, dims, {"long_name": long_name, "units": units})


def packed_var(name: str, dims: tuple[str, ...], long_name: str, units: str = "1", scale: float = REFLECTANCE_SCALE) -> VariableSpec:
    """int16 x `scale`: half the size of float32, lossless at 1e-4 (Sentinel-2 and NDVI precision)."""
    return VariableSpec(name, dims, {"long_name": long_name, "units": units}, dtype="i2", scale=scale)


def grid_mapping_attrs(crs: object, transform: Affine) -> dict:
    """The ``spatial_ref`` attributes rioxarray writes for this CRS and transform."""
    probe = xr.DataArray(np.zeros((1, 1), "uint8"), dims=("y", "x")).rio.write_crs(crs).rio.write_transform(transform)
    return dict(probe.coords["spatial_ref"].attrs)


def _coord_attrs(da: xr.DataArray) -> dict:
    return {k: v for k, v in da.attrs.items() if isinstance(v, str | int | float) and not k.startswith("_")}


class GridWriter:
    """Writes regions of the variables of an open netCDF4 dataset."""

    def __init__(self, nc: netCDF4.Dataset, specs: Sequence[VariableSpec]) -> None:
        self._nc = nc
        self._specs = {spec.name: spec for spec in specs}

    def write(self, name: str, rows: slice, cols: slice, values: np.ndarray) -> None:
        """Write `values` (leading dims whole, then rows x cols) into variable `name`.

        Written one 2-D slice at a time, so packing never copies more than one (rows, cols) plane.
        """
        spec = self._specs[name]
        data = np.asarray(values)
        variable = self._nc.variables[name]
        for lead in np.ndindex(*data.shape[:-2]):
            variable[(*lead, rows, cols)] = self._pack(spec, data[lead])

    @staticmethod
    def _pack(spec: VariableSpec, plane: np.ndarray) -> np.ndarray:
        if spec.dtype == "i2":
            scaled = np.clip(np.round(plane / spec.scale), -32767, 32767)
            return np.where(np.isfinite(plane), scaled, INT16_FILL).astype("int16")
        return plane.astype("uint8" if spec.dtype == "u1" else "float32", copy=False)


@contextmanager
def grid_writer(
    path: str | os.PathLike,
    *,
    like: xr.Dataset,
    variables: Sequence[VariableSpec],
    coords: dict[str, np.ndarray],
    attrs: dict,
    complevel: int = 4,
) -> Iterator[GridWriter]:
    """Create `path` atomically with `like`'s grid and CRS, the given extra coordinates and variables.

    `coords` holds the non-grid axes: ``time`` (datetimes) and e.g. ``member``, ``threshold``.
    The file appears under its name only when the block exits without an exception.
    """
    crs = like.rio.crs
    transform = like.rio.transform(recalc=True)
    with atomic_file(path) as tmp:
        nc = netCDF4.Dataset(tmp, "w", format="NETCDF4")
        try:
            _define(nc, like, variables, coords, attrs, crs, transform, complevel)
            yield GridWriter(nc, variables)
        finally:
            nc.close()


def _define(nc, like, variables, coords, attrs, crs, transform, complevel) -> None:
    sizes = {"y": like.sizes["y"], "x": like.sizes["x"], **{k: len(v) for k, v in coords.items()}}
    for dim, size in sizes.items():
        nc.createDimension(dim, size)
    for axis in ("y", "x"):
        var = nc.createVariable(axis, "f8", (axis,))
        var[:] = np.asarray(like[axis].values, dtype="float64")  # bit for bit: pixel alignment with the input
        var.setncatts(_coord_attrs(like[axis]))
    for name, values in coords.items():
        if name == "time":
            var = nc.createVariable("time", "f8", ("time",))
            stamps = pd.DatetimeIndex(values)
            epoch = stamps[0].normalize()
            var[:] = (stamps - epoch) / pd.Timedelta(days=1)
            var.setncatts({"units": time_units(epoch), "calendar": "standard", "standard_name": "time",
                           "long_name": "forecast frame date", "axis": "T"})
            attrs = {**date_attrs(stamps), **attrs}
        else:
            array = np.asarray(values)
            var = nc.createVariable(name, "f8" if array.dtype.kind == "f" else "i4", (name,))
            var[:] = array
    ref = nc.createVariable("spatial_ref", "i4")
    ref.setncatts(grid_mapping_attrs(crs, transform) if crs is not None else {})
    for spec in variables:
        chunks = tuple(min(CHUNK_XY, sizes[d]) if d in ("y", "x") else 1 for d in spec.dims)
        fill = {"f4": np.float32(np.nan), "i2": np.int16(INT16_FILL), "u1": None}[spec.dtype]
        var = nc.createVariable(spec.name, spec.dtype, spec.dims, zlib=True, complevel=complevel, shuffle=True,
                                chunksizes=chunks, fill_value=fill if fill is not None else False)
        var.set_auto_maskandscale(False)  # GridWriter packs; readers unpack with scale_factor
        # Blocks write whole chunks once: a cache only holds memory (64 MiB per variable by default).
        var.set_var_chunk_cache(size=WRITE_CACHE_BYTES)
        packing = spec.scale is not None
        extra = {"scale_factor": np.float32(spec.scale), "add_offset": np.float32(0.0)} if packing else {}
        var.setncatts({**spec.attrs, **extra, "grid_mapping": "spatial_ref"})
    nc.setncatts({k: _attr(v) for k, v in attrs.items()})


def date_attrs(stamps: pd.DatetimeIndex) -> dict[str, str]:
    """The dates as text, for readers that show attributes but do not decode CF time (QGIS's layer info)."""
    return {"time_coverage_start": f"{stamps[0]:%Y-%m-%d}", "time_coverage_end": f"{stamps[-1]:%Y-%m-%d}",
            "frame_dates": " ".join(f"{d:%Y-%m-%d}" for d in stamps)}


def _attr(value: object) -> object:
    """NetCDF attributes are strings or numbers."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str | int | float | np.integer | np.floating):
        return value
    return str(value)


def open_grid(path: str | os.PathLike) -> xr.Dataset:
    """Open a streamed file lazily with its CRS attached (for COG export and checks)."""
    ds = xr.open_dataset(Path(path), engine="netcdf4", decode_coords="all")
    return with_crs(ds)

