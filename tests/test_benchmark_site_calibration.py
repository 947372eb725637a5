"""benchmarks/site_calibration.py: the added spread it reports as needed is the one that brings
spread/skill to 1 when the members are widened by it, and per-lead figures come from pooled sums."""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.calibration_rules import per_lead  # noqa: E402
from benchmarks.site_calibration import needed_spread  # noqa: E402
from vegediff_cli.pipeline.forecast.calibration import add_variance  # noqa: E402


def sums_of(members: np.ndarray, observed: np.ndarray) -> dict:
    """pixel_sums' fields (per lead) for members (M, T, P) and observations (T, P)."""
    m = members.shape[0]
    mean = members.mean(axis=0)
    return {"sq": ((mean - observed) ** 2).sum(axis=1), "sp": (m + 1) / m * members.var(axis=0, ddof=1).sum(axis=1),
            "n": np.full(members.shape[1], members.shape[2])}


def test_the_needed_spread_calibrates_the_members_it_was_measured_on():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.3, 0.6, (4, 5000))
    members = truth[None] + rng.normal(0.05, 0.02, (16, 4, 5000))  # biased and too narrow
    before = sums_of(members, truth)
    rmse, spread = per_lead(before)
    assert np.all(spread < 0.5 * rmse)
    added = needed_spread(before) ** 2
    widened = sums_of(add_variance(members, np.full(4, added)), truth)
    ratio = np.sqrt(widened["sp"].sum() / widened["sq"].sum())
    assert abs(ratio - 1) < 0.02
    assert needed_spread(sums_of(members - 0.05, truth)) < 0.01  # unbiased, right-sized: nothing to add
