"""Grid maths: MGRS tiles, UTM grids, bounding boxes, windows and chip layouts (pure)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from affine import Affine

from .config import CHIP_OVERLAP, CHIP_SIZE, PIXEL_SIZE_M
from .errors import UsageError

TILE_SIZE_M = 109_800.0  # a Sentinel-2 tile spans 109.8 km (5490 px at 20 m)
_TILE_RE = re.compile(r"^(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z])([A-HJ-NP-V])$")


@dataclass(frozen=True)
class GridSpec:
    """A north-up raster grid: CRS, affine transform of the upper-left corner, size."""

    crs: str  # e.g. "EPSG:32632"
    transform: Affine  # pixel (col, row) -> (x, y) of the pixel's upper-left corner
    width: int  # number of columns (x)
    height: int  # number of rows (y)

    @property
    def resolution(self) -> tuple[float, float]:
        return (self.transform.a, -self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        left, top = self.transform.c, self.transform.f
        right = left + self.width * self.transform.a
        bottom = top + self.height * self.transform.e
        return (left, bottom, right, top)

    def x_coords(self) -> list[float]:
        """Pixel-centre x coordinates, as written to the cube's ``x`` axis."""
        return [self.transform.c + (i + 0.5) * self.transform.a for i in range(self.width)]

    def y_coords(self) -> list[float]:
        return [self.transform.f + (j + 0.5) * self.transform.e for j in range(self.height)]

    def window(self, col_off: int, row_off: int, width: int, height: int) -> GridSpec:
        """The sub-grid of a pixel window."""
        if col_off < 0 or row_off < 0 or col_off + width > self.width or row_off + height > self.height:
            raise UsageError(
                f"window (col {col_off}, row {row_off}, {width} x {height} px) lies outside the "
                f"{self.width} x {self.height} grid",
                fix="choose a window inside the tile (`window` COL ROW WIDTH HEIGHT)",
            )
        transform = self.transform @ Affine.translation(col_off, row_off)
        return GridSpec(self.crs, transform, width, height)


def normalise_tile(tile: str) -> str:
    """'t32uqd', 'MGRS-32UQD' or '32UQD' -> '32UQD'; raises UsageError on anything else."""
    name = tile.strip().upper().removeprefix("MGRS-").removeprefix("T")
    match = _TILE_RE.match(name)
    if match is None or not 1 <= int(match.group(1)) <= 60:
        raise UsageError(
            f"'{tile}' is not an MGRS tile name",
            fix="use a zone number, latitude band and 100 km square such as 32UQD",
        )
    return f"{int(match.group(1)):02d}{match.group(2)}{match.group(3)}{match.group(4)}"


def utm_epsg(zone: int, north: bool) -> int:
    return (32600 if north else 32700) + zone


def tile_grid(tile: str, *, resolution: float = PIXEL_SIZE_M) -> GridSpec:
    """The Sentinel-2 tiling grid of an MGRS tile at `resolution` metres.

    Sentinel-2 tiles start at the north-west corner of the MGRS 100 km square, snapped
    to the 60 m grid of the L1C product (west edge rounded down, north edge rounded up),
    and extend 109.8 km east and south. Checked against real COGs (29RKH: 199980, 2800020).
    """
    import mgrs  # a small C library; imported lazily so the CLI starts fast

    name = normalise_tile(tile)
    try:
        zone, hemisphere, easting, northing = mgrs.MGRS().MGRSToUTM(name)
    except Exception as exc:  # mgrs raises plain exceptions for letter combinations that do not exist
        raise UsageError(f"MGRS tile '{tile}' does not exist ({exc})", fix="check the tile name") from exc
    # With no digits, MGRSToUTM returns the centre of the 100 km square.
    west, north = easting - 50_000.0, northing + 50_000.0
    ulx = math.floor(west / 60.0) * 60.0
    uly = math.ceil(north / 60.0) * 60.0
    size = int(round(TILE_SIZE_M / resolution))
    return GridSpec(
        crs=f"EPSG:{utm_epsg(int(zone), hemisphere == 'N')}",
        transform=Affine(resolution, 0.0, ulx, 0.0, -resolution, uly),
        width=size,
        height=size,
    )


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """'minlon,minlat,maxlon,maxlat' in degrees -> tuple, with range checks."""
    try:
        values = tuple(float(v) for v in text.replace(" ", ",").split(",") if v)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise UsageError(f"`bbox` '{text}' is not four numbers", fix="write it as MINLON,MINLAT,MAXLON,MAXLAT")
    west, south, east, north = values
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise UsageError(
            f"`bbox` '{text}' is not a valid lon/lat box",
            fix="use degrees, west < east and south < north, e.g. 8.5,47.3,8.6,47.4",
        )
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class Chip:
    """One model chip: a window of `size` x `size` pixels at (row, col) of a grid."""

    row: int
    col: int
    size: int


def chip_layout(height: int, width: int, *, size: int = CHIP_SIZE, overlap: int = CHIP_OVERLAP) -> list[Chip]:
    """Chips of `size` px covering a `height` x `width` grid with at least `overlap` px overlap.

    The last chip in each direction is shifted back to end at the edge, so every chip lies
    inside the grid; grids smaller than a chip get one chip at (0, 0) that the caller pads.
    """
    if not 0 <= overlap < size:
        raise UsageError(f"chip overlap {overlap} must be between 0 and {size - 1} px")

    def starts(length: int) -> list[int]:
        if length <= size:
            return [0]
        stride = size - overlap
        count = math.ceil((length - size) / stride) + 1
        return sorted({min(i * stride, length - size) for i in range(count)})

    return [Chip(r, c, size) for r in starts(height) for c in starts(width)]
