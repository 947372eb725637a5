"""One streamed block of a forecast: read its context window, run its chips, blend, hand back final rows.

See pipeline/forecast/tiling.py for the stripe / band / carry scheme. A block's result holds the rows
[row0, row1) of its stripe; the rows below that its chips already reached travel to the next band
of the same stripe as a :class:`Carry` (weighted sums, not yet divided by the weights).

The pieces (read_block -> model calls cut by a CallLayout -> BlockBlender) are shared by the local
loop (stream.py, which overlaps them across blocks and processes) and by
:func:`compute_block`, which runs them one after the other for a Dask worker.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from ...config import BANDS, NIR, RED, VALID
from ...cube.masks import ndvi
from ...geo import Chip
from ...model.device import resolve_precision
from ...model.inputs import date_features, normalise_static
from ...model.vegediff import VegeDiff
from .calibration import SpreadCalibration
from .chips import ChipBatch, ChipSettings, forecast_chips
from .plan import ForecastPlan
from .runtime import ROWS_PER_CALL
from .tiling import Block, blend_weights, chip_seed

RED_INDEX, NIR_INDEX = BANDS.index(RED), BANDS.index(NIR)
# Darkest clear reflectance a member may have: the clear red reflectance of the GreenEarthNet and
# EarthNet2021x cubes in ../shared/data never goes below 0.0053 (0.01st percentile 0.0086; their NDVI
# stays within -0.35 .. 0.97), so members keep |NDVI| < 1 (issue 11: 2 % of member values were +-1).
REFLECTANCE_FLOOR = 0.005


@dataclass
class Accumulator:
    """Weighted sums over rows [row0, row0 + rows) of a stripe's columns.

    Members are blended so that their spread survives the overlaps: a pixel's member m is
    ``sum_c w_c mu_c / sum_c w_c + sum_c w_c (f_cm - mu_c) / sqrt(sum_c w_c^2)``, with f_cm chip c's
    member m and mu_c chip c's ensemble mean. The first term is the plain weighted blend of the chip
    means (the ensemble mean, seamless as before); the second keeps the variance of the chips'
    independent member deviations (a plain weighted average of two chips' members would shrink it,
    to 0.85 x on average over a 16 px overlap). Where one chip covers a pixel both equal f_cm.
    ``sum_c w_c mu_c`` needs no sum of its own: it is the member mean of ``ndvi``.
    """

    row0: int
    ndvi: np.ndarray  # (M, T, r, w) sum of weight x member NDVI
    bands: np.ndarray  # (T, 4, r, w) sum of weight x member-mean reflectance
    weight: np.ndarray  # (r, w) sum of weights
    weight_sq: np.ndarray  # (r, w) sum of squared weights

    @classmethod
    def zeros(cls, row0: int, rows: int, cols: int, *, members: int, steps: int) -> Accumulator:
        return cls(row0, np.zeros((members, steps, rows, cols), "float32"),
                   np.zeros((steps, len(BANDS), rows, cols), "float32"), np.zeros((rows, cols), "float32"),
                   np.zeros((rows, cols), "float32"))

    @property
    def row1(self) -> int:
        return self.row0 + self.weight.shape[0]

    def add(self, other: Accumulator) -> None:
        """Add `other`, whose rows must lie inside this one's."""
        r = slice(other.row0 - self.row0, other.row1 - self.row0)
        self.ndvi[:, :, r] += other.ndvi
        self.bands[:, :, r] += other.bands
        self.weight[r] += other.weight
        self.weight_sq[r] += other.weight_sq

    def rows(self, row0: int, row1: int) -> Accumulator:
        r = slice(row0 - self.row0, row1 - self.row0)
        return Accumulator(row0, self.ndvi[:, :, r].copy(), self.bands[:, :, r].copy(), self.weight[r].copy(),
                           self.weight_sq[r].copy())


Carry = Accumulator


@dataclass
class BlockResult:
    """Final values of a block's rows [row0, row1) x [col0, col1)."""

    block: Block
    ndvi_pred: np.ndarray  # (T, h, w) ensemble-mean NDVI, NaN where not forecast
    bands: np.ndarray  # (T, 4, h, w) ensemble-mean reflectance
    ndvi_member: np.ndarray  # (M, T, h, w) member NDVI
    clear_count: np.ndarray  # (h, w) uint8 clear context frames
    last_clear_ndvi: np.ndarray  # (h, w) NDVI of the last clear context frame, NaN where none
    chips: int  # chips computed for this block


