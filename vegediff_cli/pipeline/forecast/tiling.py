"""Tile-scale work plan for `forecast`: chips, blend weights, per-chip seeds, streamed blocks (pure numpy).

The grid is covered by overlapping 128 x 128 chips (geo.chip_layout). Every chip has a smooth,
strictly positive weight map; a pixel's ensemble mean is ``sum_c w_c mu_c / sum_c w_c`` over the
chips covering it, so seams fade out over the overlap instead of showing as edges (members add
their deviations so that the spread survives the overlap: blocks.Accumulator).

Streaming. Output is produced in *blocks*: the grid is split into column *stripes* and each
stripe is swept top to bottom in *bands* of rows. A band computes the chips of its stripe whose
top row lies in the band; a chip reaching below the band adds its weighted values to a *carry*
(the weighted sums of the rows below the band) that the next band starts from. Once a band's
chips are done no later chip can touch its rows (chips only extend down and right from their
start), so its rows are final and are written. Within a stripe every chip is computed once;
chips straddling a stripe border are computed by both stripes, from the same per-chip seed, so
the two halves agree. Memory is one band of one stripe plus its carry: it depends on the stripe
width (bounded by the memory budget) and never on the area.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from ...config import CHIP_OVERLAP, CHIP_SIZE
from ...geo import Chip, chip_layout

BLEND_FLOOR = 0.02  # smallest blend weight: keeps sum(w) well away from 0 at grid edges
ALIGN = 256  # stripes and bands start on multiples of the NetCDF chunk edge (no partial-chunk rewrites)


def blend_weights(size: int = CHIP_SIZE, overlap: int = CHIP_OVERLAP) -> np.ndarray:
    """(size, size) weights: raised-cosine ramps over `overlap` px at each edge, floor BLEND_FLOOR, 1 inside."""
    if overlap <= 0:
        return np.ones((size, size), dtype="float32")
    centre = np.arange(size, dtype="float64") + 0.5
    distance = np.minimum(centre, size - centre)  # to the nearest chip edge, in px
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.clip(distance / overlap, 0.0, 1.0))
    line = BLEND_FLOOR + (1.0 - BLEND_FLOOR) * ramp
    return np.outer(line, line).astype("float32")


def chip_seed(seed: int, chip: Chip) -> int:
    """A 63-bit seed from (run seed, chip row, chip col): a chip's noise never depends on batching."""
    digest = hashlib.blake2b(f"{int(seed)}:{chip.row}:{chip.col}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class Block:
    """One streamed unit: output rows [row0, row1) x columns [col0, col1) of one stripe."""

    stripe: int  # index of the column stripe
    band: int  # index of the row band within the stripe (bands of a stripe run in order)
    row0: int
    row1: int
    col0: int
    col1: int
    chips: tuple[Chip, ...]  # chips of the stripe whose top row lies in [row0, row1), row-major

    @property
    def shape(self) -> tuple[int, int]:
        return (self.row1 - self.row0, self.col1 - self.col0)


@dataclass(frozen=True)
class TilePlan:
    """Chips and blocks covering a `height` x `width` grid."""

    height: int  # real grid rows
    width: int  # real grid columns
    size: int  # chip edge in px
    overlap: int  # minimum overlap between neighbouring chips, px
    chips: tuple[Chip, ...]  # the global layout (on the grid padded to at least one chip)
    stripes: tuple[tuple[int, int], ...]  # column ranges [col0, col1)
    bands: tuple[tuple[int, int], ...]  # row ranges [row0, row1)

    def stripe_chips(self, stripe: int) -> list[Chip]:
        """Chips whose columns intersect the stripe, row-major."""
        col0, col1 = self.stripes[stripe]
        return [c for c in self.chips if c.col < col1 and c.col + c.size > col0]

    def blocks(self, stripe: int) -> list[Block]:
        """The bands of one stripe, top to bottom; each lists the chips it computes."""
        col0, col1 = self.stripes[stripe]
        chips = self.stripe_chips(stripe)
        out = []
        for band, (row0, row1) in enumerate(self.bands):
            last = band == len(self.bands) - 1
            mine = tuple(c for c in chips if row0 <= c.row and (c.row < row1 or last))
            out.append(Block(stripe, band, row0, row1, col0, col1, mine))
        return out

    def all_blocks(self) -> list[Block]:
        return [b for s in range(len(self.stripes)) for b in self.blocks(s)]

    def chip_count(self) -> int:
        """Chip computations including the ones repeated at stripe borders."""
        return sum(len(self.stripe_chips(s)) for s in range(len(self.stripes)))

    def recompute_overhead(self) -> float:
        """Fraction of chip computations that repeat a chip already computed by a neighbouring stripe."""
        return self.chip_count() / max(1, len(self.chips)) - 1.0


def _ranges(length: int, step: int) -> tuple[tuple[int, int], ...]:
    return tuple((start, min(start + step, length)) for start in range(0, length, step))


def stripe_width(width: int, *, bytes_per_pixel: float, band_rows: int, budget_bytes: float, size: int = CHIP_SIZE) -> int:
    """Widest stripe (a multiple of ALIGN, at least ALIGN) whose band, carry and inputs fit the budget."""
    rows = band_rows + size  # a band's accumulator and input window reach one chip below it
    fitting = int(budget_bytes // max(1.0, rows * bytes_per_pixel))
    aligned = max(ALIGN, fitting // ALIGN * ALIGN)
    return width if aligned >= width else aligned


def plan_tiles(
    height: int,
    width: int,
    *,
    size: int = CHIP_SIZE,
    overlap: int = CHIP_OVERLAP,
    band_rows: int = ALIGN,
    stripe_cols: int | None = None,
) -> TilePlan:
    """Chip layout (padded to one chip for small grids) and the stripe/band blocks that stream it."""
    if band_rows <= 0 or (stripe_cols is not None and stripe_cols <= 0):
        raise ValueError("band_rows and stripe_cols must be positive")
    chips = chip_layout(max(height, size), max(width, size), size=size, overlap=overlap)
    stripe_cols = width if stripe_cols is None else stripe_cols
    return TilePlan(height, width, size, overlap, tuple(chips), _ranges(width, stripe_cols), _ranges(height, band_rows))


def split_for_workers(width: int, workers: int, *, widest: int) -> int:
    """Stripe width giving each of `workers` at least one stripe, within the memory-bound `widest`."""
    share = math.ceil(width / max(1, workers) / ALIGN) * ALIGN
    return max(ALIGN, min(widest, share))
