"""GreenEarthNet's deterministic NDVI scores per pixel, and its high-quality pixel rule (pure numpy).

Definitions follow the benchmark's official scorer (Benson et al., CVPR 2024, "Multi-modal
learning for geospatial vegetation forecasting"; ``eval.py`` of github.com/vitusbenson/greenearthnet):

- observed NDVI is NaN where the frame is not valid (cloud, shadow, no data) and clipped to
  [-1, 1]; predicted NDVI is clipped to [-1, 1] and a missing prediction counts as 0.5;
- every score is computed per pixel over the forecast steps with a valid observation;
- RMSE, NSE = 1 - SSE / sum((obs - mean obs)^2), Pearson r (reported as R2 = r^2),
  bias = mean obs - mean prediction, RMSE per block of 5 steps (25 days);
- the normalised NSE, nnse = 1 / (2 - NSE), is what gets averaged (NSE is unbounded below).

Not in GreenEarthNet: the direction-of-change score (:func:`direction_agreement`), whether the
forecast moves the way the vegetation did over the horizon (this project's, see docs/evaluate.md).

Arrays carry time first: ``(T, ...)`` where ``...`` is any pixel layout, e.g. ``(H, W)`` or ``(N,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BLOCK_STEPS = 5  # 5 frames of 5 days: GreenEarthNet reports RMSE per 25-day block
MISSING_PREDICTION = 0.5  # the official scorer's value for a NaN prediction


@dataclass(frozen=True)
class QualityRule:
    """Which pixels are scored: GreenEarthNet's "high-quality vegetation pixels" by default."""

    landcover_min: int | None = 10  # lowest ESA WorldCover value scored (None: any, even no land cover)
    landcover_max: int | None = 40  # highest value scored (official: esawc_lc < 41; tree, shrub, grass, crop)
    min_target_obs: int | None = None  # valid observations needed on the forecast dates; None: half the steps (10 of 20)
    min_context_obs: int = 3  # valid observations needed in the context window (official: full minus target >= 3)
    min_ndvi: float | None = 0.0  # every valid NDVI in context + target must exceed this (drops water, snow, bare soil)
    min_target_std: float | None = 0.1  # target NDVI must vary over the forecast steps, else NSE and r are noise
    by_landcover: bool = True  # scores per land-cover group, macro-averaged (GreenEarthNet); False: all pixels one group

    def target_obs_needed(self, steps: int) -> int:
        return self.min_target_obs if self.min_target_obs is not None else math.ceil(steps / 2)


GREENEARTHNET = QualityRule()
# Every pixel with at least one valid observation on the forecast dates, whatever its land cover.
ALL_VALID = QualityRule(landcover_min=None, landcover_max=None, min_target_obs=1, min_context_obs=0,
                        min_ndvi=None, min_target_std=None)
QUALITY_RULES: dict[str, QualityRule] = {"greenearthnet": GREENEARTHNET, "all-valid": ALL_VALID}


def block_names(steps: int, *, block: int = BLOCK_STEPS) -> list[str]:
    """Names of the per-block RMSE scores, as the official scorer spells them: rmse_0_5, rmse_5_10, ..."""
    return [f"rmse_{start}_{min(start + block, steps)}" for start in range(0, steps, block)]


