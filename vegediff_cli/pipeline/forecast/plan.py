"""What a forecast will do, decided before the model runs: dates, meteorology, chips, blocks.

Time rules (docs/forecast.md, "Dates"): the forecast starts at ``start`` (default: 5 days after the
cube's last frame); a start between frame dates is moved to the next date of the cube's 5-day
grid. The context is the 10 frames of that grid before the start, all of which must be frames of
the cube. Forecast dates are ``start + 5 k`` days for k < horizon.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from ...config import BANDS, CHIP_OVERLAP, CHIP_SIZE, LANDCOVER, STATIC_LAYERS, STEP_DAYS, VALID, SamplerSettings
from ...cube.masks import vegetation_mask
from ...cube.schema import centre_latitude, grid_of
from ...diffusion.sampling import SAMPLERS
from ...errors import NoValidDataError, UsageError
from ...model.device import check_precision
from ...model.presets import ModelConfig
from ..meteo.inputs import MeteoInputs, resolve_meteo
from .calibration import SpreadCalibration
from .tiling import TilePlan, plan_tiles, split_for_workers, stripe_width

log = logging.getLogger("vegediff.forecast")
STEP = pd.Timedelta(days=STEP_DAYS)


@dataclass(frozen=True)
class ForecastSettings:
    """How `forecast` runs (the CLI options, validated by :func:`check_settings`)."""

    horizon: int = 20  # forecast steps written (at most the model's horizon)
    members: int = 1  # stochastic members per pixel
    sampler: SamplerSettings = field(default_factory=SamplerSettings)  # sampler, steps, guidance
    seed: int = 0  # run seed; each chip's noise derives from (seed, chip row, chip col)
    start: pd.Timestamp | None = None  # first forecast date; None: 5 days after the last frame
    overlap: int = CHIP_OVERLAP  # minimum chip overlap in px, blended with smooth weights
    batch_size: int | None = None  # chips (with all their members) per model call; None: runtime.ROWS_PER_CALL
    min_clear_context: int = 1  # pixels with fewer clear context frames get NaN
    detail_transfer: bool = True  # add the last context frame's VAE residual to every member
    memory_mb: int = 1024  # budget for one block's inputs and accumulators
    band_rows: int = 256  # rows per streamed block
    stripe_cols: int | None = None  # columns per stripe; None: the widest that fits memory_mb
    precision: str = "auto"  # inference precision: auto (bf16 where the device has it natively), fp32, bf16
    calibrate_spread: bool = True  # widen members by the weights' spread calibration (pipeline/forecast/calibration.py)


def check_settings(settings: ForecastSettings, cfg: ModelConfig) -> None:
    """UsageError for values that cannot work with these weights."""
    model_horizon = cfg.vegenet.horizon
    if not 1 <= settings.horizon <= model_horizon:
        raise UsageError(f"`horizon` {settings.horizon} is outside 1..{model_horizon}",
                         fix=f"the model forecasts at most {model_horizon} five-day steps; use `horizon` {model_horizon} or less")
    if settings.members < 1:
        raise UsageError(f"`members` {settings.members} must be at least 1")
    if settings.sampler.sampler not in SAMPLERS:
        raise UsageError(f"`sampler` '{settings.sampler.sampler}' is not one of {', '.join(SAMPLERS)}")
    if settings.sampler.steps < 1:
        raise UsageError(f"`steps` {settings.sampler.steps} must be at least 1")
    guidance = settings.sampler.guidance_scale
    if not np.isfinite(guidance) or guidance < 0:
        raise UsageError(f"`guidance` {guidance} must be a finite number of 0 or more", fix="e.g. `guidance` 1")
    check_precision(settings.precision)
    if settings.batch_size is not None and settings.batch_size < 1:
        raise UsageError(f"`batch_size` {settings.batch_size} must be at least 1")
    if not 0 <= settings.overlap < CHIP_SIZE // 2:
        raise UsageError(f"`overlap` {settings.overlap} must be between 0 and {CHIP_SIZE // 2 - 1} px")
    if not 0 <= settings.min_clear_context <= cfg.vegenet.context_frames:
        raise UsageError(f"`min_clear_context` {settings.min_clear_context} must be between 0 and "
                         f"{cfg.vegenet.context_frames} (the context frames)")


@dataclass(frozen=True)
class ForecastTimes:
    context_index: np.ndarray  # (K,) cube frame indices of the context, oldest first
    context_dates: pd.DatetimeIndex  # (K,)
    dates: pd.DatetimeIndex  # (horizon,) forecast dates written
    model_dates: pd.DatetimeIndex  # (K + model horizon,) every frame the model sees


def forecast_times(
    frames: pd.DatetimeIndex, *, start: pd.Timestamp | None, horizon: int, context_frames: int, model_horizon: int
) -> ForecastTimes:
    """Context and forecast dates (see the module docstring)."""
    frames = pd.DatetimeIndex(frames).normalize()
    last = frames[-1]
    if start is None:
        start = last + STEP
    start = pd.Timestamp(start).normalize()
    if start <= frames[0]:
        raise UsageError(f"`start` {start:%Y-%m-%d} is not after the cube's first frame {frames[0]:%Y-%m-%d}",
                         fix=_start_fix(frames, context_frames))
    if start not in frames:
        later = frames[frames > start]
        snapped = later[0] if len(later) else last + STEP * int(np.ceil((start - last) / STEP))
        if snapped != start:
            log.info("`start` %s is not a frame date: starting at %s", f"{start:%Y-%m-%d}", f"{snapped:%Y-%m-%d}")
        start = snapped
    wanted = pd.DatetimeIndex([start - STEP * k for k in range(context_frames, 0, -1)])
    index = frames.get_indexer(wanted)
    if (index < 0).any():
        missing = wanted[index < 0]
        raise UsageError(
            f"a forecast starting {start:%Y-%m-%d} needs the {context_frames} frames {wanted[0]:%Y-%m-%d} .. "
            f"{wanted[-1]:%Y-%m-%d} every {STEP_DAYS} days, but the cube lacks {len(missing)} of them "
            f"(first {missing[0]:%Y-%m-%d}); it holds {len(frames)} frames {frames[0]:%Y-%m-%d} .. {last:%Y-%m-%d}",
            fix=_start_fix(frames, context_frames))
    future = pd.DatetimeIndex([start + STEP * k for k in range(model_horizon)])
    return ForecastTimes(index, wanted, future[:horizon], wanted.append(future))


def _start_fix(frames: pd.DatetimeIndex, context_frames: int) -> str:
    if len(frames) < context_frames:
        return f"the model needs {context_frames} context frames; fetch and prepare a longer period"
    earliest, latest = frames[context_frames], frames[-1] + STEP
    return f"choose `start` between {earliest:%Y-%m-%d} and {latest:%Y-%m-%d} (or leave it out)"


@dataclass(frozen=True)
class ForecastPlan:
    """Everything a block needs besides the model and the cube's arrays (picklable, for workers)."""

    settings: ForecastSettings
    times: ForecastTimes
    meteo: MeteoInputs
    tiles: TilePlan
    active: frozenset[tuple[int, int]]  # (row, col) of the chips worth computing
    static_layers: tuple[str, ...]  # static layers of the cube the model reads
    y: np.ndarray  # (H,) cube y coordinates (chip centres for meteorology)
    x: np.ndarray  # (W,)
    batch_size: int | None  # chips per model call; None: blocks.call_layout's default
    latitude: float = 45.0  # degrees north of the grid's centre (the model's date features)
    spread_calibration: SpreadCalibration | None = None  # how members are widened; None: raw members
    static_ignored: tuple[str, ...] = ()  # static layers of the cube left out: the weights hardly saw them

    @property
    def conditioned(self) -> bool:
        return self.meteo.conditioned

    def active_chips(self, block) -> list:
        return [c for c in block.chips if (c.row, c.col) in self.active]


