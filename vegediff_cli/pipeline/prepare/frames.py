"""Time regularisation: irregular acquisitions -> one frame every 5 days.

Frame t covers the days t-4..t (the GreenEarthNet convention: its daily minicubes carry
Sentinel-2 on ``time[4::5]`` and meteorology of frame t aggregates the 5 days ending on t).
Each pixel of frame t takes the *latest clear* observation within its window; pixels with no
clear observation stay NaN with ``valid_mask`` 0. There is no temporal gap filling here: the
forecast step fills gaps for the model and the masks keep the truth visible to evaluation.

The frame dates are placed, by default, on the 5-day phase that puts the most acquisitions
exactly on frame dates: Sentinel-2's 5-day revisit then maps each acquisition to a frame of
its own date, and the observation age within a frame is zero wherever the revisit holds.
"""

from __future__ import annotations

import dask.array as dsa
import numpy as np
import pandas as pd
import xarray as xr

from ...config import BANDS, DLMASK, SCL, STEP_DAYS, VALID
from ...errors import UsageError

EPOCH = pd.Timestamp("1970-01-01")


def _day_numbers(dates: pd.DatetimeIndex) -> np.ndarray:
    return np.asarray((dates.normalize() - EPOCH).days, dtype="int64")


def best_phase(acquisitions: pd.DatetimeIndex, *, step_days: int = STEP_DAYS) -> int:
    """Day-number phase (mod `step_days`) that puts the most acquisitions on frame dates.

    Ties go to the phase of the latest acquisition (the most recent orbit pattern).
    """
    days = _day_numbers(acquisitions)
    counts = np.bincount(days % step_days, minlength=step_days)
    best = np.flatnonzero(counts == counts.max())
    latest = int(days.max() % step_days)
    return latest if latest in best else int(best[0])


def frame_dates(
    acquisitions: pd.DatetimeIndex, *, anchor: pd.Timestamp | None = None, step_days: int = STEP_DAYS
) -> pd.DatetimeIndex:
    """Frame dates every `step_days` days covering all acquisitions (frame t covers t-4..t).

    `anchor` fixes one frame date (any date, also outside the acquisitions); without it the
    phase comes from :func:`best_phase`.
    """
    if len(acquisitions) == 0:
        raise UsageError("the input has no acquisition dates", fix="fetch or pass at least one scene")
    days = _day_numbers(pd.DatetimeIndex(acquisitions))
    phase = best_phase(pd.DatetimeIndex(acquisitions), step_days=step_days) if anchor is None else int(
        _day_numbers(pd.DatetimeIndex([anchor]))[0] % step_days)
    first = days.min() + (phase - days.min()) % step_days
    last = days.max() + (phase - days.max()) % step_days
    return EPOCH + pd.to_timedelta(np.arange(first, last + 1, step_days), unit="D")


def frame_members(acquisitions: pd.DatetimeIndex, frames: pd.DatetimeIndex, *, step_days: int = STEP_DAYS) -> list[list[int]]:
    """Indices of the acquisitions inside each frame's window (t-4..t), in time order."""
    acq_days = _day_numbers(pd.DatetimeIndex(acquisitions))
    order = np.argsort(pd.DatetimeIndex(acquisitions).values, kind="stable")
    members = []
    for frame_day in _day_numbers(frames):
        inside = (acq_days > frame_day - step_days) & (acq_days <= frame_day)
        members.append([int(i) for i in order if inside[i]])
    return members


def latest_clear(blocks: list[np.ndarray], *, n_bands: int, fills: tuple[float, ...]) -> np.ndarray:
    """Composite of one frame from its acquisitions' stacked blocks, oldest first (pure numpy).

    Each block is (V, h, w): `n_bands` reflectance bands, the clear flag, then class layers
    (SCL, dlmask) whose no-data values are `fills`. Returns (V, h, w): the bands of the latest
    clear observation (NaN where none, or where that observation lacks a band), the valid flag
    (1/0), and the class layers of the chosen observation, else of the latest acquisition with data.
    """
    h, w = blocks[0].shape[-2:] if blocks else (0, 0)
    bands = np.full((n_bands, h, w), np.nan, dtype="float32")
    any_clear = np.zeros((h, w), dtype=bool)
    fill = np.asarray(fills, dtype="float32")[:, None, None]
    chosen = np.broadcast_to(fill, (len(fills), h, w)).copy()
    latest = chosen.copy()
    for block in blocks:  # ascending time: a later clear observation overrides an earlier one
        clear = block[n_bands] > 0.5
        bands = np.where(clear, block[:n_bands], bands)
        any_clear |= clear
        classes = block[n_bands + 1:]
        chosen = np.where(clear, classes, chosen)
        latest = np.where(classes != fill, classes, latest)
    usable = any_clear & np.isfinite(bands).all(axis=0)
    bands = np.where(usable, bands, np.nan)
    classes = np.where(any_clear, chosen, latest)
    return np.concatenate([bands, usable[None].astype("float32"), classes]).astype("float32")


def composite(raw: xr.Dataset, frames: pd.DatetimeIndex, *, step_days: int = STEP_DAYS) -> xr.Dataset:
    """Latest clear observation per pixel and frame, lazily (see :func:`latest_clear`).

    `raw` holds BANDS and VALID (the per-acquisition clear-sky flag) on (time, y, x) with
    acquisition times, optionally SCL and dlmask. All layers of one acquisition travel as one
    stacked block, and each frame chunk is one task: every raw chunk feeds exactly one task, so
    dask streams chunk by chunk and memory stays bounded (benchmarks/prepare_memory.py).
    """
    members = frame_members(pd.DatetimeIndex(raw["time"].values), frames, step_days=step_days)
    extras = [v for v in (SCL, DLMASK) if v in raw]
    fills = tuple({SCL: 0.0, DLMASK: 255.0}[v] for v in extras)
    layers = [*BANDS, VALID, *extras]
    stacked = dsa.stack([dsa.asarray(raw[name].transpose("time", "y", "x").data).astype("float32") for name in layers],
                        axis=1)  # (T, V, y, x)
    stacked = stacked.rechunk({0: 1, 1: -1})
    n_out = len(BANDS) + 1 + len(extras)
    spatial = stacked.chunks[2:]
    outputs = []
    for idx in members:
        if idx:
            frame = dsa.map_blocks(
                lambda *blocks: latest_clear(list(blocks), n_bands=len(BANDS), fills=fills),
                *[stacked[k] for k in idx], dtype="float32", chunks=((n_out,), *spatial),
                meta=np.empty((0, 0, 0), dtype="float32"),
            )
        else:  # no acquisition in the window: nothing observed
            nothing = np.array([np.nan] * len(BANDS) + [0.0, *fills], dtype="float32")[:, None, None]
            frame = dsa.broadcast_to(dsa.from_array(nothing, chunks=-1), (n_out, raw.sizes["y"], raw.sizes["x"]))
            frame = frame.rechunk(((n_out,), *spatial))
        outputs.append(frame)
    cube = dsa.stack(outputs, axis=0)  # (frames, V, y, x)
    coords = {"time": pd.DatetimeIndex(frames, name="time").as_unit("ns"), "y": raw["y"].values, "x": raw["x"].values}
    out = xr.Dataset(coords=coords)
    for i, name in enumerate(layers):
        values = cube[:, i]
        out[name] = (("time", "y", "x"), values.astype("uint8") if name == VALID else values, dict(raw[name].attrs))
    return out


def observation_count(members: list[list[int]]) -> np.ndarray:
    """Acquisitions per frame (for the summary)."""
    return np.array([len(m) for m in members], dtype="int64")
