"""Sentinel-2 L2A pixels onto the cube grid: B02, B03, B04, B8A reflectance and SCL at 20 m.

One acquisition (the granules of one day) becomes one lazy, dask-backed frame:

- odc-stac plans COG window reads onto the grid (``chunk`` x ``chunk`` pixel blocks, so a
  5490 x 5490 tile never sits in memory); 10 m bands are averaged to 20 m, SCL is resampled
  with nearest neighbour;
- digital numbers become reflectance per item: ``(DN - 1000) / 10000`` for processing
  baseline 04.00 and later (ESA's BOA_ADD_OFFSET, from 2022-01-25), ``DN / 10000`` before.
  The rule reads ``s2:processing_baseline``, never the date, and skips the offset when the
  provider has already removed it (``earthsearch:boa_offset_applied``);
- granules of the same day are fused: per pixel, the first granule with data supplies all
  bands and SCL, so a pixel never mixes two granules;
- ``valid_mask`` follows GreenEarthNet (``cube.masks.clear_from_scl``) and needs all 4 bands.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import odc.stac
import pandas as pd
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox

from ..config import BANDS, DEFAULT_CLEAR_SCL, REFLECTANCE_SCALE, SCL, VALID
from ..cube.masks import clear_from_scl
from ..cube.schema import BAND_LONG_NAMES, grid_coords
from ..geo import GridSpec
from .cogs import RetryingDriver
from .stac import REFLECTANCE_ASSETS, Acquisition, SceneItem

BOA_ADD_OFFSET = 1000  # DN added to L2A reflectance from processing baseline 04.00 on
OFFSET_BASELINE = (4, 0)
DEFAULT_CHUNK = 1024  # pixels per side of one read/write block (about 4 MB per band as float32)

# Band layout for odc-stac (a single-collection config, applied whatever the item's collection):
# uint16 DN with 0 = no data for reflectance, uint8 classes for SCL.
_STAC_CFG: dict[str, Any] = {
    "assets": {
        **{band: {"data_type": "uint16", "nodata": 0} for band in REFLECTANCE_ASSETS},
        "SCL": {"data_type": "uint8", "nodata": 0},
    },
    "warnings": "ignore",
}
_COG = "image/tiff; application=geotiff; profile=cloud-optimized"


def dn_offset(scene: SceneItem) -> int:
    """DN to subtract before scaling: 1000 for baseline >= 04.00 unless already removed."""
    if scene.boa_offset_applied:
        return 0
    return BOA_ADD_OFFSET if scene.baseline_version >= OFFSET_BASELINE else 0


def geobox(grid: GridSpec) -> GeoBox:
    return GeoBox((grid.height, grid.width), grid.transform, grid.crs)


def _odc_item(scene: SceneItem) -> pystac.Item:
    """A minimal item with canonical asset names; odc-stac takes the pixel grid from the COGs."""
    item = pystac.Item(id=scene.id, geometry=scene.geometry, bbox=list(scene.bbox), datetime=scene.datetime,
                       properties={})
    for band, href in scene.hrefs.items():
        item.add_asset(band, pystac.Asset(href=href, media_type=_COG, roles=["data"]))
    return item


def load_acquisition(
    acquisition: Acquisition,
    grid: GridSpec,
    *,
    driver: RetryingDriver,
    chunk: int = DEFAULT_CHUNK,
    clear_classes: tuple[int, ...] = DEFAULT_CLEAR_SCL,
) -> xr.Dataset:
    """One lazy frame (time = 1, y, x) of s2_B02..s2_B8A (float32 reflectance), s2_SCL, valid_mask."""
    raw = odc.stac.load(
        [_odc_item(scene) for scene in acquisition.items],
        bands=[*REFLECTANCE_ASSETS, "SCL"],
        geobox=geobox(grid),
        chunks={"time": 1, "y": chunk, "x": chunk},
        groupby="id",
        preserve_original_order=True,
        resampling={"*": "average", "SCL": "nearest"},
        stac_cfg=_STAC_CFG,
        driver=driver,
    )  # (granule, y, x) per band, as delivered: uint16 DN and uint8 SCL, 0 = no data
    offsets = xr.DataArray(np.array([dn_offset(s) for s in acquisition.items], dtype="float32"), dims="time")
    reflectance = {
        band: ((raw[band].astype("float32") - offsets) * np.float32(REFLECTANCE_SCALE)).where(raw[band] > 0)
        for band in REFLECTANCE_ASSETS
    }
    has_data = (raw["SCL"] > 0) | reduce_or([reflectance[b].notnull() for b in REFLECTANCE_ASSETS])
    fused = {f"s2_{b}": _first_with_data(reflectance[b], has_data) for b in REFLECTANCE_ASSETS}
    fused[SCL] = _first_with_data(raw["SCL"], has_data)
    valid = xr.apply_ufunc(
        _valid, *(fused[b] for b in BANDS), fused[SCL],
        kwargs={"clear_classes": clear_classes}, dask="parallelized", output_dtypes=[np.uint8],
    )
    y, x = grid_coords(grid)
    frame = xr.Dataset(
        {
            **{name: fused[name].astype("float32").assign_attrs(long_name=BAND_LONG_NAMES[name], units="1")
               for name in BANDS},
            SCL: fused[SCL].astype("uint8").assign_attrs(long_name="Sentinel-2 scene classification (SCL)"),
            VALID: valid.assign_attrs(long_name="clear-sky valid observation flag",
                                      clear_scl_classes=" ".join(map(str, clear_classes))),
        }
    )
    frame = frame.drop_vars([c for c in frame.coords if c not in ("y", "x")])
    frame = frame.assign_coords(y=y, x=x).expand_dims(time=pd.DatetimeIndex([pd.Timestamp(acquisition.day)]))
    return frame.transpose("time", "y", "x")


def reduce_or(masks: list[xr.DataArray]) -> xr.DataArray:
    out = masks[0]
    for mask in masks[1:]:
        out = out | mask
    return out


def _first_with_data(values: xr.DataArray, has_data: xr.DataArray) -> xr.DataArray:
    """Per pixel, the value of the first granule (along `time`) that has data there."""
    out = values.isel(time=0, drop=True)
    taken = has_data.isel(time=0, drop=True)
    for t in range(1, values.sizes["time"]):
        use = has_data.isel(time=t, drop=True) & ~taken
        out = xr.where(use, values.isel(time=t, drop=True), out)
        taken = taken | use
    return out


def _valid(b02: np.ndarray, b03: np.ndarray, b04: np.ndarray, b8a: np.ndarray, scl: np.ndarray, *,
           clear_classes: tuple[int, ...]) -> np.ndarray:
    finite = np.isfinite(b02) & np.isfinite(b03) & np.isfinite(b04) & np.isfinite(b8a)
    return (finite & clear_from_scl(scl, clear_classes=clear_classes)).astype(np.uint8)
