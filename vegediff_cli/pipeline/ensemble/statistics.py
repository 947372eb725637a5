"""Ensemble statistics of NDVI members (pure numpy): mean, spread, quantiles, event probabilities.

Members lie on axis 0: ``members (M, ...)``. A pixel whose members are NaN (not forecast) gets
NaN everywhere. Quantiles interpolate linearly between order statistics (numpy's default), so
p50 of an even ensemble is the mean of its two middle members. The spread is the sample standard
deviation (ddof = 1), the unbiased estimate of the forecast distribution's spread.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

QUANTILES: dict[str, float] = {"ndvi_p10": 0.10, "ndvi_p50": 0.50, "ndvi_p90": 0.90}


def member_statistics(members: np.ndarray) -> dict[str, np.ndarray]:
    """ndvi_mean, ndvi_std (ddof 1), ndvi_p10, ndvi_p50, ndvi_p90 over axis 0 of (M, ...) members."""
    if members.shape[0] < 2:
        raise ValueError(f"ensemble statistics need at least 2 members, got {members.shape[0]}")
    values = np.asarray(members, dtype="float32")
    out = {"ndvi_mean": values.mean(axis=0), "ndvi_std": values.std(axis=0, ddof=1)}
    levels = np.quantile(values, list(QUANTILES.values()), axis=0)  # NaN members give NaN quantiles
    out.update({name: levels[i] for i, name in enumerate(QUANTILES)})
    return {name: v.astype("float32") for name, v in out.items()}


def _fraction(event: np.ndarray, defined: np.ndarray) -> np.ndarray:
    return np.where(defined, event.mean(axis=0), np.nan).astype("float32")


def prob_below(members: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(K, ...) P(NDVI < threshold): the fraction of members below each threshold."""
    defined = np.isfinite(members).all(axis=0)
    return np.stack([_fraction(members < level, defined) for level in thresholds])


def prob_drop(members: np.ndarray, last_clear: np.ndarray, drops: Sequence[float]) -> np.ndarray:
    """(K, ...) P(last clear NDVI - NDVI > drop); `last_clear` broadcasts against one member (e.g. (y, x))."""
    defined = np.isfinite(members).all(axis=0) & np.isfinite(last_clear)
    loss = last_clear - members
    return np.stack([_fraction(loss > level, defined) for level in drops])


def check_levels(values: Sequence[float], *, option: str, low: float, high: float) -> tuple[float, ...]:
    """Sorted, unique levels inside [low, high]; a ValueError names the first bad one."""
    for value in values:
        if not (low <= value <= high) or not np.isfinite(value):
            raise ValueError(f"{option} {value} is outside {low}..{high}")
    return tuple(sorted(set(float(v) for v in values)))
