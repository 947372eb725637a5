"""Score one forecast on one cube window by window: chunk-aligned reads, bounded-memory arithmetic.

The cube and the forecast are read in (rows, cols) windows aligned to the 256 px storage chunks
(each compressed chunk is decompressed once); inside a window the float64 arithmetic runs on row
slices small enough to keep temporaries near `compute_values` values. Results are sums (per
land-cover group, per ensemble score), so windows and cubes pool exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import xarray as xr

from ...config import LANDCOVER
from ...cube.masks import has_landcover
from ...cube.predictions import ENSEMBLE_PROBABILITIES, MEMBER, PRED, frame_indices
from ...metrics.aggregate import GroupSums
from ...metrics.deterministic import QualityRule, direction_agreement, high_quality, pixel_scores
from ...metrics.probabilistic import EnsembleSums
from ..observed import context_indices, observed_ndvi, read_windows, row_slices

log = logging.getLogger("vegediff.evaluate")


@dataclass
class PixelMaps:
    """Per-pixel results of one forecast on one cube, kept for figures."""

    rmse: np.ndarray  # (H, W) per-pixel RMSE, NaN where no valid target step
    scored: np.ndarray  # (H, W) bool: pixels that passed the quality rule
    frames: np.ndarray  # target frame index of each forecast step
    context: np.ndarray  # target frame indices of the context window


@dataclass
class ForecastSums:
    """What scoring one forecast on one cube produced."""

    groups: pd.DataFrame  # one row per land-cover group: n_pixels and mean pixel scores
    ensemble: EnsembleSums | None  # member / probability sums; None for a single forecast
    maps: PixelMaps
    notes: tuple[str, ...]  # caveats (no land cover, ...)


def effective_rule(target: xr.Dataset, rule: QualityRule) -> tuple[QualityRule, np.ndarray | None, tuple[str, ...]]:
    """Without land cover every pixel forms one group 0 (not comparable with GreenEarthNet's figures)."""
    if has_landcover(target):
        return rule, np.asarray(target[LANDCOVER].values, dtype="float64"), ()
    note = f"cube has no {LANDCOVER}: all pixels scored as one group 0, not comparable with GreenEarthNet figures"
    log.warning(note)
    return replace(rule, landcover_min=None, landcover_max=None), None, (note,)


def _last_clear(context: np.ndarray) -> np.ndarray:
    """Last clear value along axis 0 of (C, ...) NDVI; NaN where the context was never clear."""
    last = np.full(context.shape[1:], np.nan)
    for values in context:
        last = np.where(np.isfinite(values), values, last)
    return last


def _add_probabilities(sums: EnsembleSums, ensemble: xr.Dataset, observed: np.ndarray, window: dict,
                       keep: np.ndarray, last_clear: np.ndarray) -> None:
    """Reliability of P(NDVI < threshold) and P(last clear NDVI - NDVI > drop) against what happened.

    observed (T, r, c) is the target on the ensemble's dates; keep and last_clear are (r, c).
    """
    for name, dim in ENSEMBLE_PROBABILITIES.items():
        if name not in ensemble:
            continue
        probabilities = ensemble[name].isel(window).values  # (K, T, r, c)
        for k, level in enumerate(np.asarray(ensemble[dim].values, dtype="float64")):
            if name == "prob_ndvi_below":
                event, label = observed < level, f"ndvi_below_{level:g}"
            else:
                event, label = (last_clear[None] - observed) > level, f"ndvi_drop_{level:g}"
            usable = keep[None] & np.isfinite(observed) & np.isfinite(probabilities[k])
            if name == "prob_ndvi_drop":
                usable &= np.isfinite(last_clear)[None]
            sums.add_probability(label, probabilities[k][usable], event[usable])


def score_forecast(
    target: xr.Dataset,
    forecast: xr.Dataset,
    *,
    cube: str,
    name: str,
    rule: QualityRule,
    context_frames: int,
    seed: int = 0,
    ensemble: xr.Dataset | None = None,
    read_values: int = 16_000_000,
    compute_values: int = 16_000_000,
) -> ForecastSums:
    """Sums of every score of one forecast (aligned with `target`, see cube/predictions.py) on one cube."""
    frames = frame_indices(forecast, target)
    context = context_indices(int(frames[0]), context_frames=context_frames)
    ensemble_frames = frame_indices(ensemble, target) if ensemble is not None else None
    rule, landcover, notes = effective_rule(target, rule)
    height, width = target.sizes["y"], target.sizes["x"]
    # land-cover value per pixel; pixels without one (possible under --pixels all-valid) form group 0, and so
    # does every pixel under a rule that does not score by land cover
    groups = np.nan_to_num(landcover, nan=0.0) if landcover is not None and rule.by_landcover else np.zeros((height, width))
    members = forecast.sizes["member"] if MEMBER in forecast else 0
    sums = GroupSums()
    ensemble_sums = EnsembleSums(members=members) if members or ensemble is not None else None
    rng = np.random.default_rng(seed)
    maps = PixelMaps(np.full((height, width), np.nan, dtype="float32"), np.zeros((height, width), bool), frames, context)
    steps = len(frames)
    probability_levels = sum(ensemble.sizes[d] for n, d in ENSEMBLE_PROBABILITIES.items() if n in ensemble) \
        if ensemble is not None else 0
    # float64-sized values per pixel while a window is read (NDVI from bands and mask takes ~6 per
    # frame; forecast, members and probabilities ~2 each) ...
    read_depth = 6 * (steps + len(context)) + 2 * steps * (1 + members + probability_levels)
    # ... and float64 values alive in the arithmetic: ~12 (T,) temporaries in pixel_scores, ~6 per member
    compute_depth = steps * (12 + 6 * members) + len(context)
    not_forecast = 0
    for rows, cols in read_windows(height, width, depth=read_depth, budget=read_values):
        window = {"y": rows, "x": cols}
        observed = observed_ndvi(target, frames, rows, cols)  # (T, r, c)
        context_ndvi = observed_ndvi(target, context, rows, cols)  # (C, r, c)
        predicted = forecast[PRED].isel(window).values  # (T, r, c)
        member_values = forecast[MEMBER].isel(window).values if members else None  # (M, T, r, c)
        keep = np.zeros(observed.shape[1:], bool)
        rmse = maps.rmse[rows, cols]  # views: filled in place
        lc = None if landcover is None else landcover[rows, cols]
        for part in row_slices(observed.shape[1], observed.shape[2], depth=compute_depth, budget=compute_values):
            obs = observed[:, part]
            scores = pixel_scores(obs, predicted[:, part])
            scores["direction"] = direction_agreement(obs, predicted[:, part], _last_clear(context_ndvi[:, part]))
            keep[part] = high_quality(obs, context_ndvi[:, part], None if lc is None else lc[part], rule=rule)
            # a pixel the forecast left out entirely (NaN at every step: outside its window or chips)
            # is not scored; GreenEarthNet's 0.5 fill is for gaps, and its predictions have none
            forecast_missing = ~np.isfinite(predicted[:, part]).any(axis=0)
            not_forecast += int((keep[part] & forecast_missing).sum())
            keep[part] &= ~forecast_missing
            sums.add(scores, groups[rows, cols][part], keep[part])
            rmse[part] = scores["rmse"]
            if members:
                sample = keep[part][None] & np.isfinite(obs)  # (T, r', c)
                values = np.moveaxis(member_values[:, :, part], 0, -1)[sample]  # (N, M)
                finite = np.isfinite(values).all(axis=-1)
                ensemble_sums.add_members(obs[sample][finite], values[finite], rng=rng)
        maps.scored[rows, cols] = keep
        if ensemble is not None:
            on_dates = observed if np.array_equal(ensemble_frames, frames) else \
                observed_ndvi(target, ensemble_frames, rows, cols)
            _add_probabilities(ensemble_sums, ensemble, on_dates, window, keep, _last_clear(context_ndvi))
    if not_forecast:
        note = f"{name}: {not_forecast} pixels passing the quality rule have no forecast at all and are not scored"
        log.warning(note)
        notes = (*notes, note)
    return ForecastSums(sums.table(cube=cube, forecast=name), ensemble_sums, maps, notes)
