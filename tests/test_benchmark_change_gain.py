"""benchmarks/change_gain.py: the fitted gain recovers how much the forecast understates the change."""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.change_gain import gain, rmse  # noqa: E402


def unit(rng, n, *, true_gain):
    """Rows whose observed change is `true_gain` times the ensemble mean's change, plus noise."""
    last = rng.uniform(0.2, 0.8, n)
    moved = rng.normal(0.0, 0.1, n)
    members = (last + moved)[:, None] + rng.normal(0.0, 0.02, (n, 16))
    members -= members.mean(axis=1, keepdims=True) - (last + moved)[:, None]
    observed = last + true_gain * moved + rng.normal(0.0, 0.05, n)
    return {"members": members, "last": last, "observed": observed}


def test_the_gain_recovers_a_timid_forecast_and_lowers_its_error():
    rng = np.random.default_rng(0)
    units = [unit(rng, 20000, true_gain=1.5), unit(rng, 5000, true_gain=1.5)]
    fitted = gain(units)
    assert abs(fitted - 1.5) < 0.05
    held_out = unit(rng, 20000, true_gain=1.5)
    assert rmse(held_out, fitted) < rmse(held_out, 1.0) < rmse(held_out, 0.0)
    # g = 0 is persistence, g = 1 the ensemble mean
    assert np.isclose(rmse(held_out, 0.0), np.sqrt(((held_out["observed"] - held_out["last"]) ** 2).mean()))


def test_units_count_equally_and_a_gain_is_never_negative():
    rng = np.random.default_rng(1)
    big, small = unit(rng, 40000, true_gain=2.0), unit(rng, 2000, true_gain=0.5)
    assert abs(gain([big, small]) - 1.25) < 0.1  # the mean of the units' gains, not the pixel-weighted 1.93
    assert gain([unit(rng, 5000, true_gain=-1.0)]) == 0.0
