"""Spread calibration of the ensemble: members spread about their mean by a factor per lead time.

The diffusion members of a small model trained on little data are far too close to each other
(spread/skill 0.25 on the test cube before calibration). Post-hoc inflation, fitted on the
validation cube and stored in the weights file (``spread_inflation``, like the guidance scale),
widens them: member' = mean + k(lead) (member - mean). The ensemble mean, and so every
deterministic score, is unchanged. k(lead) = RMSE of the ensemble mean / ensemble spread per
lead on the validation cube's high-quality pixels, smoothed by a straight line in the lead and
never below 1 (Gneiting et al. 2005 fit spread by minimum CRPS; matching spread to skill is the
ratio form of the same idea, and needs nothing but the two figures).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import xarray as xr

from ...cube.predictions import MEMBER, frame_indices
from ...metrics.deterministic import GREENEARTHNET, QualityRule, high_quality
from ..observed import context_indices, observed_ndvi

METADATA_KEY = "spread_inflation"  # weights metadata: JSON list, one factor per forecast step


def inflate(members: np.ndarray, factors: np.ndarray | None) -> np.ndarray:
    """members (M, T, ...) NDVI -> mean + factor[t] (member - mean); unchanged for M < 2.

    Inflated values stay inside the NDVI range the decoded members span at that step (over all
    members and pixels given): stretching can widen the distribution at a pixel, but never push a
    member to NDVI values the decoder cannot produce, such as exactly +-1.
    """
    if factors is None or members.shape[0] < 2:
        return members
    mean = members.mean(axis=0, keepdims=True)
    shape = (1, -1, *([1] * (members.ndim - 2)))
    scale = np.asarray(factors, dtype=members.dtype)[: members.shape[1]].reshape(shape)
    axes = tuple(a for a in range(members.ndim) if a != 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # steps without any value: NaN bounds, NaN stays NaN
        low, high = np.nanmin(members, axis=axes).reshape(shape), np.nanmax(members, axis=axes).reshape(shape)
    return np.clip(mean + scale * (members - mean), low, high)


def factors_from_metadata(metadata: dict[str, str], horizon: int) -> np.ndarray | None:
    """The weights file's inflation factors for the first `horizon` steps (the last one repeats); None if absent."""
    raw = metadata.get(METADATA_KEY)
    if not raw:
        return None
    values = np.asarray(json.loads(raw), dtype="float32")
    if values.size == 0 or not np.isfinite(values).all():
        return None
    return np.concatenate([values, np.repeat(values[-1:], max(0, horizon - values.size))])[:horizon]


def spread_and_error(target: xr.Dataset, forecast: xr.Dataset, *, context_frames: int,
                     rule: QualityRule = GREENEARTHNET) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per lead: RMSE of the ensemble mean, spread sqrt((M+1)/M mean var) and sample count, on high-quality pixels."""
    frames = frame_indices(forecast, target)
    context = context_indices(int(frames[0]), context_frames=context_frames)
    observed = observed_ndvi(target, frames)  # (T, H, W)
    landcover = np.asarray(target["esawc_lc"].values, dtype="float64") if "esawc_lc" in target else None
    keep = high_quality(observed, observed_ndvi(target, context), landcover, rule=rule)
    members = np.asarray(forecast[MEMBER].values, dtype="float64")  # (M, T, H, W)
    m = members.shape[0]
    mean, variance = members.mean(axis=0), members.var(axis=0, ddof=1)
    usable = keep[None] & np.isfinite(observed) & np.isfinite(mean)
    count = usable.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        rmse = np.sqrt(np.where(usable, (mean - observed) ** 2, 0.0).sum(axis=(1, 2)) / count)
        spread = np.sqrt((m + 1) / m * np.where(usable, variance, 0.0).sum(axis=(1, 2)) / count)
    return rmse, spread, count


def fit_inflation(rmse: np.ndarray, spread: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Factors per lead: rmse / spread, weighted straight-line fit over the leads, at least 1."""
    usable = (count > 0) & np.isfinite(rmse) & np.isfinite(spread) & (spread > 0)
    if usable.sum() < 2:
        ratio = float(np.nansum(rmse * count) / max(np.nansum(spread * count), 1e-9))
        return np.full(rmse.shape, max(1.0, ratio))
    lead = np.arange(rmse.size, dtype="float64")
    slope, intercept = np.polyfit(lead[usable], (rmse / spread)[usable], 1, w=np.sqrt(count[usable]))
    return np.maximum(1.0, intercept + slope * lead)
