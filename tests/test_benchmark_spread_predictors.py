"""benchmarks/spread_predictors.py: the per-pixel rule recovers an error variance that does depend on its
predictor, and widening to the fitted variance calibrates the members."""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.spread_predictors import fit, score  # noqa: E402


def unit(rng, n, *, added, slope):
    """Rows whose ensemble-mean error has variance spread^2 + added + slope * change^2."""
    members = rng.normal(0.0, 0.02, (n, 16))
    members -= members.mean(axis=1, keepdims=True)
    change = rng.uniform(0.0, 0.3, n)
    spread_sq = 17 / 16 * members.var(axis=1, ddof=1)
    observed = rng.normal(0.0, np.sqrt(spread_sq + added + slope * change**2))
    return {"members": members + 0.5, "observed": observed + 0.5, "lead": np.zeros(n, dtype=int),
            "change^2": change**2, "context-sd^2": rng.uniform(0, 0.01, n), "spread^2": spread_sq,
            "low": np.full(n, -1.0), "high": np.full(n, 1.0)}


def test_the_fit_recovers_a_predictor_that_explains_the_error_and_calibrates_with_it():
    rng = np.random.default_rng(0)
    units = [unit(rng, 20000, added=0.002, slope=0.5) for _ in range(2)]
    with_change = fit(units, "change^2")
    assert abs(with_change[-1] - 0.5) < 0.1 and abs(with_change[0] - 0.002) < 0.002
    held_out = unit(rng, 20000, added=0.002, slope=0.5)
    raw, _ = score(held_out, None, None)
    ratio, crps = score(held_out, "change^2", with_change)
    assert raw < 0.5 and 0.95 < ratio < 1.05
    # the pixel rule beats a flat added variance in CRPS where the error really depends on the predictor
    _, flat_crps = score(held_out, None, fit(units, None))
    assert crps < flat_crps
    # a predictor unrelated to the error gets a coefficient near 0 relative to its scale
    unrelated = fit(units, "context-sd^2")
    assert abs(unrelated[-1] * 0.01) < 0.003


def test_between_denoisers_measures_what_the_denoisers_disagree_on_not_their_members_scatter():
    from benchmarks.spread_predictors import between_denoisers

    rng = np.random.default_rng(1)
    scatter = rng.normal(0.0, 0.05, (15, 4000))  # members 0..14, three denoisers drawing 5 each
    assert abs(between_denoisers(scatter, 3).mean()) < 2e-4  # same distribution: nothing to disagree on
    offsets = np.array([-0.1, 0.0, 0.1])[np.arange(15) % 3]  # member m drawn by denoiser m mod 3
    disagreeing = between_denoisers(scatter + offsets[:, None], 3).mean()
    assert abs(disagreeing - 0.01) < 1e-3  # variance of the three offsets (ddof 1): 0.01
    assert np.all(between_denoisers(scatter + offsets[:, None], 1) == 0)
