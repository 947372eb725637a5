"""NetCDF4 writer: compressed, chunked, CF time, CRS for GDAL/QGIS; atomic."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..atomic import atomic_file
from ..config import BANDS, DLMASK, GEOMORPHONS, LANDCOVER, REFLECTANCE_SCALE, SCL, VALID

# Reflectance as int16 x 1e-4 halves the file size and is lossless at Sentinel-2's precision.
_REFLECTANCE = {"dtype": "int16", "scale_factor": REFLECTANCE_SCALE, "add_offset": 0.0, "_FillValue": -32768}
_CLASS_UINT8 = {"dtype": "uint8", "_FillValue": 0}  # class 0 is "no data" in SCL and WorldCover
_MASK_UINT8 = {"dtype": "uint8", "_FillValue": 255}
TIME_UNITS = "days since {epoch:%Y-%m-%d} 00:00:00"  # CF time counted from the first date of the file
CHUNK_XY = 256


@contextmanager
def chunk_cache(size: int) -> Iterator[None]:
    """Files opened or created inside get a `size`-byte HDF5 chunk cache per variable (default 64 MiB).

    Steps that stream a file block by block read or write each chunk once, so large caches
    only hold memory (about 15 variables x 64 MiB would be ~1 GiB).
    """
    import netCDF4

    previous = netCDF4.get_chunk_cache()
    netCDF4.set_chunk_cache(size, previous[1], previous[2])
    try:
        yield
    finally:
        netCDF4.set_chunk_cache(*previous)


def _chunks(da: xr.DataArray) -> tuple[int, ...]:
    """One time step and up to 256 x 256 pixels per chunk: fast windowed reads."""
    return tuple(
        min(CHUNK_XY, size) if dim in ("y", "x") else 1 if dim in ("time", "member") else size
        for dim, size in zip(da.dims, da.shape, strict=False)
    )


def time_units(epoch: pd.Timestamp) -> str:
    """CF units counted in days from the file's first date.

    GDAL (and so QGIS's raster view of the NetCDF) names each band by its raw time value and
    units: "time=5 (days since 2017-11-21 00:00:00)" says the date; "time=17496 (days since
    1970-01-01 ...)" did not. QGIS's mesh reader (MDAL) and xarray decode either form to dates.
    """
    return TIME_UNITS.format(epoch=epoch)


def encoding_for(ds: xr.Dataset, *, complevel: int = 4) -> dict[str, dict]:
    """Per-variable encoding: compression everywhere, compact dtypes where lossless."""
    encoding: dict[str, dict] = {}
    for name, da in ds.data_vars.items():
        if name == "spatial_ref" or da.ndim == 0:
            continue
        enc: dict = {"zlib": True, "complevel": complevel, "shuffle": True}
        if da.ndim:
            enc["chunksizes"] = _chunks(da)
        if name in BANDS:
            enc.update(_REFLECTANCE)
        elif name in (SCL, LANDCOVER, GEOMORPHONS):
            enc.update(_CLASS_UINT8)
        elif name in (VALID, DLMASK):
            enc.update(_MASK_UINT8 if name == DLMASK else {"dtype": "uint8"})
        elif np.issubdtype(da.dtype, np.floating):
            enc.update({"dtype": "float32", "_FillValue": np.float32(np.nan)})
        encoding[name] = enc
    for name, coord in ds.coords.items():
        # Text coordinates (meteorology `stat`) as fixed-width characters, not HDF5 variable-length
        # strings: opening a file with a vlen string variable can crash netCDF4's HDF5 (segfault in
        # H5T__vlen_disk_isnull while it reads the variable's fill value, depending on heap state).
        if coord.dtype.kind in "OU":
            encoding[name] = {"dtype": "S1"}
    if "time" in ds.coords:
        times = pd.DatetimeIndex(ds["time"].values)
        epoch = times[0].normalize() if len(times) else pd.Timestamp("1970-01-01")
        encoding["time"] = {"units": time_units(epoch), "calendar": "standard", "dtype": "float64"}
    return encoding


def _prepare(ds: xr.Dataset) -> xr.Dataset:
    """Clip reflectance to the int16 range (no wrap-around) and pin every raster to spatial_ref.

    The grid_mapping attribute is written explicitly: explicit encodings replace the ones
    rioxarray keeps in ``.encoding``, and without it GDAL/QGIS would not see the CRS.
    """
    out = ds.copy()
    for name in BANDS:
        if name in out:
            out[name] = out[name].clip(-3.2767, 3.2767, keep_attrs=True)
    if "spatial_ref" in out.variables:
        for da in out.data_vars.values():
            if {"y", "x"} <= set(da.dims):
                da.encoding.pop("grid_mapping", None)
                da.attrs["grid_mapping"] = "spatial_ref"
    return out


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike, *, complevel: int = 4) -> Path:
    """Write `ds` to `path` atomically (temp file + rename); returns the path."""
    final = Path(path)
    if ds.rio.crs is not None and {"x", "y"} <= set(ds.dims):
        ds = ds.rio.write_transform(ds.rio.transform(recalc=True))
    ds = _prepare(ds)
    with atomic_file(final) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding_for(ds, complevel=complevel))
    return final
