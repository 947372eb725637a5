"""Meteorology for forecasts: cube (series and gridded), --weather, climatology, the unconditional fallback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from tests.forecast_fixtures import synthetic_cube, weather_file, write_weights
from vegediff_cli.config import METEO_MEAN, METEO_STD, SamplerSettings
from vegediff_cli.cube.readers import open_cube
from vegediff_cli.pipeline.meteo.inputs import MeteoValues, resolve_meteo

STEP = pd.Timedelta(days=5)


def _model_dates(start: str, context: int = 10, horizon: int = 20) -> pd.DatetimeIndex:
    first = pd.Timestamp(start) - STEP * context
    return pd.DatetimeIndex([first + STEP * k for k in range(context + horizon)])


def test_gridded_values_are_bilinear_between_nodes_and_nan_aware():
    values = np.zeros((1, 8, 3, 2, 2), dtype="float32")
    values[..., 0, 1] = 10.0  # north-east node
    values[..., 1, 1] = 20.0  # south-east node
    grid = MeteoValues(pd.DatetimeIndex(["2022-06-01"]), values, node_y=np.array([100.0, 0.0]), node_x=np.array([0.0, 10.0]))
    assert grid.at(100.0, 10.0)[0, 0, 0] == pytest.approx(10.0)  # on a node
    assert grid.at(50.0, 5.0)[0, 0, 0] == pytest.approx(7.5)  # centre: mean of 0, 10, 0, 20
    assert grid.at(500.0, 50.0)[0, 0, 0] == pytest.approx(10.0)  # beyond the grid: clamped to the edge
    values[..., 1, 0] = np.nan  # a node without data is left out, the others renormalised
    assert grid.at(50.0, 5.0)[0, 0, 0] == pytest.approx(10.0)


def test_hindcast_uses_the_cube_and_future_beyond_it_uses_climatology(tmp_path):
    """Two years of frames: a forecast starting inside the cube reads it; past its end, the climatology."""
    path = synthetic_cube(tmp_path / "long.nc", height=16, width=16, frames=150, first="2020-03-01", landcover=False)
    cube = open_cube(path)
    frames = pd.DatetimeIndex(cube["time"].values)
    inside = resolve_meteo(cube, model_dates=_model_dates(f"{frames[100]:%Y-%m-%d}"), context_frames=10, requested=20)
    assert inside.source == "cube" and inside.conditioned and set(inside.per_step) == {"cube"}
    after = resolve_meteo(cube, model_dates=_model_dates(f"{frames[-1] + STEP:%Y-%m-%d}"), context_frames=10, requested=20)
    assert after.source == "climatology" and set(after.per_step) == {"climatology"}
    # the climatology of a date is the mean of the same season's frames of earlier years
    condition = after.at(float(cube["y"][0]), float(cube["x"][0]))  # (30, 24) standardised
    date = frames[-1] + STEP
    gap = np.abs(frames.day_of_year.values - date.day_of_year)
    same = (np.minimum(gap, 365 - gap) <= 7) & (frames <= date - pd.Timedelta(days=300))
    expected_tg = cube["eobs_tg"].sel(stat="mean").values[same].mean()
    assert condition[10, 0] == pytest.approx((expected_tg - METEO_MEAN["tg"]) / METEO_STD["tg"], abs=1e-4)
    # straddling the cube's end: the cube while it lasts, the climatology after
    mixed = resolve_meteo(cube, model_dates=_model_dates(f"{frames[-5]:%Y-%m-%d}"), context_frames=10, requested=20)
    assert mixed.per_step[:5] == ("cube",) * 5 and mixed.per_step[5] == "climatology"
    assert mixed.source == "cube+climatology"


def test_short_cube_without_future_meteorology_is_unconditional(tmp_path):
    cube = open_cube(synthetic_cube(tmp_path / "c.nc", height=16, width=16, frames=12, landcover=False))
    start = pd.Timestamp(cube["time"].values[-1]) + STEP
    meteo = resolve_meteo(cube, model_dates=_model_dates(f"{start:%Y-%m-%d}"), context_frames=10, requested=20)
    assert meteo.source == "unconditional" and not meteo.conditioned
    assert (meteo.at(0.0, 0.0) == 0).all()


def test_weather_file_wins_for_the_future_and_partial_cover_is_recorded(tmp_path):
    cube = open_cube(synthetic_cube(tmp_path / "c.nc", height=16, width=16, frames=12, landcover=False))
    start = pd.Timestamp(cube["time"].values[-1]) + STEP
    days = pd.date_range(start - pd.Timedelta(days=10), start + pd.Timedelta(days=30), freq="D")  # 7 frames' worth
    weather = weather_file(tmp_path / "ecmwf.nc", days, warm=5.0)
    meteo = resolve_meteo(cube, model_dates=_model_dates(f"{start:%Y-%m-%d}"), context_frames=10, requested=20,
                          weather=weather)
    assert meteo.source == "ecmwf.nc" and meteo.conditioned
    assert meteo.per_step[:7] == ("ecmwf.nc",) * 7 and meteo.per_step[7:] == ("none",) * 13
    condition = meteo.at(0.0, 0.0)
    with xr.open_dataset(weather) as ds:
        daily_tg = ds["eobs_tg"].sel(time=slice(start - pd.Timedelta(days=4), start)).values
    assert condition[10, 0] == pytest.approx((daily_tg.mean() - METEO_MEAN["tg"]) / METEO_STD["tg"], abs=1e-4)
    assert (condition[17:] == 0).all()  # uncovered dates: the E-OBS mean


def test_gridded_cube_meteorology_differs_between_chips(tmp_path, cli):
    """A 256 px cube with temperature rising eastwards: chips on the east get warmer conditions."""
    from vegediff_cli.model.presets import PRESETS
    from vegediff_cli.pipeline.forecast.plan import ForecastSettings, plan_forecast

    path = synthetic_cube(tmp_path / "grid.nc", height=128, width=256, frames=12, meteo="grid", landcover=False)
    cube = open_cube(path)
    assert cube["eobs_tg"].dims == ("time", "stat", "meteo_y", "meteo_x")
    plan = plan_forecast(cube, PRESETS["tiny"], ForecastSettings(horizon=2, start=pd.Timestamp(cube["time"].values[10])))
    assert plan.meteo.source == "cube"
    west, east = plan.meteo.at(float(cube["y"][64]), float(cube["x"][64])), plan.meteo.at(float(cube["y"][64]), float(cube["x"][192]))
    assert east[0, 0] > west[0, 0]  # tg mean, standardised
    weights = write_weights(tmp_path / "tiny.safetensors")
    result = cli("forecast", "--input", path, "--weights", weights, "--steps", "1", "--horizon", "2",
                 "--start", f"{pd.Timestamp(cube['time'].values[10]):%Y-%m-%d}", "--output", tmp_path / "f.nc",
                 "--no-cogs", "--quiet")
    assert result.code == 0, result
    with xr.open_dataset(tmp_path / "f.nc") as ds:
        assert ds.attrs["meteo_source"] == "cube" and np.isfinite(ds["ndvi_pred"].values).all()


def test_weather_grid_in_another_crs_is_refused(tmp_path):
    from vegediff_cli.errors import GeoreferenceError

    source = synthetic_cube(tmp_path / "grid.nc", height=32, width=32, frames=12, meteo="grid", landcover=False)
    cube = open_cube(source)
    other = cube.rio.write_crs("EPSG:32633")
    other[[v for v in other.data_vars if v.startswith("eobs_")]].to_netcdf(tmp_path / "w.nc")
    start = pd.Timestamp(cube["time"].values[10])
    with pytest.raises(GeoreferenceError, match="EPSG:32633"):
        resolve_meteo(cube, model_dates=_model_dates(f"{start:%Y-%m-%d}"), context_frames=10, requested=2,
                      weather=Path(tmp_path / "w.nc"))


def _weights_reading_conditions(tmp_path):
    """Tiny weights whose denoiser reads meteorology and static layers (adaLN-zero init ignores the
    condition, so every weight gets a value): (model, metadata, file)."""
    from vegediff_cli.model.weights import load_weights, save_weights

    model, metadata = load_weights(write_weights(tmp_path / "init.safetensors"))
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.vegenet.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model, metadata, save_weights(model, tmp_path / "full.safetensors", metadata=metadata)


def _forecasts(tmp_path, runs: dict, settings, *attrs: str) -> dict:
    """name -> (ndvi_pred, *attrs) of a forecast per run (name -> (cube, weights))."""
    from vegediff_cli.pipeline.forecast.run import ForecastJob, run_forecasts

    out = {}
    for name, (cube, weights) in runs.items():
        run_forecasts([ForecastJob(cube, tmp_path / f"{name}_f.nc")], weights=weights, settings=settings, device="cpu")
        with xr.open_dataset(tmp_path / f"{name}_f.nc") as ds:
            out[name] = (ds["ndvi_pred"].values, *(ds.attrs[a] for a in attrs))
    return out


def test_variables_the_weights_hardly_saw_are_left_at_the_mean(tmp_path):
    """Weights whose training frames rarely held hu/fg/qq (`meteo_coverage`) forecast as if the cube lacked them."""
    from vegediff_cli.model.weights import save_weights
    from vegediff_cli.pipeline.forecast.model import ignored_meteo_variables
    from vegediff_cli.pipeline.forecast.plan import ForecastSettings
    from vegediff_cli.training.index import describe, meteo_coverage

    path = synthetic_cube(tmp_path / "cube.nc", height=128, width=128, frames=30)
    model, metadata, full = _weights_reading_conditions(tmp_path)
    coverage = {v: 1.0 for v in ("tg", "tn", "tx", "rr", "pp")} | {"hu": 0.14, "fg": 0.14, "qq": 0.14}
    partial = save_weights(model, tmp_path / "partial.safetensors",
                           metadata={**metadata, "meteo_coverage": json.dumps(coverage)})
    assert ignored_meteo_variables(partial) == ("hu", "fg", "qq") and ignored_meteo_variables(full) == ()
    with xr.open_dataset(path) as ds:
        ds.drop_vars(["eobs_hu", "eobs_fg", "eobs_qq"]).to_netcdf(tmp_path / "five.nc")
    settings = ForecastSettings(horizon=2, start=pd.Timestamp(open_cube(path)["time"].values[10]),
                                precision="fp32", sampler=SamplerSettings(steps=2))
    runs = {"partial": (path, partial), "five": (tmp_path / "five.nc", full), "full": (path, full)}
    out = _forecasts(tmp_path, runs, settings, "meteo_ignored")
    np.testing.assert_array_equal(out["partial"][0], out["five"][0])
    assert out["partial"][1] == "hu fg qq" and out["full"][1] == ""
    assert np.nanmax(np.abs(out["full"][0] - out["partial"][0])) > 0  # the variables matter when used
    # coverage as the trainer records it: fraction of conditioned frames with the variable
    assert meteo_coverage([describe(tmp_path / "five.nc")]) == {v: (1.0 if v in ("tg", "tn", "tx", "rr", "pp") else 0.0)
                                     for v in ("tg", "tn", "tx", "rr", "pp", "hu", "fg", "qq")}


def test_static_layers_the_weights_hardly_saw_are_left_out(tmp_path):
    """Weights whose conditioned training frames rarely held land cover (`static_coverage`) forecast as if the
    cube lacked it; the layer is listed in `static_ignored`, and it changes the forecast when it is used."""
    from vegediff_cli.model.weights import save_weights
    from vegediff_cli.pipeline.forecast.model import ignored_static_layers
    from vegediff_cli.pipeline.forecast.plan import ForecastSettings
    from vegediff_cli.training.index import describe, static_coverage

    path = synthetic_cube(tmp_path / "cube.nc", height=128, width=128, frames=30)
    model, metadata, full = _weights_reading_conditions(tmp_path)
    with xr.open_dataset(path) as ds:
        ds.drop_vars(["esawc_lc"]).to_netcdf(tmp_path / "no_lc.nc")
    # coverage as the trainer records it: the cube with land cover and the one without, 30 frames each
    coverage = static_coverage([describe(path), describe(tmp_path / "no_lc.nc"), describe(tmp_path / "no_lc.nc")])
    assert coverage == {"cop_dem": 1.0, "nasa_dem": 0.0, "alos_dem": 0.0, "esawc_lc": 0.3333, "geom_cls": 0.0}
    partial = save_weights(model, tmp_path / "partial.safetensors",
                           metadata={**metadata, "static_coverage": json.dumps(coverage)})
    assert ignored_static_layers(partial) == ("nasa_dem", "alos_dem", "esawc_lc", "geom_cls")
    assert ignored_static_layers(full) == ()
    settings = ForecastSettings(horizon=2, start=pd.Timestamp(open_cube(path)["time"].values[10]),
                                precision="fp32", sampler=SamplerSettings(steps=2))
    runs = {"partial": (path, partial), "no_lc": (tmp_path / "no_lc.nc", full), "full": (path, full)}
    out = _forecasts(tmp_path, runs, settings, "static_ignored", "static_layers")
    np.testing.assert_array_equal(out["partial"][0], out["no_lc"][0])
    assert out["partial"][1:] == ("esawc_lc", "cop_dem") and out["full"][1:] == ("", "cop_dem esawc_lc")
    assert np.nanmax(np.abs(out["full"][0] - out["partial"][0])) > 0  # land cover matters when used



def test_context_anomaly_weights_forecast_the_weather_change_not_the_climate(tmp_path):
    """Weights reading the meteorology as each frame's change from the context mean (`context_anomaly`)
    forecast a cube 3 degrees warmer in every frame exactly as the original (same weather changes), through
    the whole forecast path (context stream cached once per chip); weights reading absolute values do not."""
    import dataclasses

    from vegediff_cli.model.vegediff import VegeDiff
    from vegediff_cli.model.weights import save_weights
    from vegediff_cli.pipeline.forecast.plan import ForecastSettings

    path = synthetic_cube(tmp_path / "cube.nc", height=128, width=128, frames=30)
    model, metadata, absolute = _weights_reading_conditions(tmp_path)
    cfg = dataclasses.replace(model.cfg, vegenet=dataclasses.replace(model.cfg.vegenet, meteorology="context_anomaly"))
    anomaly_model = VegeDiff(cfg)
    anomaly_model.load_state_dict(model.state_dict())
    anomaly = save_weights(anomaly_model, tmp_path / "anomaly.safetensors", metadata=metadata)
    with xr.open_dataset(path) as ds:
        warmer = ds.load()
    for name in ("eobs_tg", "eobs_tn", "eobs_tx"):
        warmer[name] = warmer[name] + 3.0
    warmer.to_netcdf(tmp_path / "warmer.nc")
    settings = ForecastSettings(horizon=2, start=pd.Timestamp(open_cube(path)["time"].values[10]),
                                precision="fp32", sampler=SamplerSettings(steps=2))
    runs = {"anomaly": (path, anomaly), "anomaly_warmer": (tmp_path / "warmer.nc", anomaly),
            "absolute": (path, absolute), "absolute_warmer": (tmp_path / "warmer.nc", absolute)}
    out = _forecasts(tmp_path, runs, settings, "meteorology")
    np.testing.assert_allclose(out["anomaly_warmer"][0], out["anomaly"][0], atol=1e-4)
    assert np.nanmax(np.abs(out["absolute_warmer"][0] - out["absolute"][0])) > 1e-3
    assert np.nanmax(np.abs(out["anomaly"][0] - out["absolute"][0])) > 1e-3
    assert out["anomaly"][1] == "context_anomaly" and out["absolute"][1] == "absolute"


def test_absolute_and_anomaly_weights_read_both_halves_through_the_forecast_path(tmp_path):
    """`absolute_and_anomaly` weights read 48 inputs, the values then their change from the context mean.
    With the embedding's anomaly half zeroed they forecast exactly as the `absolute` weights they come
    from; with its value half zeroed, exactly as the `context_anomaly` ones (whole forecast path)."""
    import dataclasses

    import torch

    from vegediff_cli.model.vegediff import VegeDiff
    from vegediff_cli.model.weights import save_weights
    from vegediff_cli.pipeline.forecast.plan import ForecastSettings

    path = synthetic_cube(tmp_path / "cube.nc", height=128, width=128, frames=30)
    model, metadata, absolute = _weights_reading_conditions(tmp_path)
    files = {"absolute": absolute}
    for mode in ("context_anomaly", "absolute_and_anomaly"):
        cfg = dataclasses.replace(model.cfg, vegenet=dataclasses.replace(model.cfg.vegenet, meteorology=mode))
        for half in ((None,) if mode == "context_anomaly" else ("values", "change")):
            state = dict(model.state_dict())
            key = "vegenet.meteo_embed.0.weight"
            if half is not None:
                zeros = torch.zeros_like(state[key])
                state[key] = torch.cat([state[key], zeros] if half == "values" else [zeros, state[key]], dim=1)
            variant = VegeDiff(cfg)
            variant.load_state_dict(state)
            name = mode if half is None else f"both_{half}"
            files[name] = save_weights(variant, tmp_path / f"{name}.safetensors", metadata=metadata)
    settings = ForecastSettings(horizon=2, start=pd.Timestamp(open_cube(path)["time"].values[10]),
                                precision="fp32", sampler=SamplerSettings(steps=2))
    out = _forecasts(tmp_path, {name: (path, weights) for name, weights in files.items()},
                     settings, "meteorology")
    np.testing.assert_allclose(out["both_values"][0], out["absolute"][0], atol=1e-4)
    np.testing.assert_allclose(out["both_change"][0], out["context_anomaly"][0], atol=1e-4)
    assert np.nanmax(np.abs(out["absolute"][0] - out["context_anomaly"][0])) > 1e-3
    assert out["both_values"][1] == "absolute_and_anomaly"
