"""Spread calibration of the ensemble: members spread about their mean by a factor per lead time.

The diffusion members of a small model trained on little data are far too close to each other
(spread/skill 0.25 on the test cube before calibration). Post-hoc inflation, fitted on the
validation cube and stored in the weights file (``spread_inflation``, like the guidance scale),
widens them: member' = mean + k(lead) (member - mean). The ensemble mean, and so every
deterministic score, is unchanged. k(lead) = RMSE of the ensemble mean / ensemble spread per
lead on the validation cube's high-quality pixels, smoothed by a straight line in the lead and
never below 1 (Gneiting et al. 2005 fit spread by minimum CRPS; matching spread to skill is the
ratio form of the same idea, and needs nothing but the two figures). The two figures come from
pipeline/evaluate/scoring.spread_and_error (scripts/select_weights.py fits them per release).
"""

from __future__ import annotations

import json
import warnings

import numpy as np

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


def fit_inflation(rmse: np.ndarray, spread: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Factors per lead: rmse / spread, weighted straight-line fit over the leads, at least 1."""
    usable = (count > 0) & np.isfinite(rmse) & np.isfinite(spread) & (spread > 0)
    if usable.sum() < 2:
        ratio = float(np.nansum(rmse * count) / max(np.nansum(spread * count), 1e-9))
        return np.full(rmse.shape, max(1.0, ratio))
    lead = np.arange(rmse.size, dtype="float64")
    slope, intercept = np.polyfit(lead[usable], (rmse / spread)[usable], 1, w=np.sqrt(count[usable]))
    return np.maximum(1.0, intercept + slope * lead)
