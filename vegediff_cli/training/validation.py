"""Held-out seasons of the long Sentinel-2 series: validation that covers the whole year.

The validation cube of the shipped recipe (EarthNet2021x 29SND 2017) is one Portuguese summer, like
most of the conditioned training data: it cannot tell whether a model knows spring from autumn.
The last season of each long series is therefore held out of training (:func:`split_at`) and cut
into 30-frame cubes starting every month (:func:`season_cubes`), which the selection forecasts
like any cube (unconditional: the series carry no meteorology).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..config import CONTEXT_FRAMES, SEQUENCE_FRAMES
from ..cube.readers import open_netcdf
from ..cube.schema import new_cube, recorded_crs
from .sequences import Sequence, load_sequence

# Series file stem -> first date held out for validation (the series' last season).
HELD_OUT_SEASONS: dict[str, str] = {
    "france_rhone_2017-2019_20m": "2019-01-01",
    "romania_forest_2015-2021_20m": "2020-01-01",
}
WINDOW_STRIDE = 6  # frames between validation windows (30 days)
MIN_CLEAR_CONTEXT = 0.1  # a window whose context is clearer than this share of pixel-frames is used


def split_at(seq: Sequence, cutoff: str | pd.Timestamp) -> tuple[Sequence, Sequence]:
    """(frames before `cutoff`, frames from it on), as two sequences of the same site."""
    keep = np.asarray(seq.times < pd.Timestamp(cutoff))

    def part(mask: np.ndarray, suffix: str) -> Sequence:
        return Sequence(f"{seq.name}{suffix}", seq.frames[mask], seq.valid[mask], seq.times[mask],
                        None if seq.meteo is None else seq.meteo[mask], seq.static, seq.latitude)

    return part(keep, ""), part(~keep, f"@{pd.Timestamp(cutoff):%Y-%m-%d}")


def training_part(seq: Sequence, held_out: dict[str, str]) -> Sequence:
    """The sequence without its held-out season (unchanged for sources `held_out` does not name)."""
    cutoff = held_out.get(seq.name)
    return seq if cutoff is None else split_at(seq, cutoff)[0]


def season_cubes(path: Path, cutoff: str, *, stride: int = WINDOW_STRIDE) -> list[tuple[str, xr.Dataset]]:
    """30-frame cubes of the series `path` from `cutoff` on, one every `stride` frames: (name, cube)."""
    seq = load_sequence(path)
    _, held_out = split_at(seq, cutoff)
    raw = open_netcdf(path)
    crs = recorded_crs(raw)
    if crs is None and raw.rio.crs is not None:
        crs = raw.rio.crs.to_wkt()
    height, width = held_out.frames.shape[-2:]
    y, x = raw["y"].values[:height], raw["x"].values[:width]
    cubes = []
    for start in range(0, len(held_out.times) - SEQUENCE_FRAMES + 1, stride):
        window = slice(start, start + SEQUENCE_FRAMES)
        context_clear = held_out.valid[start:start + CONTEXT_FRAMES].mean()
        if context_clear < MIN_CLEAR_CONTEXT or not held_out.valid[window][10:].any():
            continue
        frames = np.nan_to_num(held_out.frames[window], nan=0.0)
        cube = new_cube(times=held_out.times[window], y=y, x=x, crs=crs, bands=frames, valid=held_out.valid[window],
                        source=f"validation window of {path.name}")
        cubes.append((f"{path.stem}_{held_out.times[start]:%Y%m%d}", cube))
    return cubes
