"""Open anything the tool accepts as a cube; one entry point, errors that say what to do.

Accepted: this project's cube (NetCDF), GreenEarthNet / EarthNet2021x minicubes (NetCDF,
lat/lon, daily time) and EarthNet2021 ``.npz`` samples. GeoTIFF rasters (static layers,
single scenes) are read by :func:`read_raster`.
"""

from __future__ import annotations

import os
from pathlib import Path

import rasterio
import rioxarray  # noqa: F401
import xarray as xr
from rasterio.errors import RasterioIOError

from ..config import BANDS
from ..errors import CorruptInputError, GeoreferenceError, InputNotFoundError, MissingVariableError
from ..workdir import check_encodable
from . import earthnet2021, greenearthnet, schema
from .schema import with_crs

NETCDF_SUFFIXES = {".nc", ".nc4", ".netcdf", ".cdf"}
GEOTIFF_SUFFIXES = {".tif", ".tiff"}


def _check_exists(path: Path) -> None:
    check_encodable(path, role="input")
    if not path.exists():
        raise InputNotFoundError(f"{path} does not exist", fix="check the path, or run the previous step first")
    if path.is_dir():
        raise InputNotFoundError(f"{path} is a folder, not a file", fix="pass the cube file inside it")


def open_netcdf(path: str | os.PathLike, *, load: bool = False) -> xr.Dataset:
    """Open a NetCDF file, turning library errors into a one-line CorruptInputError."""
    path = Path(path)
    _check_exists(path)
    try:
        ds = xr.open_dataset(path, engine="netcdf4", decode_coords="all")
        if load:
            ds = ds.load()
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptInputError(
            f"{path} is not a readable NetCDF file ({reason[:160]})",
            fix="the file may be truncated: delete it and re-run the step that made it",
        ) from exc
    return ds


def open_cube(path: str | os.PathLike) -> xr.Dataset:
    """Read `path` into the vegediff cube model (see cube/schema.py) and validate it."""
    path = Path(path)
    _check_exists(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return schema.validate(earthnet2021.read_sample(path), source=str(path))
    if suffix in GEOTIFF_SUFFIXES:
        raise CorruptInputError(
            f"{path} is a GeoTIFF, not a cube",
            fix="build a cube from GeoTIFF scenes with `vegediff prepare --scenes ...`",
        )
    raw = open_netcdf(path)
    try:
        if "vegediff_cube_version" in raw.attrs:
            return schema.validate(_own_cube(raw), source=str(path))
        if greenearthnet.is_minicube(raw):
            schema.require(raw, BANDS, what="band(s)", source=str(path),
                           fix="GreenEarthNet minicubes carry s2_B02, s2_B03, s2_B04 and s2_B8A")
            _check_loadable(raw, path)
            with raw:
                cube = greenearthnet.minicube_to_cube(raw.load(), path=path)
            return schema.validate(cube, source=str(path))
    except (OSError, RuntimeError) as exc:  # HDF5 errors surface on first data access
        raise CorruptInputError(
            f"{path} could not be read to the end ({str(exc).splitlines()[0][:160]})",
            fix="the file may be truncated: delete it and re-run the step that made it",
        ) from exc
    if "ndvi_pred" in raw:
        raise MissingVariableError(
            f"{path} is a prediction file (ndvi_pred), not a cube with reflectance bands",
            fix="pass it to `vegediff evaluate --forecast` instead",
        )
    missing = [b for b in BANDS if b not in raw]
    raise MissingVariableError(
        f"{path} is neither a vegediff cube nor a GreenEarthNet minicube (missing {', '.join(missing) or 'attributes'})",
        fix="create a cube with `vegediff fetch` and `vegediff prepare`",
    )


MINICUBE_MAX_BYTES = 2 << 30  # a GreenEarthNet minicube is read whole: 128 x 128 px, ~450 days (~0.5 GB)


def _check_loadable(raw: xr.Dataset, path: Path) -> None:
    """A minicube is loaded into memory: refuse one whose declared (decompressed) size is not a minicube's.

    A 2 MB file of zeros compresses a grid of many GB; loading it would exhaust the memory."""
    declared = sum(int(v.size) * v.dtype.itemsize for v in raw.variables.values())
    if declared > MINICUBE_MAX_BYTES:
        raise CorruptInputError(
            f"{path} declares {declared / 2**30:.1f} GiB of data once decompressed, far more than a GreenEarthNet "
            f"minicube (at most {MINICUBE_MAX_BYTES / 2**30:.0f} GiB)",
            fix="pass a real minicube, or turn large data into a vegediff cube with `vegediff prepare`")


def _own_cube(raw: xr.Dataset) -> xr.Dataset:
    """Our own cube: lazily backed; decode the CRS from spatial_ref."""
    return with_crs(raw)


def read_raster(path: str | os.PathLike, *, band: int | None = None) -> xr.DataArray:
    """Read a GeoTIFF as a (band, y, x) DataArray; a missing CRS is an error, not a guess."""
    path = Path(path)
    _check_exists(path)
    try:
        with rasterio.open(path) as src:
            crs = src.crs
            descriptions = src.descriptions
    except RasterioIOError as exc:
        raise CorruptInputError(f"{path} is not a readable GeoTIFF ({exc})", fix="re-download or re-export it") from exc
    if crs is None:
        raise GeoreferenceError(
            f"{path} has no CRS",
            fix="assign one, e.g. `gdal_edit.py -a_srs EPSG:32632 FILE`, then retry",
        )
    try:
        da = rioxarray.open_rasterio(path, masked=True)
        da = da.load()
    except (RasterioIOError, OSError) as exc:
        raise CorruptInputError(f"{path} could not be read ({exc})", fix="re-download or re-export it") from exc
    if descriptions and any(descriptions):
        da = da.assign_coords(band_name=("band", [d or str(i + 1) for i, d in enumerate(descriptions)]))
    if band is not None:
        da = da.sel(band=band)
    return da