@dataclass
class Window:
    """Context inputs of a pixel window: rows [row0, row1) x cols [col0, col1) of the cube."""

    row0: int
    col0: int
    frames: np.ndarray  # (K, 4, h, w) reflectance, NaN where missing
    valid: np.ndarray  # (K, h, w) bool
    static: dict[str, np.ndarray]  # (h, w) per static layer the cube has

    def crop(self, row0: int, row1: int, col0: int, col1: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        r = slice(row0 - self.row0, row1 - self.row0)
        c = slice(col0 - self.col0, col1 - self.col0)
        return self.frames[:, :, r, c], self.valid[:, r, c], {k: v[r, c] for k, v in self.static.items()}


def read_window(cube: xr.Dataset, plan: ForecastPlan, rows: tuple[int, int], cols: tuple[int, int]) -> Window:
    """Read the context frames, valid mask and static layers of a window (one read per variable)."""
    index = plan.times.context_index
    contiguous = bool((np.diff(index) == 1).all())  # a slice reads one hyperslab instead of K
    sel = {"time": slice(int(index[0]), int(index[-1]) + 1) if contiguous else index, "y": slice(*rows), "x": slice(*cols)}
    frames = np.stack([np.asarray(cube[b].isel(sel).values, dtype="float32") for b in BANDS], axis=1)
    valid = np.asarray(cube[VALID].isel(sel).values).astype(bool) & np.isfinite(frames).all(axis=1)
    static = {name: np.asarray(cube[name].isel(y=slice(*rows), x=slice(*cols)).values, dtype="float32")
              for name in plan.static_layers}
    return Window(rows[0], cols[0], frames, valid, static)


def _pad(values: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad the last two axes up to `size` (chips of grids smaller than a chip)."""
    h, w = values.shape[-2:]
    if h == size and w == size:
        return values
    pad = [(0, 0)] * (values.ndim - 2) + [(0, size - h), (0, size - w)]
    return np.pad(values, pad, mode="reflect")


def chip_batch(window: Window, chips: list[Chip], plan: ForecastPlan) -> ChipBatch:
    """Model inputs of some chips of a window (padded to full chips at the grid's edge)."""
    height, width = plan.tiles.height, plan.tiles.width
    context, valid, meteo, static, seeds = [], [], [], [], []
    for chip in chips:
        row1, col1 = min(chip.row + chip.size, height), min(chip.col + chip.size, width)
        frames, clear, layers = window.crop(chip.row, row1, chip.col, col1)
        context.append(_pad(frames, chip.size))
        valid.append(_pad(clear, chip.size))
        padded = {k: _pad(v, chip.size) for k, v in layers.items()}
        static.append(normalise_static(padded, (chip.size, chip.size))[0])
        centre_y = 0.5 * (plan.y[chip.row] + plan.y[row1 - 1])
        centre_x = 0.5 * (plan.x[chip.col] + plan.x[col1 - 1])
        meteo.append(plan.meteo.at(centre_y, centre_x))
        seeds.append(chip_seed(plan.settings.seed, chip))
    meteo_batch = np.stack(meteo).astype("float32")  # (B, K+F, 24), or (B, M, K+F, 24) with weather scenarios
    if meteo_batch.ndim == 4:
        meteo_batch = np.ascontiguousarray(meteo_batch.transpose(1, 0, 2, 3))  # (M, B, K+F, 24)
    dates = np.repeat(date_features(plan.times.model_dates, plan.latitude)[None], len(chips), axis=0)  # (B, K+F, 3)
    return ChipBatch(np.stack(context), np.stack(valid), meteo_batch, np.stack(static), seeds, dates)


def _blend(acc: Accumulator, col0: int, col1: int, chip: Chip, members: np.ndarray, weights: np.ndarray,
           height: int, width: int) -> None:
    """Add one chip's members (M, T, 4, S, S) to the accumulator, inside the grid and the stripe."""
    rows = min(chip.size, height - chip.row)
    left, right = max(chip.col, col0), min(chip.col + chip.size, width, col1)
    if right <= left:
        return
    c = slice(left - chip.col, right - chip.col)
    w = weights[:rows, c]  # (r, w)
    # The decoder undershoots a little; flooring at the darkest clear reflectance ever observed keeps
    # NDVI inside the observed range instead of at exactly +-1 (a red of 0 gives NDVI 1).
    reflectance = np.maximum(members[:, :, :, :rows, c], REFLECTANCE_FLOOR)  # (M, T, 4, r, w)
    r_out = slice(chip.row - acc.row0, chip.row - acc.row0 + rows)
    c_out = slice(left - col0, right - col0)
    acc.ndvi[:, :, r_out, c_out] += w * ndvi(reflectance[:, :, RED_INDEX], reflectance[:, :, NIR_INDEX])
    acc.bands[:, :, r_out, c_out] += w * reflectance.mean(axis=0)
    acc.weight[r_out, c_out] += w
    acc.weight_sq[r_out, c_out] += w * w


def _context_summary(window: Window, row0: int, row1: int, col0: int, col1: int) -> tuple[np.ndarray, np.ndarray]:
    """Clear context frames per pixel (uint8) and the NDVI of the last clear one (NaN where none)."""
    frames, valid, _ = window.crop(row0, row1, col0, col1)
    index = np.where(valid, np.arange(valid.shape[0])[:, None, None], -1).max(axis=0)  # (h, w)
    values = ndvi(frames[:, RED_INDEX], frames[:, NIR_INDEX])  # (K, h, w)
    last = np.take_along_axis(values, np.maximum(index, 0)[None], axis=0)[0]
    return valid.sum(axis=0).astype("uint8"), np.where(index >= 0, last, np.nan).astype("float32")


@dataclass(frozen=True)
class CallLayout:
    """How a block's chips are cut into model calls: `chips_per_call` chips x `member_chunk` of their members."""

    chips_per_call: int
    member_chunk: int

    def member_ranges(self, members: int) -> list[tuple[int, int]]:
        return [(m0, min(members, m0 + self.member_chunk)) for m0 in range(0, members, self.member_chunk)]

    def calls(self, chips: int, members: int) -> int:
        return math.ceil(chips / self.chips_per_call) * len(self.member_ranges(members))


def call_layout(plan: ForecastPlan, *, rows_per_call: int) -> CallLayout:
    """`--batch-size B`: B chips with all their members per call; default: `rows_per_call` chip-members per call,
    members chunked when there are more (16 members -> 4 calls of 4 on CPU)."""
    return layout_for(plan.settings.members, plan.batch_size, rows_per_call=rows_per_call)


def layout_for(members: int, batch_size: int | None, *, rows_per_call: int) -> CallLayout:
    """call_layout before there is a plan (the memory check)."""
    if batch_size is not None:
        return CallLayout(batch_size, members)
    chunk = max(1, min(members, rows_per_call))
    return CallLayout(max(1, rows_per_call // chunk), chunk)


def chip_settings(plan: ForecastPlan, *, precision: str, device_type: str, compiled: bool,
                  layout: CallLayout) -> ChipSettings:
    """What forecast_chips needs: a resolved precision; full batches when the denoiser is compiled (one graph)."""
    s = plan.settings
    return ChipSettings(members=s.members, sampler=s.sampler, detail_transfer=s.detail_transfer, precision=precision,
                        frames_per_vae_call=VAE_FRAMES_PER_CALL.get(device_type, 4),
                        pad_chips=layout.chips_per_call if compiled else 0)


def default_rows(device_type: str) -> int:
    return ROWS_PER_CALL.get(device_type, ROWS_PER_CALL["cpu"])


VAE_FRAMES_PER_CALL = {"cpu": 4, "cuda": 32}  # few frames per call on CPU: -25 % decode time, small activations


@dataclass
class BlockInputs:
    """What a block reads before its chips run: the chips worth computing and their context window."""

    block: Block
    chips: list[Chip]  # active chips whose top row lies in the block, row-major
    window: Window  # rows [block.row0, max(block.row1, chips' bottom)) of the chips' columns
    bottom: int  # last row + 1 the block's chips reach

    def groups(self, plan: ForecastPlan, layout: CallLayout) -> Iterator[tuple[list[Chip], ChipBatch]]:
        """(chips, model inputs) per call group, built one at a time (inputs of one group in memory)."""
        for start in range(0, len(self.chips), layout.chips_per_call):
            group = self.chips[start:start + layout.chips_per_call]
            yield group, chip_batch(self.window, group, plan)


def read_block(cube: xr.Dataset, plan: ForecastPlan, block: Block) -> BlockInputs:
    height, width = plan.tiles.height, plan.tiles.width
    chips = plan.active_chips(block)
    bottom = max([block.row1, *(min(c.row + c.size, height) for c in chips)])
    col_lo = min([block.col0, *(c.col for c in chips)])
    col_hi = min(width, max([block.col1, *(c.col + c.size for c in chips)]))
    return BlockInputs(block, chips, read_window(cube, plan, (block.row0, bottom), (col_lo, col_hi)), bottom)


class BlockBlender:
    """Weighted sums of one block: the carry of the band above first, then each chip's members in chip order
    (the same order whatever process computed them, so every partition gives the same sums)."""

    def __init__(self, plan: ForecastPlan, inputs: BlockInputs, carry: Carry | None) -> None:
        self.plan, self.inputs = plan, inputs
        block = inputs.block
        rows = max(inputs.bottom, carry.row1 if carry is not None else block.row1) - block.row0
        self.acc = Accumulator.zeros(block.row0, rows, block.col1 - block.col0,
                                     members=plan.settings.members, steps=plan.settings.horizon)
        if carry is not None:
            self.acc.add(carry)
        self.weights = blend_weights(plan.tiles.size, plan.tiles.overlap)

    def add(self, chips: list[Chip], members: np.ndarray) -> None:
        """Blend (M, B, F, 4, H, W) member forecasts of `chips`."""
        block, tiles = self.inputs.block, self.plan.tiles
        for i, chip in enumerate(chips):
            _blend(self.acc, block.col0, block.col1, chip, members[:, i, :self.plan.settings.horizon], self.weights,
                   tiles.height, tiles.width)

    def finish(self) -> tuple[BlockResult, Carry | None]:
        """The block's final rows and the carry of the rows below it."""
        block, acc = self.inputs.block, self.acc
        next_carry = acc.rows(block.row1, acc.row1) if acc.row1 > block.row1 else None  # a copy: small
        clear_count, last_clear = _context_summary(self.inputs.window, block.row0, block.row1, block.col0, block.col1)
        result = _finish(block, acc, clear_count, last_clear, self.plan.settings.min_clear_context,
                         len(self.inputs.chips), self.plan.spread_calibration)
        return result, next_carry


def compute_block(
    model: VegeDiff,
    cube: xr.Dataset,
    plan: ForecastPlan,
    block: Block,
    carry: Carry | None,
    *,
    device: torch.device,
    compiled: bool = False,
    rows_per_call: int | None = None,
    on_chips: Callable[[int], object] = lambda n: None,
) -> tuple[BlockResult, Carry | None]:
    """Forecast one block in this process (Dask workers); returns its final rows and the carry for the next band."""
    layout = call_layout(plan, rows_per_call=rows_per_call or default_rows(device.type))
    settings = chip_settings(plan, precision=resolve_precision(plan.settings.precision, device),
                             device_type=device.type, compiled=compiled, layout=layout)
    inputs = read_block(cube, plan, block)
    blender = BlockBlender(plan, inputs, carry)
    for chips, batch in inputs.groups(plan, layout):
        parts = [forecast_chips(model, batch, conditioned=plan.conditioned, settings=settings, device=device,
                                member_range=members) for members in layout.member_ranges(settings.members)]
        blender.add(chips, parts[0] if len(parts) == 1 else np.concatenate(parts))
        on_chips(len(chips))
    return blender.finish()


def _finish(block: Block, acc: Accumulator, clear_count: np.ndarray, last_clear: np.ndarray,
            min_clear: int, chips: int, calibration: SpreadCalibration | None = None) -> BlockResult:
    """Turn the block's rows of the sums into values, in place (see Accumulator); NaN where no chip ran or
    the context is too cloudy."""
    rows = slice(0, block.row1 - block.row0)
    member_ndvi, bands = acc.ndvi[:, :, rows], acc.bands[:, :, rows]
    weight, weight_sq = acc.weight[rows], acc.weight_sq[rows]
    mean_sum = member_ndvi.mean(axis=0)  # sum w mu (a new array: member_ndvi is changed in place below)
    empty = (weight <= 0) | (clear_count < max(min_clear, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = mean_sum / weight
        member_ndvi -= mean_sum  # sum of weight x member deviation
        np.divide(member_ndvi, np.sqrt(weight_sq), out=member_ndvi)
        member_ndvi += mean
        np.divide(bands, weight, out=bands)
    member_ndvi[:, :, empty] = np.nan
    mean[:, empty] = np.nan
    bands[:, :, empty] = np.nan
    if calibration is not None:  # calibrated spread about an unchanged mean (pipeline/forecast/calibration.py)
        member_ndvi = calibration.apply(member_ndvi)
    return BlockResult(block, mean, bands, member_ndvi, clear_count, last_clear, chips)
