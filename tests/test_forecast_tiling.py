"""Tiling: blend weights, per-chip seeds, the stripe/band plan, seamless streaming, skipped chips, small cubes."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from tests.forecast_fixtures import synthetic_cube
from vegediff_cli.config import SamplerSettings
from vegediff_cli.cube.masks import ndvi
from vegediff_cli.geo import Chip
from vegediff_cli.pipeline.forecast.blocks import Accumulator, _blend, _finish
from vegediff_cli.pipeline.forecast.plan import ForecastSettings, bytes_per_pixel
from vegediff_cli.pipeline.forecast.run import ForecastJob, run_forecasts
from vegediff_cli.pipeline.forecast.tiling import BLEND_FLOOR, Block, blend_weights, chip_seed, plan_tiles, stripe_width

FAST = SamplerSettings(steps=1)


def test_blend_weights_are_smooth_positive_and_symmetric():
    w = blend_weights(128, 32)
    assert w.shape == (128, 128) and w.min() >= BLEND_FLOOR**2 * 0.99 and w.max() == pytest.approx(1.0)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    np.testing.assert_allclose(w, w.T)
    assert (w[32:96, 32:96] == 1).all()  # the interior is not down-weighted
    ramp = w[64, :32]
    assert (np.diff(ramp) > 0).all()  # rises monotonically over the overlap
    assert (blend_weights(128, 0) == 1).all()


def test_chip_seeds_depend_on_position_only():
    a, b = Chip(96, 192, 128), Chip(192, 96, 128)
    assert chip_seed(7, a) == chip_seed(7, Chip(96, 192, 128))
    assert len({chip_seed(7, a), chip_seed(7, b), chip_seed(8, a)}) == 3
    assert 0 <= chip_seed(7, a) < 2**63


def test_every_chip_is_computed_once_per_stripe_and_stripes_cover_the_grid():
    plan = plan_tiles(700, 900, overlap=32, band_rows=256, stripe_cols=512)
    assert plan.stripes == ((0, 512), (512, 900)) and plan.bands == ((0, 256), (256, 512), (512, 700))
    for stripe in range(len(plan.stripes)):
        chips = [c for block in plan.blocks(stripe) for c in block.chips]
        assert sorted(chips, key=lambda c: (c.row, c.col)) == plan.stripe_chips(stripe)
        assert len(set(chips)) == len(chips)
    border = set(plan.stripe_chips(0)) & set(plan.stripe_chips(1))
    assert border and all(c.col < 512 < c.col + c.size for c in border)
    assert 0 < plan.recompute_overhead() < 0.25


def test_stripe_width_keeps_memory_bounded_whatever_the_area():
    one = bytes_per_pixel(1, 20, 10)
    sixteen = bytes_per_pixel(16, 20, 10)
    budget = 1024 * 2**20
    wide = stripe_width(5490, bytes_per_pixel=one, band_rows=256, budget_bytes=budget)
    narrow = stripe_width(5490, bytes_per_pixel=sixteen, band_rows=256, budget_bytes=budget)
    assert narrow < wide and narrow % 256 == 0
    assert (256 + 128) * narrow * sixteen <= budget
    # a 100 000 px wide area gets the same stripe as a tile: memory does not grow with the area
    assert stripe_width(100_000, bytes_per_pixel=sixteen, band_rows=256, budget_bytes=budget) == narrow


def test_blending_two_chips_is_seamless():
    """Chip A says reflectance 0.1/0.3 (NDVI 0.5), chip B 0.1/0.5 (NDVI 0.667): the overlap ramps between them."""
    weights = blend_weights(128, 32)
    acc = Accumulator.zeros(0, 128, 224, members=1, steps=1)
    for chip, nir in ((Chip(0, 0, 128), 0.3), (Chip(0, 96, 128), 0.5)):
        members = np.zeros((1, 1, 4, 128, 128), "float32")
        members[:, :, 2], members[:, :, 3] = 0.1, nir
        _blend(acc, 0, 224, chip, members, weights, 128, 224)
    blended = (acc.ndvi[0, 0] / acc.weight)[64]
    a, b = float(ndvi(np.float32(0.1), np.float32(0.3))), float(ndvi(np.float32(0.1), np.float32(0.5)))
    np.testing.assert_allclose(blended[:96], a, rtol=1e-6)  # only chip A
    np.testing.assert_allclose(blended[128:], b, rtol=1e-6)  # only chip B
    overlap = blended[96:128]
    assert (np.diff(overlap) > 0).all() and a < overlap.min() and overlap.max() < b
    assert np.abs(np.diff(blended)).max() < (b - a) / 8  # no jump anywhere


def test_blending_keeps_the_members_spread_in_overlaps():
    """Two chips with independent members: in their overlap the blended members spread as much as one chip's
    (a plain weighted average of the two would shrink it), and the ensemble mean is the blend of the chip means."""
    members, width = 400, 224
    weights = blend_weights(128, 32)
    acc = Accumulator.zeros(0, 128, width, members=members, steps=1)
    rng = np.random.default_rng(0)
    spread, means = 0.05, {0: 0.5, 96: 0.6}
    for col, mean in means.items():
        target = np.clip(mean + spread * rng.standard_normal((members, 1, 1, 1)), 0.05, 0.95).astype("float32")
        chip = np.zeros((members, 1, 4, 128, 128), "float32")
        chip[:, :, 2] = 0.1  # red; NIR from the member's NDVI: (n - r) / (n + r) = v
        chip[:, :, 3] = 0.1 * (1 + target) / (1 - target)
        _blend(acc, 0, width, Chip(0, col, 128), chip, weights, 128, width)
    plain = acc.ndvi[:, 0, 64] / acc.weight[64]  # a plain weighted average of the members, for comparison
    block = Block(0, 0, 0, 128, 0, width, ())
    clear = np.full((128, width), 10, "uint8")
    result = _finish(block, acc, clear, np.zeros((128, width), "float32"), 1, 2)
    member_ndvi, mean = result.ndvi_member[:, 0, 64], result.ndvi_pred[0, 64]  # (M, w), (w,)
    np.testing.assert_allclose(mean, member_ndvi.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(mean[:96], means[0], atol=0.01)
    np.testing.assert_allclose(mean[128:], means[96], atol=0.01)
    assert (np.diff(mean[96:128]) > 0).all()  # the mean still ramps smoothly between the chips
    single, overlap = member_ndvi[:, :96].std(axis=0).mean(), member_ndvi[:, 104:120].std(axis=0)
    assert single == pytest.approx(spread, rel=0.1)
    np.testing.assert_allclose(overlap, single, rtol=0.1)  # a plain average would give about 0.71 x here
    assert plain[:, 104:120].std(axis=0).mean() < 0.8 * single


def test_streaming_partition_does_not_change_the_forecast(tmp_path, tiny_weights):
    """One stripe in one band vs two stripes in four bands (with carries): identical maps, chip for chip.

    224 x 224 px = 2 x 2 chips at rows/cols 0 and 96; the chip at (0, 96) is all built-up and skipped.
    One chip per model call, so the comparison is exact (batch composition changes the last bits).
    """
    cube = synthetic_cube(tmp_path / "cube.nc", height=224, width=224, frames=11,
                          built_up=(slice(0, 128), slice(96, 224)))
    runs = {}
    for name, stripe_cols, band_rows in (("whole", None, 256), ("split", 128, 64)):
        settings = ForecastSettings(horizon=2, sampler=FAST, stripe_cols=stripe_cols, band_rows=band_rows, batch_size=1)
        [summary] = run_forecasts([ForecastJob(cube, tmp_path / f"{name}.nc")], weights=tiny_weights,
                                  settings=settings, device="cpu")
        with xr.open_dataset(tmp_path / f"{name}.nc") as ds:
            runs[name] = ({v: ds[v].values for v in ("ndvi_pred", "s2_B04_pred", "ndvi_last_clear")}, summary)
    (whole_maps, whole), (split_maps, split) = runs["whole"], runs["split"]
    for name, values in whole_maps.items():
        np.testing.assert_array_equal(split_maps[name], values, err_msg=name)
    assert whole.chips_in_layout == 4 and whole.chips == 3 and split.chips == 4  # the border chip twice
    ndvi_map = whole_maps["ndvi_pred"]
    only_skipped = np.zeros((224, 224), bool)
    only_skipped[:96, 128:] = True  # covered by no chip but the skipped one
    assert np.isnan(ndvi_map[:, only_skipped]).all()
    assert np.isfinite(ndvi_map[:, ~only_skipped]).all()


def test_cube_smaller_than_a_chip_is_padded_and_cropped(tmp_path, tiny_weights):
    cube = synthetic_cube(tmp_path / "small.nc", height=100, width=90, frames=11)
    out = tmp_path / "f.nc"
    run_forecasts([ForecastJob(cube, out)], weights=tiny_weights, device="cpu",
                  settings=ForecastSettings(horizon=2, sampler=FAST, members=2))
    with xr.open_dataset(out) as ds, xr.open_dataset(cube) as source:
        assert ds["ndvi_pred"].shape == (2, 100, 90) and ds["ndvi_member"].shape == (2, 2, 100, 90)
        assert np.isfinite(ds["ndvi_pred"].values).all()
        assert np.array_equal(ds["x"].values, source["x"].values)
