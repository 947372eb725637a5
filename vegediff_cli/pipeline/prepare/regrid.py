"""Put rasters on the cube's grid: target grids (native or ``--like``), lazy frame-wise reprojection.

Reprojection runs per time step inside dask: each task crops the source to the target's
footprint (plus a margin for the resampling kernel), warps that window with GDAL (rasterio) and
returns the target-sized frame, so memory is bounded by one source window and one target frame
per worker thread. Reflectance is resampled bilinearly (as GreenEarthNet's minicuber does),
class layers (SCL, dlmask, land cover) with nearest neighbour.

Why not odc-geo's ``xr_reproject`` (installed with odc-stac)? It warps each destination chunk on its
own, and GDAL's approximate transformer is then fitted per chunk: on a Sentinel-2 scene warped
from UTM 29N to 30N in 48 px chunks, 54 % of the bilinear values differed from the whole-frame warp
(up to 1.35 DN) and 0.02 % of the nearest-neighbour SCL classes changed; with one chunk the two are
bit-identical. Cubes would then depend on --chunk-px, so the whole frame is warped here, once.
"""

from __future__ import annotations

import math
import warnings

import dask.array as dsa
import numpy as np
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import Resampling, reproject, transform_bounds

from ...config import DLMASK, GEOMORPHONS, LANDCOVER, SCL, VALID
from ...cube.schema import TargetGrid
from ...errors import GeoreferenceError
from ...geo import GridSpec

# rasterio warns "Dataset has no geotransform" at random in threaded in-memory warps although the
# output is right (opendatacube/odc-geo#131). A process-wide filter, limited to rasterio.warp:
# catch_warnings() is not thread-safe.
warnings.filterwarnings("ignore", message="Dataset has no geotransform", category=NotGeoreferencedWarning,
                        module=r"rasterio\.warp")

NEAREST_VARS = frozenset({SCL, DLMASK, VALID, LANDCOVER, GEOMORPHONS})
MARGIN_PX = 3  # source pixels kept around the target footprint for the resampling kernel


def resampling_for(name: str) -> Resampling:
    return Resampling.nearest if name in NEAREST_VARS else Resampling.bilinear


def _source_window(src: GridSpec, dst: GridSpec) -> tuple[slice, slice] | None:
    """Rows and columns of `src` that cover `dst` (plus a margin), or None when they do not overlap."""
    left, bottom, right, top = transform_bounds(CRS.from_user_input(dst.crs), CRS.from_user_input(src.crs), *dst.bounds,
                                                densify_pts=21)
    inverse = ~src.transform
    cols, rows = zip(*(inverse @ (x, y) for x, y in ((left, top), (right, top), (left, bottom), (right, bottom))),
                     strict=True)
    col0 = max(0, math.floor(min(cols)) - MARGIN_PX)
    col1 = min(src.width, math.ceil(max(cols)) + MARGIN_PX)
    row0 = max(0, math.floor(min(rows)) - MARGIN_PX)
    row1 = min(src.height, math.ceil(max(rows)) + MARGIN_PX)
    if col0 >= col1 or row0 >= row1:
        return None
    return slice(row0, row1), slice(col0, col1)


def _warp_block(block: np.ndarray, *, src_transform: Affine, src_crs: str, dst: GridSpec, resampling: Resampling,
                nodata: float) -> np.ndarray:
    """Warp the (..., rows, cols) source block to the (..., H, W) target grid."""
    lead = block.shape[:-2]
    source = block.reshape((-1, *block.shape[-2:])).astype("float32")
    out = np.full((source.shape[0], dst.height, dst.width), nodata, dtype="float32")
    for i in range(source.shape[0]):
        reproject(
            source[i], out[i], src_transform=src_transform, src_crs=src_crs, dst_transform=dst.transform,
            dst_crs=dst.crs, resampling=resampling, src_nodata=nodata, dst_nodata=nodata,
        )
    return out.reshape((*lead, dst.height, dst.width))


def reproject_variable(da: xr.DataArray, src: GridSpec, target: TargetGrid, *, name: str, chunk_px: int) -> xr.DataArray:
    """Lazily warp a (..., y, x) variable from grid `src` to `target`, one leading index per task."""
    resampling = resampling_for(name)
    nodata = 0.0 if name in (SCL, LANDCOVER, GEOMORPHONS) else 255.0 if name == DLMASK else np.nan
    window = _source_window(src, target.grid)
    lead_dims = [d for d in da.dims if d not in ("y", "x")]
    lead_shape = tuple(da.sizes[d] for d in lead_dims)
    if window is None:
        empty = dsa.full((*lead_shape, target.grid.height, target.grid.width), nodata, dtype="float32",
                         chunks=(*(1,) * len(lead_dims), chunk_px, chunk_px))
        return xr.DataArray(empty, dims=(*lead_dims, "y", "x"), coords={**{d: da[d] for d in lead_dims if d in da.coords},
                                                                       "y": target.y, "x": target.x}, attrs=da.attrs)
    rows, cols = window
    cropped = da.transpose(*lead_dims, "y", "x").isel(y=rows, x=cols)
    src_transform = src.transform @ Affine.translation(cols.start, rows.start)
    data = cropped.data if isinstance(cropped.data, dsa.Array) else dsa.from_array(cropped.values)
    data = data.astype("float32")
    if name not in NEAREST_VARS:
        data = dsa.where(dsa.isfinite(data), data, np.float32(nodata))
    data = data.rechunk((*(1,) * len(lead_dims), -1, -1))
    warped = data.map_blocks(
        _warp_block, src_transform=src_transform, src_crs=src.crs, dst=target.grid, resampling=resampling, nodata=nodata,
        chunks=(*(1,) * len(lead_dims), (target.grid.height,), (target.grid.width,)), dtype="float32",
        meta=np.empty((0,) * data.ndim, dtype="float32"),
    )
    warped = warped.rechunk((*(1,) * len(lead_dims), chunk_px, chunk_px))
    coords = {d: da[d] for d in lead_dims if d in da.coords}
    return xr.DataArray(warped, dims=(*lead_dims, "y", "x"), coords={**coords, "y": target.y, "x": target.x},
                        attrs=da.attrs)


def reproject_dataset(ds: xr.Dataset, src: GridSpec, target: TargetGrid, *, chunk_px: int = 1024) -> xr.Dataset:
    """Every (..., y, x) variable of `ds` warped to `target`; other variables are kept as they are."""
    if _source_window(src, target.grid) is None:
        raise GeoreferenceError(
            f"the input grid ({src.crs}, bounds {tuple(round(b, 3) for b in src.bounds)}) does not overlap the target "
            f"grid ({target.grid.crs}, bounds {tuple(round(b, 3) for b in target.grid.bounds)})",
            fix="pass a `like` cube (or scenes) of the same area",
        )
    out = xr.Dataset(coords={"y": target.y, "x": target.x}, attrs=ds.attrs)
    for name, da in ds.data_vars.items():
        if {"y", "x"} <= set(da.dims):
            out[name] = reproject_variable(da, src, target, name=str(name), chunk_px=chunk_px)
        elif name != "spatial_ref":
            out[name] = da
    for coord in ds.coords:
        if coord not in ("y", "x", "spatial_ref") and not {"y", "x"} & set(ds[coord].dims):
            out = out.assign_coords({coord: ds[coord]})
    return out
