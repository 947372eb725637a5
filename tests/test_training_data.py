"""Training sources made consistent with the model's input: real series, band mappings, clear-sky test, dates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from vegediff_cli.cube.masks import clear_from_scl
from vegediff_cli.model.inputs import date_features
from vegediff_cli.training.band_models import DARK_OBJECT_L2A, estimate_blue, toa_to_l2a
from vegediff_cli.training.clear_sky import detect_clear
from vegediff_cli.training.sequences import discover, load_sequence
from vegediff_cli.training.toa_series import frame_dates, new_acquisitions
from vegediff_cli.training.windows import encode_sequence, sample_window, spatial_size, square


def test_date_features_tell_seasons_and_hemispheres_apart():
    dates = pd.DatetimeIndex(["2021-01-01", "2021-04-01", "2021-07-01", "2021-12-31"])
    north, south = date_features(dates, 59.0), date_features(dates, -35.0)
    assert north.shape == (4, 3) and north.dtype == np.float32
    assert north[0, 0] == pytest.approx(0.0) and north[0, 1] == pytest.approx(1.0)  # 1 January: angle 0
    assert north[2, 1] < -0.99  # early July: the far side of the circle
    assert np.abs(north[3, :2] - north[0, :2]).max() < 0.03  # 31 December sits next to 1 January
    assert north[0, 2] == pytest.approx(59 / 90) and south[0, 2] == pytest.approx(-35 / 90)


def test_blue_estimate_on_the_romanian_forest_where_the_true_b02_is_known(shared_data):
    """The 20 m series lacks B02; its 10 m twin has B2 of the same acquisitions: the estimate's error, measured."""
    folder = shared_data / "sentinel2_series"
    coarse = xr.open_dataset(folder / "romania_forest_2015-2021_20m.nc")
    fine = xr.open_dataset(folder / "romania_forest_2015-2021_10m.nc")
    t, h, w = coarse["B3"].shape
    true_blue = fine["B2"].values.reshape(t, h, 2, w, 2).mean(axis=(2, 4)) * 1e-4
    clear = np.isin(coarse["SCL"].values, (4, 5)) & np.isfinite(true_blue)  # vegetation and bare soil, as in the fit
    estimate = estimate_blue(coarse["B3"].values * 1e-4, coarse["B4"].values * 1e-4, coarse["B8A"].values * 1e-4)
    error = (estimate - true_blue)[clear & np.isfinite(estimate)]
    assert np.sqrt(np.mean(error**2)) < 0.012  # the model card states 0.010 (fit without this source)
    assert abs(float(np.mean(error))) < 0.005


def test_clear_sky_test_agrees_with_the_scene_classification(shared_data):
    """detect_clear (for series without a mask) on an L2A series whose SCL is known."""
    series = xr.open_dataset(shared_data / "sentinel2_series" / "romania_forest_2015-2021_20m.nc")
    fine = xr.open_dataset(shared_data / "sentinel2_series" / "romania_forest_2015-2021_10m.nc")
    t, h, w = series["B3"].shape
    blue = fine["B2"].values.reshape(t, h, 2, w, 2).mean(axis=(2, 4))
    bgrn = np.stack([blue, series["B3"].values, series["B4"].values, series["B8A"].values], axis=1) * 1e-4
    truth = clear_from_scl(series["SCL"].values)
    found = detect_clear(bgrn, np.ones(t, dtype=bool))
    observed = np.isfinite(bgrn).all(axis=1)
    agreement = (found == truth)[observed].mean()
    precision = (found & truth)[observed].sum() / found[observed].sum()
    assert agreement > 0.7 and precision > 0.9
    nothing = detect_clear(bgrn, np.zeros(t, dtype=bool))
    assert not nothing.any()  # frames that are repeats, not acquisitions, are never clear


