"""Each score against values worked out by hand on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scoringrules

from vegediff_cli.metrics import aggregate
from vegediff_cli.metrics.deterministic import GREENEARTHNET, block_names, high_quality, pixel_scores
from vegediff_cli.metrics.probabilistic import (
    EnsembleSums,
    ReliabilityCounts,
    crps_fair,
    observation_ranks,
    rank_histogram,
    spread_skill_ratio,
)

NAN = np.nan


# --- deterministic, per pixel -----------------------------------------------------------------

def test_pixel_scores_by_hand():
    # one pixel, 4 steps: step 2 is cloudy (not scored), the prediction of step 3 is missing (-> 0.5)
    observed = np.array([0.2, 0.4, NAN, 0.8])[:, None]
    predicted = np.array([0.3, 0.3, 0.9, NAN])[:, None]
    s = {k: v[0] for k, v in pixel_scores(observed, predicted, block=2).items()}
    errors = np.array([0.2 - 0.3, 0.4 - 0.3, 0.8 - 0.5])
    sse = 0.01 + 0.01 + 0.09
    obs_mean = (0.2 + 0.4 + 0.8) / 3
    ss_obs = (0.2 - obs_mean) ** 2 + (0.4 - obs_mean) ** 2 + (0.8 - obs_mean) ** 2
    pred_mean = (0.3 + 0.3 + 0.5) / 3
    assert s["n_obs"] == 3
    assert s["rmse"] == pytest.approx(math.sqrt(sse / 3))
    assert s["nse"] == pytest.approx(1 - sse / ss_obs)
    assert s["nnse"] == pytest.approx(1 / (2 - (1 - sse / ss_obs)))
    assert s["bias"] == pytest.approx(obs_mean - pred_mean)
    assert s["abs_bias"] == pytest.approx(abs(obs_mean - pred_mean))
    assert s["target_std"] == pytest.approx(math.sqrt(ss_obs / 3))
    # Pearson r over the three valid steps
    o, p = np.array([0.2, 0.4, 0.8]), np.array([0.3, 0.3, 0.5])
    r = ((o - o.mean()) * (p - p.mean())).sum() / math.sqrt(((o - o.mean()) ** 2).sum() * ((p - p.mean()) ** 2).sum())
    assert s["r"] == pytest.approx(r)
    assert s["r2"] == pytest.approx(r**2)
    # 2-step blocks: steps 0-1 have errors -0.1, 0.1; block 2-3 only step 3 (error 0.3)
    assert block_names(4, block=2) == ["rmse_0_2", "rmse_2_4"]
    assert s["rmse_0_2"] == pytest.approx(0.1)
    assert s["rmse_2_4"] == pytest.approx(0.3)
    assert np.sqrt((errors**2).mean()) == pytest.approx(s["rmse"])


def test_pixel_scores_clip_and_undefined_cases():
    # values outside [-1, 1] are clipped before scoring, as in the official scorer
    s = pixel_scores(np.array([[-1.5], [0.5]]), np.array([[-1.0], [1.7]]))
    assert s["rmse"][0] == pytest.approx(math.sqrt((0.0 + 0.25) / 2))
    # constant prediction: r is 0 (no linear association), NSE still defined
    s = pixel_scores(np.array([[0.2], [0.6], [0.4]]), np.array([[0.5], [0.5], [0.5]]))
    assert s["r"][0] == 0.0 and s["r2"][0] == 0.0
    assert s["nse"][0] == pytest.approx(1 - (0.09 + 0.01 + 0.01) / (0.04 + 0.04 + 0.0))
    # constant observation: NSE and r undefined; no valid step at all: everything undefined
    s = pixel_scores(np.array([[0.3, NAN], [0.3, NAN]]), np.array([[0.2, 0.2], [0.4, 0.4]]))
    assert np.isnan(s["nse"][0]) and np.isnan(s["r"][0]) and s["rmse"][0] == pytest.approx(0.1)
    assert s["n_obs"][1] == 0 and np.isnan(s["rmse"][1]) and np.isnan(s["nnse"][1])


def test_block_names_follow_the_official_spelling():
    assert block_names(20) == ["rmse_0_5", "rmse_5_10", "rmse_10_15", "rmse_15_20"]
    assert block_names(12) == ["rmse_0_5", "rmse_5_10", "rmse_10_12"]


def test_high_quality_rule_one_failure_per_pixel():
    rng = np.random.default_rng(0)
    steps, context = 20, 10
    seasonal = 0.5 + 0.3 * np.sin(np.linspace(0, 2 * np.pi, steps))  # std ~0.2 > 0.1, NDVI > 0.19
    observed = np.repeat(seasonal[:, None], 8, axis=1) + 0.01 * rng.standard_normal((steps, 8))
    ctx = np.full((context, 8), 0.6)
    landcover = np.array([10, 40, 35, 50, 10, 10, 10, 10], dtype=float)
    observed[:11, 4] = NAN  # 9 valid target steps (< 10)
    ctx[:8, 5] = NAN  # 2 valid context frames (< 3)
    ctx[9, 6] = -0.05  # a non-vegetation NDVI in the context window
    observed[:, 7] = 0.6 + 0.01 * rng.standard_normal(steps)  # flat target: std < 0.1
    keep = high_quality(observed, ctx, landcover, rule=GREENEARTHNET)
    assert keep.tolist() == [True, True, True, False, False, False, False, False]
    observed[:10, 4] = NAN  # exactly 10 valid target steps pass
    observed[10, 4] = 0.5
    assert high_quality(observed, ctx, landcover)[4]
    assert not high_quality(observed, ctx, None).any()  # no land cover: nothing is vegetation


# --- aggregation -----------------------------------------------------------------------------

def _groups(cube: str, rows: list[tuple[float, float, float, float, float]]) -> pd.DataFrame:
    """rows: (landcover, rmse, nse, r, bias) per pixel -> the group table GroupSums makes."""
    arr = np.array(rows, dtype=float)
    nse = arr[:, 2]
    scores = {"rmse": arr[:, 1], "nse": nse, "nnse": 1 / (2 - nse), "r2": arr[:, 3] ** 2, "abs_bias": np.abs(arr[:, 4]),
              "rmse_0_5": arr[:, 1] * 0.5}
    sums = aggregate.GroupSums()
    half = len(arr) // 2  # fed in two blocks, as the scorer does
    sums.add({k: v[:half] for k, v in scores.items()}, arr[:half, 0], np.ones(half, bool))
    sums.add({k: v[half:] for k, v in scores.items()}, arr[half:, 0], np.ones(len(arr) - half, bool))
    return sums.table(cube=cube, forecast="model")


def test_greenearthnet_aggregation_by_hand():
    a = _groups("A", [(10, 0.1, 0.0, 0.5, 0.1), (10, 0.3, -1.0, 0.7, -0.3), (40, 0.4, 0.5, 0.9, 0.2)])
    b = _groups("B", [(10, 0.4, 0.0, 0.1, 0.0), (35, 0.2, 0.0, 0.3, 0.1)])
    groups = pd.concat([a, b], ignore_index=True)
    # class 10: cube A mean rmse 0.2, cube B 0.4 -> 0.3; class 40: 0.4; artefact 35: 0.2
    classes = aggregate.class_figures(groups)
    assert classes[10]["rmse"] == pytest.approx(0.3)
    assert classes[10]["n_pixels"] == 3 and classes[10]["n_cubes"] == 2
    assert aggregate.headline(groups)["rmse"] == pytest.approx((0.3 + 0.4 + 0.2) / 3)
    # NSE through nnse: class 10 = mean(mean(1/2, 1/3), 1/2) -> 2 - 1/that
    nnse10 = ((0.5 + 1 / 3) / 2 + 0.5) / 2
    assert classes[10]["nse"] == pytest.approx(2 - 1 / nnse10)
    nnse_all = (nnse10 + 1 / 1.5 + 0.5) / 3
    assert aggregate.headline(groups)["nse"] == pytest.approx(2 - 1 / nnse_all)
    # R2 = mean of r^2 per (cube, group); |bias| likewise
    r2_10 = ((0.25 + 0.49) / 2 + 0.01) / 2
    assert classes[10]["r2"] == pytest.approx(r2_10)
    assert aggregate.headline(groups)["r2"] == pytest.approx((r2_10 + 0.81 + 0.09) / 3)
    assert aggregate.headline(groups)["abs_bias"] == pytest.approx((((0.1 + 0.3) / 2 + 0.0) / 2 + 0.2 + 0.1) / 3)
    assert aggregate.headline(groups)["rmse_0_5"] == pytest.approx((0.3 + 0.4 + 0.2) / 3 * 0.5)
    assert aggregate.headline(groups)["n_groups"] == 3


def test_outperformance_needs_three_of_four_gains():
    # per (cube, group): landcover, rmse, nse, r2, abs_bias of model and baseline
    model = pd.DataFrame({"cube": ["A", "A", "B"], "landcover": [10.0, 40.0, 10.0], "rmse": [0.10, 0.20, 0.30],
                          "nse_mean": [0.5, 0.1, 0.0], "r2": [0.6, 0.3, 0.2], "abs_bias": [0.05, 0.10, 0.10]})
    base = pd.DataFrame({"cube": ["A", "A", "B"], "landcover": [10.0, 40.0, 10.0], "rmse": [0.20, 0.205, 0.30],
                         "nse_mean": [0.3, 0.0, 0.0], "r2": [0.1, 0.2, 0.2], "abs_bias": [0.10, 0.12, 0.10]})
    gains = aggregate.gains(model, base)
    # A/10: all four gains clear their margins; A/40: rmse +0.005 (no), nse +0.1, r2 +0.1, bias +0.02 -> 3 of 4;
    # B/10: no gain at all
    assert gains["outperforms"].tolist() == [True, True, False]
    summary = aggregate.outperformance(model, base)
    assert summary["outperformance"] == pytest.approx(2 / 3)
    # gains are averaged like the scores: over cubes per class, then over classes
    assert summary["gain_rmse"] == pytest.approx(((0.10 + 0.0) / 2 + 0.005) / 2)


# --- probabilistic ---------------------------------------------------------------------------

def test_fair_crps_by_hand_and_against_scoringrules():
    members = np.array([[0.1, 0.5, 0.9]])
    mean_abs_error = (0.2 + 0.2 + 0.6) / 3
    pair_sum = 2 * (0.4 + 0.8 + 0.4)  # sum over i, j of |x_i - x_j|
    assert crps_fair(np.array([0.3]), members)[0] == pytest.approx(mean_abs_error - pair_sum / (2 * 3 * 2))
    assert crps_fair(np.array([0.3]), members)[0] == pytest.approx(1 / 15)
    rng = np.random.default_rng(1)
    obs, ens = rng.random(50), rng.random((50, 6))
    m = ens.shape[1]
    direct = np.abs(ens - obs[:, None]).mean(1) - np.abs(ens[:, :, None] - ens[:, None, :]).sum((1, 2)) / (2 * m * (m - 1))
    np.testing.assert_allclose(crps_fair(obs, ens), direct, rtol=1e-12)
    fair = scoringrules.crps_ensemble(obs, ens, estimator="fair", backend="numpy")
    np.testing.assert_allclose(crps_fair(obs, ens), fair, rtol=1e-12)
    # the fair estimator is the energy estimator with M(M-1) instead of M^2 in the spread term
    nrg = scoringrules.crps_ensemble(obs, ens, estimator="nrg", backend="numpy")
    np.testing.assert_allclose(crps_fair(obs, ens) - nrg,
                               np.abs(ens[:, :, None] - ens[:, None, :]).sum((1, 2)) * (1 / (2 * m * m) - 1 / (2 * m * (m - 1))),
                               rtol=1e-10)


def test_spread_skill_ratio_by_hand():
    members = np.array([[0.0, 1.0], [1.0, 3.0]])
    observed = np.array([0.5, 1.0])
    spread = math.sqrt(1.5 * (0.5 + 2.0) / 2)  # (M+1)/M x mean unbiased variance
    skill = math.sqrt((0.0**2 + 1.0**2) / 2)  # RMSE of the ensemble means 0.5, 2.0
    assert spread_skill_ratio(observed, members) == pytest.approx(spread / skill)


def test_rank_histogram_by_hand_and_ties():
    members = np.array([[0.1, 0.2, 0.3]] * 3)
    rng = np.random.default_rng(0)
    assert rank_histogram(np.array([0.05, 0.5, 2.0]), members, rng=rng).tolist() == [1, 0, 0, 2]
    ranks = observation_ranks(np.full(4000, 0.2), np.tile([0.1, 0.2, 0.3], (4000, 1)), rng=rng)
    assert set(ranks.tolist()) == {1, 2}  # a tie takes either side
    assert abs((ranks == 1).mean() - 0.5) < 0.04


def test_calibrated_ensemble_is_flat_and_spread_matches_skill():
    rng = np.random.default_rng(3)
    centre = rng.normal(0.5, 0.2, 20000)
    members = centre[:, None] + 0.05 * rng.standard_normal((20000, 9))
    observed = centre + 0.05 * rng.standard_normal(20000)  # drawn like one more member
    sums = EnsembleSums(members=9)
    sums.add_members(observed, members, rng=rng)
    summary = sums.summary()
    assert summary["spread_skill_ratio"] == pytest.approx(1.0, abs=0.03)
    freq = np.array(summary["rank_histogram"]) / 20000
    assert np.abs(freq - 0.1).max() < 0.015
    # an under-dispersive ensemble is caught
    narrow = EnsembleSums(members=9)
    narrow.add_members(observed, centre[:, None] + 0.01 * rng.standard_normal((20000, 9)), rng=rng)
    assert narrow.summary()["spread_skill_ratio"] < 0.3
    assert narrow.summary()["rank_histogram"][0] > 3 * 2000


def test_reliability_by_hand():
    counts = ReliabilityCounts()
    counts.add(np.array([0.05, 0.15, 0.15, 0.95]), np.array([False, True, False, True]))
    summary = counts.summary()
    assert summary["samples"] == 4
    assert summary["brier"] == pytest.approx((0.05**2 + 0.85**2 + 0.15**2 + 0.05**2) / 4)
    assert summary["base_rate"] == pytest.approx(0.5)
    bins = {b["lower"]: b for b in summary["bins"]}
    assert sorted(bins) == [0.0, 0.1, 0.9]
    assert bins[0.1]["samples"] == 2 and bins[0.1]["observed_frequency"] == pytest.approx(0.5)
    assert bins[0.1]["mean_probability"] == pytest.approx(0.15)
    assert bins[0.9]["observed_frequency"] == 1.0


def test_ensemble_sums_pool_exactly():
    rng = np.random.default_rng(5)
    obs, ens = rng.random(300), rng.random((300, 4))
    whole, first, second = EnsembleSums(4), EnsembleSums(4), EnsembleSums(4)
    whole.add_members(obs, ens, rng=np.random.default_rng(0))
    first.add_members(obs[:100], ens[:100], rng=np.random.default_rng(0))
    second.add_members(obs[100:], ens[100:], rng=np.random.default_rng(1))
    pooled = first.merge(second).summary()
    assert pooled["crps"] == pytest.approx(crps_fair(obs, ens).mean())
    assert pooled["spread_skill_ratio"] == pytest.approx(spread_skill_ratio(obs, ens))
    assert sum(pooled["rank_histogram"]) == 300 == whole.summary()["samples"]
    assert pooled["mae_ensemble_mean"] == pytest.approx(np.abs(ens.mean(axis=1) - obs).mean())


# --- direction of change (this project's score) -------------------------------------------------

def test_direction_agreement_by_hand():
    from vegediff_cli.metrics.deterministic import direction_agreement

    # columns are pixels, rows the 4 forecast steps; the second half (steps 2 and 3) decides
    observed = np.array([[0.5, 0.6, 0.70, 0.8, 0.5],
                         [0.5, 0.6, 0.70, 0.8, 0.5],
                         [0.7, 0.7, 0.72, 0.3, 0.9],
                         [0.8, 0.7, NAN, NAN, 0.9]])
    predicted = np.array([[0.5, 0.5, 0.5, 0.5, 0.5],
                          [0.5, 0.5, 0.5, 0.5, 0.5],
                          [0.6, 0.4, 0.8, 0.7, 0.6],
                          [0.6, 0.4, 0.8, 0.7, 0.6]])
    reference = np.array([0.5, 0.5, 0.7, 0.5, NAN])
    got = direction_agreement(observed, predicted, reference)
    assert got[0] == 1.0  # observed +0.25, forecast +0.1
    assert got[1] == 0.0  # observed +0.2, forecast -0.1
    assert np.isnan(got[2])  # observed +0.02 (only step 2 valid): below the 0.05 noise level, not scored
    assert got[3] == 0.0  # observed -0.2 (step 2 only), forecast +0.2
    assert np.isnan(got[4])  # no reference (no clear context frame)
    flat = direction_agreement(observed, np.repeat(reference[None], 4, axis=0), reference)
    assert flat[0] == 0.5 and flat[1] == 0.5 and flat[3] == 0.5  # "no change" (persistence): a coin flip


def test_spread_inflation_of_earlier_weights_keeps_the_mean_and_scales_the_spread():
    from vegediff_cli.pipeline.forecast.calibration import calibration_from_metadata, inflate

    rng = np.random.default_rng(0)
    members = rng.normal(0.5, 0.02, size=(8, 3, 10, 10))
    members[:, :, 0, 0] = np.linspace(-0.2, 0.95, 8)[:, None]  # one wide pixel sets the decodable range
    wider = inflate(members, np.array([2.0, 3.0, 4.0]))
    rest = np.ones((10, 10), bool)
    rest[0, 0] = False
    np.testing.assert_allclose(wider.mean(axis=0)[:, rest], members.mean(axis=0)[:, rest], atol=1e-12)
    ratio = wider.std(axis=0)[:, rest].mean(axis=1) / members.std(axis=0)[:, rest].mean(axis=1)
    np.testing.assert_allclose(ratio, [2.0, 3.0, 4.0], rtol=1e-6)
    # never beyond the range the members span at that step (issue 11: no member at exactly +-1)
    assert wider.min() >= -0.2 and wider.max() <= 0.95 and np.isclose(wider[:, :, 0, 0].max(), 0.95)
    assert np.array_equal(inflate(members[:1], np.array([3.0, 3.0, 3.0])), members[:1])  # one member: nothing to widen
    legacy = calibration_from_metadata({"spread_inflation": "[2.0, 3.0]"}, 4)
    assert legacy.kind == "scale" and legacy.values == (2.0, 3.0, 3.0, 3.0)
    assert calibration_from_metadata({}, 4) is None


def test_added_variance_reaches_the_fitted_spread_and_keeps_the_mean():
    from vegediff_cli.pipeline.forecast.calibration import add_variance, calibration_from_metadata, fit_added_variance

    rng = np.random.default_rng(1)
    m = 16
    members = rng.normal(0.5, 0.02, size=(m, 3, 20, 20))
    members[:, :, 0, 0] = np.linspace(-0.2, 0.95, m)[:, None]  # one wide pixel sets the decodable range
    members[:, :, 1, 1] = 0.4  # members that agree: nothing to stretch, left as they are
    added = np.array([0.0, 0.05**2, 0.1**2])
    wider = add_variance(members, added)
    rest = np.ones((20, 20), bool)
    rest[0, 0] = rest[1, 1] = False
    np.testing.assert_allclose(wider.mean(axis=0)[:, rest], members.mean(axis=0)[:, rest], atol=1e-12)
    spread = lambda x: np.sqrt((m + 1) / m * x.var(axis=0, ddof=1)[:, rest])  # noqa: E731 (scoring.spread_and_error)
    np.testing.assert_allclose(spread(wider) ** 2, spread(members) ** 2 + added[:, None], rtol=1e-6)
    assert np.array_equal(wider[:, :, 1, 1], members[:, :, 1, 1])
    assert wider.min() >= -0.2 and wider.max() <= 0.95  # inside the decoded range (issue 11)
    assert np.array_equal(add_variance(members[:1], added), members[:1])
    # fit: the units' mean gap between squared error and squared spread, a line over the leads, never below 0
    rmse = {"a": np.sqrt([0.01, 0.05, 0.09]), "b": np.array([0.1, np.nan, 0.3])}
    spread_ = {"a": np.array([0.1, 0.1, 0.1]), "b": np.array([0.2, np.nan, 0.1])}
    np.testing.assert_allclose(fit_added_variance(rmse, spread_), [0.0, 0.04, 0.08], atol=1e-12)
    calibration = calibration_from_metadata({"spread_added_variance": "[0.01, 0.04]", "spread_inflation": "[3.0]"}, 3)
    assert calibration.kind == "added-variance" and calibration.values == (0.01, 0.04, 0.04)  # the new form wins
    assert calibration.describe() == "added spread (NDVI) 0.100 0.200 0.200"
