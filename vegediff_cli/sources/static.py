"""Static layers (DEM, ESA WorldCover land cover) on a cube's grid, from local GeoTIFFs or a STAC API.

Local files are read through a GDAL warped VRT onto the target grid, so only the source blocks
under the cube are read and any CRS is reprojected (bilinear for elevation, nearest neighbour
for classes). STAC: ``cop-dem-glo-30`` and ``esa-worldcover`` (Planetary Computer names) are
searched by the cube's footprint (sources/stac.search_items: fetch's retries and bounds) and their
COGs mosaicked onto the grid with odc-stac; on the Planetary Computer sources/signing.py signs the
asset URLs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

from ..errors import CorruptInputError, GeoreferenceError, InputNotFoundError, RemoteError, VegediffError
from ..geo import GridSpec
from ..redact import redact
from .hrefs import DEFAULT_SCHEMES, check_href
from .http import RetryPolicy

log = logging.getLogger("vegediff.static")


@dataclass(frozen=True)
class StaticLayer:
    """How one cube layer is found and resampled."""

    name: str  # cube variable (GreenEarthNet name)
    categorical: bool  # classes: nearest neighbour and nodata 0; else bilinear and NaN
    collection: str  # STAC collection id (Planetary Computer naming)
    assets: tuple[str, ...]  # asset keys to try, in order


DEM = StaticLayer("cop_dem", False, "cop-dem-glo-30", ("data", "elevation", "dem"))
LANDCOVER = StaticLayer("esawc_lc", True, "esa-worldcover", ("map", "data", "classification"))
STAC_LAYERS: tuple[StaticLayer, ...] = (DEM, LANDCOVER)


def _resampling(layer: StaticLayer) -> Resampling:
    return Resampling.nearest if layer.categorical else Resampling.bilinear


def _covered(values: np.ndarray, layer: StaticLayer, origin: str, notes: list[str]) -> np.ndarray:
    """Error when the layer misses the cube entirely; a note when it covers part of it."""
    share = float(np.isfinite(values).mean()) if values.size else 0.0
    if share == 0.0:
        raise GeoreferenceError(f"{layer.name} from {origin} does not overlap the cube",
                                fix="pass a layer that covers the cube's area (check its CRS and extent)")
    if share < 0.999:
        message = f"{layer.name} from {origin} covers {share:.1%} of the cube; the rest is no data"
        log.warning(message)
        notes.append(message)
    return values


def read_local_layer(path: str | os.PathLike, grid: GridSpec, layer: StaticLayer, *, notes: list[str]) -> np.ndarray:
    """A single-band GeoTIFF resampled onto `grid` as float32 (H, W), NaN = no data."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path} does not exist", fix=f"check the path given for {layer.name}")
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise GeoreferenceError(f"{path} has no CRS",
                                        fix="assign one, e.g. `gdal_edit.py -a_srs EPSG:4326 FILE`, then retry")
            floating = np.dtype(src.dtypes[0]).kind == "f"
            nodata = src.nodata if src.nodata is not None else (0 if layer.categorical else np.nan if floating else -32768)
            if CRS.from_user_input(grid.crs) != src.crs:
                log.info("%s: reprojecting %s from %s to %s", layer.name, path.name, src.crs.to_string(), grid.crs)
            with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                           resampling=_resampling(layer), src_nodata=nodata, nodata=nodata) as vrt:
                values = vrt.read(1, masked=True).astype("float32").filled(np.nan)
    except RasterioIOError as exc:
        raise CorruptInputError(f"{path} is not a readable GeoTIFF ({exc})", fix="re-download or re-export it") from exc
    if layer.categorical:
        values[values == 0] = np.nan  # WorldCover: 0 = no data
    return _covered(values, layer, path.name, notes)


def read_stac_layers(
    url: str, grid: GridSpec, *, layers: tuple[StaticLayer, ...] = STAC_LAYERS, notes: list[str],
    href_schemes: tuple[str, ...] = DEFAULT_SCHEMES, policy: RetryPolicy = RetryPolicy(attempts=3),
) -> dict[str, np.ndarray]:
    """Search a STAC API for each layer's collection over the grid and mosaic it onto the grid.

    Layers whose collection has no item over the cube are left out (and noted); the caller
    records them as missing. Server failures raise RemoteError. Requests follow fetch's retry
    policy and bounds (sources/http.py, sources/stac.py); asset hrefs are checked before any read
    (sources/hrefs.py).
    """
    from odc.geo.geobox import GeoBox
    from odc.stac import load

    from .signing import SasSigner
    from .stac import search_items, signs_assets

    sign = SasSigner(policy=policy) if signs_assets(url) else None  # Planetary Computer: short-lived SAS tokens
    bbox = transform_bounds(CRS.from_user_input(grid.crs), CRS.from_epsg(4326), *grid.bounds, densify_pts=21)
    geobox = GeoBox((grid.height, grid.width), grid.transform, grid.crs)
    shown = redact(url)
    found: dict[str, np.ndarray] = {}
    for layer in layers:
        try:
            items = search_items(url, {"collections": [layer.collection], "bbox": list(bbox), "max_items": 100},
                                 policy=policy)
        except RemoteError as exc:
            raise RemoteError(f"STAC search of {layer.collection} at {shown} failed ({exc.problem})",
                              fix="retry later, or pass local files with `dem` / `landcover`") from exc
        except VegediffError:
            raise
        except (OSError, ValueError) as exc:
            raise RemoteError(f"STAC search of {layer.collection} at {shown} failed ({redact(str(exc)[:160])})",
                              fix="retry later, or pass local files with `dem` / `landcover`") from exc
        if not items:
            message = f"no {layer.collection} item at {shown} covers the cube: {layer.name} left out"
            log.warning(message)
            notes.append(message)
            continue
        asset = next((key for key in layer.assets if key in items[0].assets), None)
        if asset is None:
            raise RemoteError(f"{layer.collection} items at {shown} have none of the assets {', '.join(layer.assets)}",
                              fix="use a STAC API with Planetary Computer style collections")
        for item in items:  # odc-stac reads exactly these hrefs: check (and resolve) them first
            if asset in item.assets:
                href = check_href(item.assets[asset].href, schemes=href_schemes, base=item.get_self_href(),
                                  what=f"STAC item {item.id} asset {asset}")
                item.assets[asset].href = sign(href) if sign is not None else href
        try:
            data = load(items, bands=[asset], geobox=geobox, resampling=_resampling(layer).name,
                        groupby="solar_day", fail_on_error=True)[asset]
        except Exception as exc:  # odc-stac/rasterio raise many types for unreachable or broken COGs
            raise RemoteError(f"reading {layer.collection} COGs failed ({type(exc).__name__}: {redact(str(exc)[:160])})",
                              fix="retry later, or pass local files with `dem` / `landcover`") from exc
        nodata = data.attrs.get("nodata")
        mosaic = np.full((grid.height, grid.width), np.nan, dtype="float32")
        for step in range(data.sizes["time"]):  # later items (newer WorldCover versions) win
            values = np.asarray(data.isel(time=step).values, dtype="float32")
            if nodata is not None:
                values[values == nodata] = np.nan
            if layer.categorical:
                values[values == 0] = np.nan
            mosaic = np.where(np.isfinite(values), values, mosaic)
        found[layer.name] = _covered(mosaic, layer, f"{shown} ({layer.collection})", notes)
    return found