def bytes_per_pixel(members: int, horizon: int, context_frames: int) -> float:
    """Memory one block pixel costs: accumulators (members' NDVI, mean bands, weights and squared weights)
    and the context inputs of two blocks (the local loop reads the next block while the current one is
    blended)."""
    accumulators = 4 * horizon * (members + len(BANDS)) + 8
    inputs = context_frames * (4 * len(BANDS) + 1) + 4 * (len(STATIC_LAYERS) + 2)
    return float(accumulators + 2 * inputs)


def calls_in_flight_bytes(*, rows_per_call: int, calls: int, context_frames: int, horizon: int,
                          pickled: bool) -> float:
    """Memory of model calls under way: each call's inputs (at most one chip per row) and member outputs,
    twice over when they travel between processes (the pickled copy and the array)."""
    pixels = CHIP_SIZE * CHIP_SIZE
    inputs = rows_per_call * pixels * (context_frames * (4 * len(BANDS) + 1) + 4 * len(STATIC_LAYERS))
    outputs = rows_per_call * pixels * 4 * len(BANDS) * horizon
    return (2.0 if pickled else 1.0) * calls * (inputs + outputs)


def select_chips(cube: xr.Dataset, tiles: TilePlan, context_index: np.ndarray, *, rows_per_read: int = 512) -> tuple[frozenset, int]:
    """Chips with a clear context pixel and (when the cube has land cover) vegetation; and the clear-pixel count.

    Reads the context's valid mask in strips of rows, so memory stays bounded for any area.
    """
    height = tiles.height
    landcover = LANDCOVER in cube
    worth: dict[tuple[int, int], bool] = {}
    clear_pixels = 0
    for row0 in range(0, height, rows_per_read):
        row1 = min(height, row0 + rows_per_read)
        valid = np.asarray(cube[VALID].isel(time=context_index, y=slice(row0, row1)).values).astype(bool)
        clear = valid.any(axis=0)  # (r, W)
        clear_pixels += int(clear.sum())
        usable = clear & vegetation_mask(cube[LANDCOVER].isel(y=slice(row0, row1)).values) if landcover else clear
        for chip in tiles.chips:
            top, bottom = max(chip.row, row0), min(chip.row + chip.size, row1)
            if top >= bottom:
                continue
            key = (chip.row, chip.col)
            worth[key] = worth.get(key, False) or bool(usable[top - row0:bottom - row0, chip.col:chip.col + chip.size].any())
    return frozenset(k for k, ok in worth.items() if ok), clear_pixels


