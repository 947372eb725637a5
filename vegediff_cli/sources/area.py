"""Where a fetch reads: the output grid (the tile's 20 m UTM grid or a part of it) and the search box.

Every Sentinel-2 tile of a UTM zone lies on one 20 m lattice (tile corners are multiples of
60 m), so a bounding box is snapped outward to that lattice and neighbouring tiles' granules
paste onto it without resampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from rasterio.warp import transform_bounds

from ..errors import UsageError
from ..geo import GridSpec, normalise_tile, parse_bbox, tile_grid

MAX_SIDE_PX = 3 * 5490  # a --bbox wider than three tiles is almost certainly a mistake


@dataclass(frozen=True)
class FetchArea:
    """The output grid of a fetch and how to find the granules that cover it."""

    grid: GridSpec  # output grid: the tile grid, or a window / bbox snapped to it
    tile: str  # MGRS tile whose grid is used (names the output folder)
    query_tile: bool  # search by the tile's name (--tile) rather than by bbox only
    search_bbox: tuple[float, float, float, float]  # lon/lat box of the grid, for bbox searches

    def summary(self) -> dict:
        return {"tile": self.tile, "crs": self.grid.crs, "width": self.grid.width, "height": self.grid.height,
                "bounds": list(self.grid.bounds), "transform": list(self.grid.transform)[:6]}


def fetch_area(
    *,
    tile: str | None = None,
    bbox: str | tuple[float, float, float, float] | None = None,
    window: tuple[int, int, int, int] | None = None,
) -> FetchArea:
    """The area of `--tile`, `--tile --window COL ROW W H`, `--tile --bbox` or `--bbox`."""
    if window is not None and tile is None:
        raise UsageError("`window` needs `tile` (it counts pixels of the tile grid)", fix="add `tile` TILE")
    if tile is None and bbox is None:
        raise UsageError("nothing to fetch", fix="pass `tile` TILE (e.g. 32UQD) or `bbox` MINLON,MINLAT,MAXLON,MAXLAT")
    if window is not None and bbox is not None:
        raise UsageError("`window` and `bbox` both select a sub-area", fix="pass only one of them")
    box = parse_bbox(bbox) if isinstance(bbox, str) else bbox
    if tile is not None:
        name = normalise_tile(tile)
        grid = tile_grid(name)
        if window is not None:
            grid = grid.window(*window)
        elif box is not None:
            grid = _snap(grid, box, clip=True, what=f"`bbox` {_fmt(box)} and tile {name}")
        return FetchArea(grid=grid, tile=name, query_tile=True, search_bbox=_lonlat(grid))
    assert box is not None
    name = tile_at((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    grid = _snap(tile_grid(name), box, clip=False, what=f"`bbox` {_fmt(box)}")
    return FetchArea(grid=grid, tile=name, query_tile=False, search_bbox=tuple(box))  # type: ignore[arg-type]


def bbox_area(box: tuple[float, float, float, float], tile: str) -> FetchArea:
    """`--bbox` alone, on the grid of `tile` (the tile the items are on): the bbox snapped outward to
    that tile's 20 m lattice, which extends beyond the tile if the bbox does (same UTM zone)."""
    name = normalise_tile(tile)
    grid = _snap(tile_grid(name), box, clip=False, what=f"`bbox` {_fmt(box)}")
    return FetchArea(grid=grid, tile=name, query_tile=False, search_bbox=tuple(box))  # type: ignore[arg-type]


def tile_at(lon: float, lat: float) -> str:
    """The MGRS 100 km square (Sentinel-2 tile name) containing a point."""
    import mgrs

    if not -80 <= lat <= 84:
        raise UsageError(f"latitude {lat:g} is outside the UTM zones Sentinel-2 tiles cover", fix="use -80..84 degrees")
    return normalise_tile(mgrs.MGRS().toMGRS(lat, lon, MGRSPrecision=0))


def _snap(grid: GridSpec, box: tuple[float, float, float, float], *, clip: bool, what: str) -> GridSpec:
    """The smallest window of `grid`'s lattice covering `box` (lon/lat); clipped to the grid if asked."""
    left, bottom, right, top = transform_bounds("EPSG:4326", grid.crs, *box, densify_pts=21)
    res = grid.transform.a
    ulx, uly = grid.transform.c, grid.transform.f
    col0 = math.floor((left - ulx) / res + 1e-9)
    col1 = math.ceil((right - ulx) / res - 1e-9)
    row0 = math.floor((uly - top) / res + 1e-9)
    row1 = math.ceil((uly - bottom) / res - 1e-9)
    if clip:
        col0, row0 = max(col0, 0), max(row0, 0)
        col1, row1 = min(col1, grid.width), min(row1, grid.height)
        if col1 <= col0 or row1 <= row0:
            raise UsageError(f"{what} do not overlap", fix="pick a bbox inside the tile, or drop `tile`")
        return grid.window(col0, row0, col1 - col0, row1 - row0)
    width, height = col1 - col0, row1 - row0
    if width > MAX_SIDE_PX or height > MAX_SIDE_PX:
        raise UsageError(f"{what} spans {width} x {height} px at 20 m",
                         fix="fetch it tile by tile with `tile`, or pass a smaller `bbox`")
    transform = Affine(res, 0.0, ulx + col0 * res, 0.0, -res, uly - row0 * res)
    return GridSpec(grid.crs, transform, width, height)


def _lonlat(grid: GridSpec) -> tuple[float, float, float, float]:
    return tuple(transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21))  # type: ignore[return-value]


def _fmt(box: tuple[float, float, float, float]) -> str:
    return ",".join(f"{v:g}" for v in box)
