"""Spread calibration of the ensemble: members widened about their unchanged mean, per lead time.

The diffusion members of a small model trained on little data are far too close to each other
(spread/skill 0.25 on the test cube before calibration). Post-hoc widening, fitted on validation
data and stored in the weights file (like the guidance scale), corrects that. Two forms:

- **added variance** (``spread_added_variance``, current): per lead a variance a(lead) is added to
  every pixel's member variance, spread'^2 = spread^2 + a (the additive term of EMOS, Gneiting et
  al. 2005: error variance = a + b spread^2, with b = 1). Each pixel's members keep their shape and
  are stretched about their mean to the new spread. a(lead) = mean over the validation units of
  max(0, RMSE^2 - spread^2), smoothed by a straight line in the lead. An additive term transfers
  between sites: fitted on two of the three validation units it gives the third spread/skill
  0.95, 1.28 and 0.89, where the per-lead factor below gave 0.66, 1.87 and 1.79 (model card).
  A per-pixel term on top (forecast change, context variability or raw spread as predictor) was
  tried and changed nothing: none of them predicts the error (benchmarks/spread_predictors.py).
- **scale** (``spread_inflation``, weights files of earlier releases): member' = mean + k(lead)
  (member - mean). Still read, no longer fitted.

The ensemble mean, and so every deterministic score, is unchanged by either. RMSE and spread per
lead come from pipeline/evaluate/scoring.spread_and_error (scripts/select_weights.py fits them).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import numpy as np

AGREEING = 1e-12  # member variance (NDVI^2) below which a pixel's members count as identical (rounding)
ADDED_KEY = "spread_added_variance"  # weights metadata: JSON list, NDVI^2 added per forecast step
SCALE_KEY = "spread_inflation"  # weights metadata of earlier releases: JSON list, one factor per step


@dataclass(frozen=True)
class SpreadCalibration:
    """How members are widened: `kind` "added-variance" or "scale", one value per forecast step."""

    kind: str
    values: tuple[float, ...]

    def apply(self, members: np.ndarray) -> np.ndarray:
        values = np.asarray(self.values, dtype=members.dtype)
        return add_variance(members, values) if self.kind == "added-variance" else inflate(members, values)

    def describe(self) -> str:
        """One line for the forecast file's attributes: the kind and its values per step."""
        if self.kind == "added-variance":
            return "added spread (NDVI) " + " ".join(f"{np.sqrt(v):.3f}" for v in self.values)
        return "factor " + " ".join(f"{v:.3f}" for v in self.values)


def _bounds(members: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The NDVI range the decoded members span at each step (over all members and pixels given)."""
    axes = tuple(a for a in range(members.ndim) if a != 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # steps without any value: NaN bounds, NaN stays NaN
        return np.nanmin(members, axis=axes).reshape(shape), np.nanmax(members, axis=axes).reshape(shape)


def inflate(members: np.ndarray, factors: np.ndarray | None) -> np.ndarray:
    """members (M, T, ...) NDVI -> mean + factor[t] (member - mean); unchanged for M < 2.

    Widened values stay inside the NDVI range the decoded members span at that step: stretching can
    widen the distribution at a pixel, but never push a member to NDVI values the decoder cannot
    produce, such as exactly +-1.
    """
    if factors is None or members.shape[0] < 2:
        return members
    mean = members.mean(axis=0, keepdims=True)
    shape = (1, -1, *([1] * (members.ndim - 2)))
    scale = np.asarray(factors, dtype=members.dtype)[: members.shape[1]].reshape(shape)
    low, high = _bounds(members, shape)
    return np.clip(mean + scale * (members - mean), low, high)


def add_variance(members: np.ndarray, added: np.ndarray | None) -> np.ndarray:
    """members (M, T, ...) NDVI -> each pixel's members stretched about their mean so that the
    ensemble spread sqrt((M+1)/M var) grows to sqrt(spread^2 + added[t]); unchanged for M < 2.

    Pixels whose members all agree (no variance to stretch, up to rounding) are left as they are; values stay inside
    the decoded range at that step, as for `inflate`.
    """
    if added is None or members.shape[0] < 2:
        return members
    m = members.shape[0]
    shape = (1, -1, *([1] * (members.ndim - 2)))
    extra = np.asarray(added, dtype=members.dtype)[: members.shape[1]].reshape(shape)[0] * m / (m + 1)
    mean = members.mean(axis=0, keepdims=True)
    deviation = members - mean
    variance = (deviation**2).sum(axis=0) / (m - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(variance > AGREEING, np.sqrt((variance + extra) / variance), 1.0).astype(members.dtype)
    low, high = _bounds(members, shape)
    return np.clip(mean + scale[None] * deviation, low, high)


def _values(metadata: dict[str, str], key: str, horizon: int) -> tuple[float, ...] | None:
    raw = metadata.get(key)
    if not raw:
        return None
    values = np.asarray(json.loads(raw), dtype="float64").ravel()
    if values.size == 0 or not np.isfinite(values).all():
        return None
    values = np.concatenate([values, np.repeat(values[-1:], max(0, horizon - values.size))])[:horizon]
    return tuple(float(v) for v in values)


def calibration_from_metadata(metadata: dict[str, str], horizon: int) -> SpreadCalibration | None:
    """The weights file's calibration for the first `horizon` steps (the last value repeats); the added
    variance where the file has one, else an earlier release's factors; None if it has neither."""
    added = _values(metadata, ADDED_KEY, horizon)
    if added is not None:
        return SpreadCalibration("added-variance", tuple(max(0.0, v) for v in added))
    factors = _values(metadata, SCALE_KEY, horizon)
    return None if factors is None else SpreadCalibration("scale", factors)


def fit_added_variance(rmse: dict[str, np.ndarray], spread: dict[str, np.ndarray]) -> np.ndarray:
    """Added variance per lead from raw-spread validation figures per unit (name -> per-lead arrays):
    the units' mean of max(0, RMSE^2 - spread^2), then a straight line over the leads, never below 0."""
    gaps = np.stack([np.clip(np.asarray(rmse[k], "float64") ** 2 - np.asarray(spread[k], "float64") ** 2, 0, None)
                     for k in rmse])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # leads no unit scored: NaN
        gap = np.nanmean(gaps, axis=0)
    usable = np.isfinite(gap)
    if usable.sum() < 2:
        return np.full(gap.shape, float(np.nanmean(gap)) if usable.any() else 0.0)
    lead = np.arange(gap.size, dtype="float64")
    slope, intercept = np.polyfit(lead[usable], gap[usable], 1)
    return np.maximum(0.0, intercept + slope * lead)