def plan_forecast(
    cube: xr.Dataset,
    cfg: ModelConfig,
    settings: ForecastSettings,
    *,
    weather: str | os.PathLike | None = None,
    workers: int = 1,
    ignore_meteo: tuple[str, ...] = (),
    ignore_static: tuple[str, ...] = (),
    reserved_bytes: float = 0.0,
    spread_calibration: SpreadCalibration | None = None,
) -> ForecastPlan:
    """Check the request against the cube and the weights, and plan the blocks.

    The blocks get `settings.memory_mb` less `reserved_bytes` (model calls under way, see
    calls_in_flight_bytes); `workers` > 1 narrows stripes so every Dask worker gets one.
    """
    check_settings(settings, cfg)
    grid_of(cube)  # GeoreferenceError without a CRS
    times = forecast_times(pd.DatetimeIndex(cube["time"].values), start=settings.start, horizon=settings.horizon,
                           context_frames=cfg.vegenet.context_frames, model_horizon=cfg.vegenet.horizon)
    meteo = resolve_meteo(cube, model_dates=times.model_dates, context_frames=cfg.vegenet.context_frames,
                          requested=settings.horizon, weather=weather, ignore=ignore_meteo, members=settings.members)
    height, width = cube.sizes["y"], cube.sizes["x"]
    stripe = settings.stripe_cols
    if stripe is None:
        per_pixel = bytes_per_pixel(settings.members, settings.horizon, cfg.vegenet.context_frames)
        stripe = stripe_width(width, bytes_per_pixel=per_pixel, band_rows=settings.band_rows,
                              budget_bytes=settings.memory_mb * 2**20 - reserved_bytes)
        if workers > 1:  # give every worker a stripe of its own
            stripe = split_for_workers(width, workers, widest=stripe)
    tiles = plan_tiles(height, width, overlap=settings.overlap, band_rows=settings.band_rows, stripe_cols=stripe)
    active, clear_pixels = select_chips(cube, tiles, times.context_index)
    if clear_pixels == 0:
        raise NoValidDataError(
            f"no pixel has a clear observation in the {len(times.context_index)} context frames "
            f"{times.context_dates[0]:%Y-%m-%d} .. {times.context_dates[-1]:%Y-%m-%d}",
            fix="choose another `start` (a period with clear frames before it) or another area")
    if not active:
        raise NoValidDataError("no chip holds vegetation (ESA WorldCover 10-40) with a clear context pixel",
                               fix="forecast an area with vegetation, or a cube without esawc_lc to forecast every pixel")
    present = tuple(name for name in STATIC_LAYERS if name in cube)
    return ForecastPlan(settings, times, meteo, tiles, active, tuple(n for n in present if n not in ignore_static),
                        np.asarray(cube["y"].values, dtype="float64"), np.asarray(cube["x"].values, dtype="float64"),
                        settings.batch_size, centre_latitude(cube),
                        spread_calibration if settings.calibrate_spread and settings.members > 1 else None,
                        tuple(n for n in present if n in ignore_static))