def prepare_pair(observed: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip both to [-1, 1] in float64; observation NaN stays NaN, a missing prediction becomes 0.5."""
    obs = np.clip(np.asarray(observed, dtype="float64"), -1.0, 1.0)
    pred = np.clip(np.asarray(predicted, dtype="float64"), -1.0, 1.0)
    return obs, np.where(np.isfinite(pred), pred, MISSING_PREDICTION)


def pixel_scores(observed: np.ndarray, predicted: np.ndarray, *, block: int = BLOCK_STEPS) -> dict[str, np.ndarray]:
    """Per-pixel scores over the time axis (axis 0); observed (T, ...) is NaN where not valid.

    Returns arrays of the pixel shape: ``n_obs``, ``rmse``, ``nse``, ``nnse``, ``r``, ``r2``,
    ``bias``, ``abs_bias``, ``target_std`` (population std of the valid observations) and one
    ``rmse_{a}_{b}`` per block of `block` steps. A score that is undefined for a pixel is NaN:
    no valid step (all), fewer than two (r), a constant observation (NSE, r). r is 0 where the
    prediction is constant over the valid steps: it carries no linear association (the official
    scorer's floating-point arithmetic gives ~1e-16 there).
    """
    obs, pred = prepare_pair(observed, predicted)
    if obs.shape != pred.shape:
        raise ValueError(f"observed {obs.shape} and predicted {pred.shape} differ")
    valid = np.isfinite(obs)
    n = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sq_err = np.where(valid, (obs - pred) ** 2, 0.0)
        sse = sq_err.sum(axis=0)
        obs_mean = np.where(valid, obs, 0.0).sum(axis=0) / n
        pred_mean = np.where(valid, pred, 0.0).sum(axis=0) / n
        obs_dev = np.where(valid, obs - obs_mean, 0.0)
        pred_dev = np.where(valid, pred - pred_mean, 0.0)
        ss_obs = (obs_dev**2).sum(axis=0)
        ss_pred = (pred_dev**2).sum(axis=0)
        constant_obs = ss_obs <= 1e-12 * np.where(valid, obs**2, 0.0).sum(axis=0)
        constant_pred = ss_pred <= 1e-12 * np.where(valid, pred**2, 0.0).sum(axis=0)
        nse = np.where(constant_obs | (n == 0), np.nan, 1.0 - sse / ss_obs)
        r = (obs_dev * pred_dev).sum(axis=0) / np.sqrt(ss_obs * ss_pred)
        r = np.where(constant_pred, 0.0, r)
        r = np.where(constant_obs | (n < 2), np.nan, np.clip(r, -1.0, 1.0))
        bias = obs_mean - pred_mean
        scores = {
            "n_obs": n,
            "rmse": np.sqrt(sse / n),
            "nse": nse,
            "nnse": 1.0 / (2.0 - nse),
            "r": r,
            "r2": r**2,
            "bias": bias,
            "abs_bias": np.abs(bias),
            "target_std": np.sqrt(ss_obs / n),
        }
        steps = obs.shape[0]
        for name, start in zip(block_names(steps, block=block), range(0, steps, block), strict=True):
            part = slice(start, start + block)
            scores[name] = np.sqrt(sq_err[part].sum(axis=0) / valid[part].sum(axis=0))
    return scores


def high_quality(
    observed: np.ndarray,
    context: np.ndarray,
    landcover: np.ndarray | None,
    *,
    rule: QualityRule = GREENEARTHNET,
) -> np.ndarray:
    """Pixels that count: observed (T, ...) and context (C, ...) NDVI with NaN where not valid.

    GreenEarthNet's rule (the defaults): land cover 10-40, at least half the forecast steps
    valid, at least 3 valid context frames, NDVI > 0 on every valid frame of context and
    target, and target NDVI std > 0.1. Depends on the target only, so two forecasts of one
    cube are always scored on the same pixels.
    """
    obs = np.clip(np.asarray(observed, dtype="float64"), -1.0, 1.0)
    ctx = np.clip(np.asarray(context, dtype="float64"), -1.0, 1.0)
    n_target = np.isfinite(obs).sum(axis=0)
    keep = n_target >= max(1, rule.target_obs_needed(obs.shape[0]))
    keep &= np.isfinite(ctx).sum(axis=0) >= rule.min_context_obs
    if rule.min_ndvi is not None:
        window = np.concatenate([ctx, obs], axis=0)
        lowest = np.where(np.isfinite(window), window, np.inf).min(axis=0)
        keep &= lowest > rule.min_ndvi
    if rule.min_target_std is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(np.isfinite(obs), obs, 0.0).sum(axis=0) / n_target
            var = np.where(np.isfinite(obs), (obs - mean) ** 2, 0.0).sum(axis=0) / n_target
        keep &= np.nan_to_num(np.sqrt(var), nan=0.0) > rule.min_target_std
    if rule.landcover_min is not None or rule.landcover_max is not None:
        if landcover is None:
            return np.zeros_like(keep)
        lc = np.asarray(landcover, dtype="float64")
        keep &= np.isfinite(lc)
        if rule.landcover_min is not None:
            keep &= np.nan_to_num(lc, nan=-1.0) >= rule.landcover_min
        if rule.landcover_max is not None:
            keep &= np.nan_to_num(lc, nan=np.inf) <= rule.landcover_max
    return keep


MIN_CHANGE = 0.05  # observed NDVI change below which a pixel's direction is not scored (noise level)
TIE = 1e-6  # a forecast change smaller than this is "no change": half a point, like a coin flip


def direction_agreement(
    observed: np.ndarray, predicted: np.ndarray, reference: np.ndarray, *, min_change: float = MIN_CHANGE
) -> np.ndarray:
    """Per pixel: does the forecast change over the horizon have the observed sign? 1, 0, 0.5 or NaN.

    observed, predicted (T, ...); reference (...) the last clear context NDVI (what persistence
    holds). Change = mean over the valid steps of the horizon's second half minus the reference,
    for the observation and for the forecast on the same steps. Pixels whose observed change is
    below `min_change` (or with no valid late step, or no reference) are NaN: not scored. A forecast
    without change (persistence) scores 0.5, so a skill-less forecast scores 50 %.
    """
    obs, pred = prepare_pair(observed, predicted)
    late = np.zeros(obs.shape[0], dtype=bool)
    late[obs.shape[0] // 2:] = True
    valid = np.isfinite(obs) & late.reshape(-1, *([1] * (obs.ndim - 1)))
    ref = np.asarray(reference, dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        n = valid.sum(axis=0)
        obs_change = np.where(valid, obs, 0.0).sum(axis=0) / n - ref
        pred_change = np.where(valid, pred, 0.0).sum(axis=0) / n - ref
        score = np.where(np.abs(pred_change) < TIE, 0.5, (np.sign(pred_change) == np.sign(obs_change)).astype("float64"))
        scored = (n > 0) & np.isfinite(ref) & (np.abs(obs_change) >= min_change)
    return np.where(scored, score, np.nan)
