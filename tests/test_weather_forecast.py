"""Weather for the forecast period (`--weather`): Open-Meteo's forecast, then one past year per member.

The loopback Open-Meteo server serves xclim's real ERA5 daily series of Victoria (1990-1993) at
the synthetic cube's site, so scenario members read real, different years.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from vegediff_cli.config import METEO_VARS, SamplerSettings
from vegediff_cli.cube.readers import open_cube
from vegediff_cli.model.presets import PRESETS
from vegediff_cli.model.vegediff import VegeDiff
from vegediff_cli.model.weights import save_weights
from vegediff_cli.pipeline.forecast.plan import ForecastSettings
from vegediff_cli.pipeline.forecast.run import ForecastJob, run_forecasts
from vegediff_cli.pipeline.meteo.inputs import cube_centre_lonlat, resolve_meteo
from vegediff_cli.sources.openmeteo import OpenMeteo

from .forecast_fixtures import synthetic_cube, write_weights
from .openmeteo_server import OpenMeteoServer, archive_from_cf_era5
from .test_era5 import CF_SAMPLE
from .test_openmeteo import FAST

TODAY = "1993-06-10"  # "today" for these tests: the forecast API covers up to 1993-06-25


@pytest.fixture(scope="module")
def cube_path(tmp_path_factory) -> Path:
    """14 frames 1993-05-01..07-05 (5-day steps) with series meteorology; a forecast from frame 10 is a hindcast."""
    return synthetic_cube(tmp_path_factory.mktemp("w") / "cube.nc", height=128, width=128, frames=14, first="1993-05-01")


@pytest.fixture(scope="module")
def archive(shared_data, cube_path):
    lon, lat = cube_centre_lonlat(open_cube(cube_path))
    return archive_from_cf_era5(shared_data / CF_SAMPLE, location="Victoria", place_at=(lon, lat))


def _plan(cube_path, client, mode, *, members=3, requested=4):
    cube = open_cube(cube_path)
    dates = pd.DatetimeIndex(cube["time"].values[:10]).append(pd.date_range("1993-06-20", periods=20, freq="5D"))
    return resolve_meteo(cube, model_dates=dates, context_frames=10, requested=requested, weather=mode,
                         members=members, client=client)


def test_forecast_then_one_past_year_per_member(cube_path, archive, shared_data, monkeypatch, tmp_path):
    monkeypatch.setenv("VEGEDIFF_TODAY", TODAY)
    with OpenMeteoServer(archive, today=TODAY) as server:
        client = OpenMeteo(server.archive_url, server.forecast_url, policy=FAST, cache_dir=tmp_path / "c")
        meteo = _plan(cube_path, client, "open-meteo")
        forecast_calls = len(server.requests("/v1/forecast"))
    # 06-20 and 06-25 lie within today + 15 days: the forecast API; 06-30 and 07-05: past years' weather
    assert meteo.per_step == ("open-meteo forecast", "open-meteo forecast", "scenario", "scenario")
    assert meteo.scenario_labels == ("era5 1992", "era5 1991", "era5 1990") and forecast_calls == 1
    assert meteo.member_labels()[2] == ["open-meteo forecast", "open-meteo forecast", "era5 1990", "era5 1990"]
    cond = meteo.at(0.0, 0.0)  # (members, frames, 24)
    assert cond.shape == (3, 30, 24)
    assert np.array_equal(cond[0, :12], cond[1, :12])  # context and forecast: shared
    assert not np.allclose(cond[0, 12:14], cond[1, 12:14])  # scenario frames: different years
    # by hand: member 0 at 1993-06-30 = Victoria's real 1992-06-26..06-30; tg mean of tas - 273.15 (0.1 degC rounding)
    with xr.open_dataset(shared_data / CF_SAMPLE) as ds:
        tas = ds["tas"].sel(location="Victoria", time=slice("1992-06-26", "1992-06-30")).values - 273.15
    raw = meteo.scenarios[0].at(0.0, 0.0)  # (2, 8, 3) in E-OBS units at 06-30, 07-05
    assert raw[0, METEO_VARS.index("tg"), 0] == pytest.approx(np.round(tas, 1).mean(), abs=1e-4)
    assert raw[0, METEO_VARS.index("tg"), 2] == pytest.approx(np.round(tas, 1).max(), abs=1e-4)


def test_auto_keeps_the_cube_and_needs_no_network(cube_path, monkeypatch):
    """A hindcast the cube covers: --weather auto reads the cube and never opens a connection (the URL is closed)."""
    meteo = _plan(cube_path, None, "auto")
    assert meteo.per_step == ("cube",) * 4 and not meteo.per_member


def test_single_member_gets_the_mean_of_past_years(cube_path, archive, monkeypatch, tmp_path):
    monkeypatch.setenv("VEGEDIFF_TODAY", TODAY)
    monkeypatch.setattr("vegediff_cli.pipeline.meteo.weather.CLIMATOLOGY_YEARS", 3)
    with OpenMeteoServer(archive, today=TODAY) as server:
        client = OpenMeteo(server.archive_url, server.forecast_url, policy=FAST, cache_dir=tmp_path / "c")
        meteo = _plan(cube_path, client, "scenarios", members=1)
    assert meteo.scenario_labels == ("era5 mean 1990-1992",) and meteo.per_step == ("scenario",) * 4
    assert meteo.at(0.0, 0.0).shape == (1, 30, 24)


def test_cli_scenario_ensemble_records_the_weather_of_every_member(cli, cube_path, archive, monkeypatch, tmp_path):
    weights = write_weights(tmp_path / "tiny.safetensors")
    monkeypatch.setenv("VEGEDIFF_TODAY", TODAY)
    with OpenMeteoServer(archive, today=TODAY) as server:
        monkeypatch.setenv("VEGEDIFF_OPEN_METEO_ARCHIVE_URL", server.archive_url)
        monkeypatch.setenv("VEGEDIFF_OPEN_METEO_FORECAST_URL", server.forecast_url)
        result = cli("forecast", "--input", cube_path, "--weights", weights, "--output", tmp_path / "f.nc", "--steps", "1",
                     "--start", "1993-06-20", "--horizon", "4", "--members", "3", "--weather", "scenarios", "--no-cogs",
                     "--json", "--quiet")
    assert result.code == 0, result
    summary = json.loads(result.out)
    assert summary["weather_per_member_step"] == [["era5 1992"] * 4, ["era5 1991"] * 4, ["era5 1990"] * 4]
    assert summary["meteo_source"] == "scenarios (era5 1992, era5 1991, era5 1990)"
    with xr.open_dataset(tmp_path / "f.nc") as ds:
        assert ds.attrs["weather_per_member"] == "era5 1992|era5 1991|era5 1990"
        assert ds.attrs["meteo_source_per_step"] == "scenario scenario scenario scenario"
        assert "Open-Meteo" in ds.attrs["meteo_attribution"]
        members = ds["ndvi_member"].values
    assert not np.allclose(members[0], members[1], equal_nan=True)


@pytest.mark.slow
def test_cli_offline_auto_goes_without_weather_and_open_meteo_is_exit_8(cli, monkeypatch, tmp_path):
    """Offline (the suite points Open-Meteo at a closed port), the default --weather auto says so on stderr and
    forecasts as --weather none would, recording that; --weather open-meteo, asked for by name, is exit 8."""
    monkeypatch.delenv("VEGEDIFF_WEATHER")  # the default: --weather auto
    cube = synthetic_cube(tmp_path / "cube.nc", height=128, width=128, frames=12)
    weights = write_weights(tmp_path / "tiny.safetensors")
    args = ["forecast", "--input", cube, "--weights", weights, "--steps", "1", "--horizon", "2", "--no-cogs", "--quiet"]
    result = cli(*args, "--output", tmp_path / "f.nc", "--json")
    assert result.code == 0, result
    assert "forecasting without downloaded weather" in result.err and "--weather open-meteo" in result.err
    assert cli(*args, "--output", tmp_path / "g.nc", "--weather", "none", "--json").code == 0
    with xr.open_dataset(tmp_path / "f.nc") as auto, xr.open_dataset(tmp_path / "g.nc") as none:
        assert auto.attrs["meteo_source"] == none.attrs["meteo_source"]
        np.testing.assert_array_equal(auto["ndvi_pred"].values, none["ndvi_pred"].values)
    result = cli(*args, "--output", tmp_path / "h.nc", "--weather", "open-meteo")
    assert result.code == 8 and "--weather none" in result.err.strip().splitlines()[-1]
    assert not (tmp_path / "h.nc").exists()


def test_worker_processes_forecast_scenario_weather_and_dates_as_this_process(cube_path, archive, monkeypatch, tmp_path):
    """The worker pool gets every per-chip input of the parent (per-member weather, date features): same file."""
    cfg = PRESETS["tiny"]
    torch.manual_seed(0)
    model = VegeDiff(replace(cfg, vegenet=replace(cfg.vegenet, date_channels=3)))
    with torch.no_grad():  # a fresh denoiser's zero-initialised output layers would ignore weather and dates
        for p in model.vegenet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    weights = save_weights(model, tmp_path / "dated.safetensors", metadata={"purpose": "tests"})
    settings = ForecastSettings(horizon=4, members=3, start=pd.Timestamp("1993-06-20"),
                                sampler=SamplerSettings(steps=1, guidance_scale=1.0))
    monkeypatch.setenv("VEGEDIFF_TODAY", TODAY)
    with OpenMeteoServer(archive, today=TODAY) as server:
        monkeypatch.setenv("VEGEDIFF_OPEN_METEO_ARCHIVE_URL", server.archive_url)
        monkeypatch.setenv("VEGEDIFF_OPEN_METEO_FORECAST_URL", server.forecast_url)
        runs = {n: run_forecasts([ForecastJob(cube_path, tmp_path / f"w{n}.nc", weather="scenarios")], weights=weights,
                                 settings=settings, device="cpu", workers=n)[0] for n in (0, 2)}
    assert runs[0].runtime["workers"] == 0 and runs[2].runtime["workers"] == 2
    assert runs[2].weather_per_member_step() == [["era5 1992"] * 4, ["era5 1991"] * 4, ["era5 1990"] * 4]
    with xr.open_dataset(tmp_path / "w0.nc") as a, xr.open_dataset(tmp_path / "w2.nc") as b:
        for name in ("ndvi_member", "ndvi_pred", "s2_B04_pred"):
            np.testing.assert_array_equal(b[name].values, a[name].values, err_msg=name)
        assert not np.allclose(a["ndvi_member"].values[0], a["ndvi_member"].values[1], equal_nan=True)