def test_dark_object_subtraction_reaches_the_l2a_dark_levels():
    rng = np.random.default_rng(0)
    l2a = rng.uniform(0.02, 0.3, size=(3, 4, 32, 32)).astype("float32")
    l2a[:, :3, :4, :4] = np.asarray(DARK_OBJECT_L2A, dtype="float32")[None, :, None, None]  # a dark forest patch
    path = np.array([0.06, 0.04, 0.02, 0.0], dtype="float32")[None, :, None, None] * np.array([1.0, 1.5, 0.5])[:, None, None, None]
    toa = l2a + path
    back = toa_to_l2a(toa, np.ones((3, 32, 32), dtype=bool))
    np.testing.assert_allclose(back[:, :3, :4, :4], l2a[:, :3, :4, :4], atol=2e-3)  # the dark patch lands on its level
    np.testing.assert_allclose(back[:, 3], toa[:, 3])  # B8A untouched


def test_the_32uqc_l1c_year_becomes_a_sequence(shared_data):
    path = shared_data / "sentinel2_series" / "32UQC_2020_L1C_rgbn_uint8.npy"
    raw = np.load(path)
    toa = raw.transpose(3, 2, 0, 1)
    fresh = new_acquisitions(toa)
    assert 40 <= fresh.sum() < raw.shape[-1]  # the file repeats frames where nothing new was acquired
    dates = frame_dates(2020, raw.shape[-1])
    assert dates[0] == pd.Timestamp("2020-01-01") and dates[-1] == pd.Timestamp("2020-11-30")
    seq = load_sequence(path)
    assert seq.frames.shape[1:] == (4, 127, 127)
    assert 50 < seq.latitude < 53  # MGRS 32UQC, central Germany
    assert 0.1 < seq.valid.mean() < 0.5  # a cloudy central European year, masked
    clear = seq.frames.transpose(1, 0, 2, 3)[:, seq.valid]  # (4, N) clear pixels
    ndvi = (clear[3] - clear[2]) / (clear[3] + clear[2])
    assert 0.85 < np.percentile(ndvi, 99) < 0.97  # full-cover crops, like the L2A sources (0.89-0.93)
    summer = seq.times.month.isin([6, 7])
    assert np.nanmedian(np.where(seq.valid[summer][:, None], seq.frames[summer], np.nan)[:, 0]) < 0.06  # blue, after DOS


def test_discover_uses_every_season_and_skips_the_10m_twin(shared_data):
    names = [p.name for p in discover([shared_data])]
    assert "romania_forest_2015-2021_20m.nc" in names and "romania_forest_2015-2021_10m.nc" not in names
    assert "france_rhone_2017-2019_20m.nc" in names and "32UQC_2020_L1C_rgbn_uint8.npy" in names
    assert not any("reference_predictions" in n or n.endswith(".tif") for n in names)


def test_a_tiny_series_is_padded_and_windows_carry_dates(shared_data):
    """The Rhone valley series is 10 x 10 px: padded to 16 px with pixels that never count."""
    import torch

    from vegediff_cli.model.presets import PRESETS
    from vegediff_cli.model.vegediff import VegeDiff

    seq = load_sequence(shared_data / "sentinel2_series" / "france_rhone_2017-2019_20m.nc")
    assert seq.frames.shape[-2:] == (10, 10) and np.isfinite(seq.frames[seq.valid.any(axis=(1, 2))]).any()
    side = spatial_size(seq)
    frames, valid = square(seq, side)
    assert side == 16 and frames.shape[-2:] == (16, 16) and not valid[:, 10:, :].any() and not valid[:, :, 10:].any()
    torch.manual_seed(0)
    encoded = encode_sequence(seq, VegeDiff(PRESETS["tiny"]).eval(), device=torch.device("cpu"))
    window = sample_window(encoded, np.random.default_rng(0))
    assert window["dates"].shape == (30, 3)
    # each 8 x 8 latent cell weighs its share of real clear pixels: at most 100 of the 256 in a frame
    assert float(window["weights"].sum(dim=(1, 2, 3)).max()) <= 100 / 64 + 1e-6
