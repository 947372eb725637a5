"""Multi-band Sentinel-2 L2A GeoTIFF scenes (e.g. Google Earth Engine exports) -> lazy datasets.

One file holds one acquisition: bands named by their descriptions (``B2``/``B02``, ``B3``,
``B4``, ``B8A``, ``SCL``; other bands are ignored), integer reflectance x 1e4 with 0 = no data
(float files are taken as reflectance 0-1), the acquisition date in the file name
(``YYYY-MM-DD`` or ``YYYYMMDD``) or else in a band named ``date`` (days since 1970-01-01, as
GEE exports write it). Reflectance must already be harmonised to processing baselines < 04.00
(GEE's ``S2_SR_HARMONIZED``; for 2021 and earlier scenes no offset was ever applied).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import rioxarray
import xarray as xr
from affine import Affine
from rasterio.errors import RasterioIOError

from ..config import BANDS, REFLECTANCE_SCALE, SCL
from ..errors import CorruptInputError, GeoreferenceError, InputNotFoundError, MissingVariableError, UsageError
from ..geo import GridSpec

# Cube variable -> band descriptions that hold it (compared case-insensitively).
BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "s2_B02": ("B02", "B2", "blue"),
    "s2_B03": ("B03", "B3", "green"),
    "s2_B04": ("B04", "B4", "red"),
    "s2_B8A": ("B8A", "nir08", "rededge4"),
    SCL: ("SCL", "scl"),
}
_DATE_RE = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")


@dataclass(frozen=True)
class SceneFile:
    """What one GeoTIFF scene holds and where, read from its metadata only."""

    path: Path
    date: pd.Timestamp  # acquisition day (UTC)
    band_index: dict[str, int]  # cube variable -> 1-based band index in the file
    grid: GridSpec  # the file's own grid
    scale: float  # reflectance = value * scale; 1e-4 for integer files, 1 for float files
    nodata: float | None  # the file's declared nodata value, besides 0


def _date_from_name(path: Path) -> pd.Timestamp | None:
    for match in _DATE_RE.finditer(path.stem):
        try:
            return pd.Timestamp(f"{match.group(1)}-{match.group(2)}-{match.group(3)}")
        except ValueError:
            continue
    return None


def _date_from_band(src: rasterio.DatasetReader, index: int) -> pd.Timestamp | None:
    """The most common non-zero value of the `date` band, read at low resolution (it is constant)."""
    out_shape = (min(src.height, 256), min(src.width, 256))
    values = src.read(index, out_shape=out_shape, resampling=rasterio.enums.Resampling.nearest)
    values = values[values > 0]
    if values.size == 0:
        return None
    days, counts = np.unique(values, return_counts=True)
    return pd.Timestamp("1970-01-01") + pd.Timedelta(days=int(days[np.argmax(counts)]))


def inspect_scene(path: str | os.PathLike) -> SceneFile:
    """Metadata of one scene: band positions, date, grid; clear errors for everything missing."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"scene {path} does not exist", fix="check the paths given to `scenes`")
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise GeoreferenceError(f"scene {path} has no CRS",
                                        fix="assign one, e.g. `gdal_edit.py -a_srs EPSG:32629 FILE`, then retry")
            names = [(d or "").strip().lower() for d in src.descriptions]
            band_index: dict[str, int] = {}
            for var, aliases in BAND_ALIASES.items():
                for alias in aliases:
                    if alias.lower() in names:
                        band_index[var] = names.index(alias.lower()) + 1
                        break
            missing = [v.removeprefix("s2_") for v in (*BANDS, SCL) if v not in band_index]
            if missing:
                raise MissingVariableError(
                    f"scene {path.name} lacks band(s) {', '.join(missing)} (band descriptions: "
                    f"{', '.join(d or '?' for d in src.descriptions[:16])})",
                    fix="export B2, B3, B4, B8A and SCL with their names as band descriptions",
                )
            date = _date_from_name(path)
            if date is None and "date" in names:
                date = _date_from_band(src, names.index("date") + 1)
            if date is None:
                raise UsageError(f"cannot tell the acquisition date of scene {path.name}",
                                 fix="put the date in the file name (YYYY-MM-DD) or add a 'date' band")
            dtype = np.dtype(src.dtypes[band_index["s2_B04"] - 1])
            nodata = src.nodata
            grid = GridSpec(crs=src.crs.to_string(), transform=src.transform, width=src.width, height=src.height)
    except RasterioIOError as exc:
        raise CorruptInputError(f"scene {path} is not a readable GeoTIFF ({exc})", fix="re-export or re-download it") from exc
    if abs(grid.transform.b) > 1e-9 or abs(grid.transform.d) > 1e-9:
        raise GeoreferenceError(f"scene {path.name} is rotated ({grid.transform})", fix="warp it north-up with gdalwarp")
    scale = REFLECTANCE_SCALE if np.issubdtype(dtype, np.integer) else 1.0
    return SceneFile(path=path, date=date.normalize(), band_index=band_index, grid=grid, scale=scale, nodata=nodata)


def inspect_scenes(paths: Sequence[str | os.PathLike]) -> list[SceneFile]:
    """All scenes, sorted by date; at least one is required."""
    if not paths:
        raise UsageError("no scenes given", fix="pass GeoTIFF files to `scenes`")
    return sorted((inspect_scene(p) for p in paths), key=lambda s: (s.date, str(s.path)))


def read_scene(scene: SceneFile, *, chunk_px: int = 1024) -> xr.Dataset:
    """A lazy (y, x) dataset of the scene on its own grid: reflectance (NaN = no data) and SCL (0 = no data)."""
    try:
        raw = rioxarray.open_rasterio(scene.path, chunks={"band": 1, "y": chunk_px, "x": chunk_px}, lock=False,
                                      cache=False)
    except (RasterioIOError, OSError) as exc:
        raise CorruptInputError(f"scene {scene.path} could not be read ({exc})", fix="re-export or re-download it") from exc
    y = np.asarray(scene.grid.y_coords())
    x = np.asarray(scene.grid.x_coords())
    data_vars = {}
    for var, index in scene.band_index.items():
        values = raw.isel(band=index - 1).drop_vars(["band", "spatial_ref"], errors="ignore").astype("float32")
        if scene.nodata is not None and scene.nodata != 0:
            values = values.where(values != np.float32(scene.nodata))
        if var == SCL:
            values = values.fillna(0.0)
        else:
            values = values.where(values != 0) * np.float32(scene.scale)  # 0 = no data in L2A products
        data_vars[var] = values.assign_coords(y=y, x=x)
    ds = xr.Dataset(data_vars)
    return ds.rio.write_crs(scene.grid.crs).rio.write_transform(Affine(*scene.grid.transform[:6]))
