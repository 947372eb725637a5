"""pipeline/ensemble/sources.py: which forecast an ensemble reads and when it is run again, called directly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from vegediff_cli.config import SamplerSettings
from vegediff_cli.errors import InputNotFoundError, UsageError
from vegediff_cli.pipeline.ensemble.sources import ensemble_sources, forecast_cube, is_forecast, stale_reason
from vegediff_cli.pipeline.forecast.plan import ForecastSettings
from vegediff_cli.workdir import TileFiles

TILE = "29SND"


def _write_cube(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    xr.Dataset({"s2_B04": (("time", "y", "x"), np.zeros((2, 2, 2), "f4"))}).to_netcdf(path)
    return path


def _write_forecast(path: Path, *, members: int = 1, mtime: float | None = None, **attrs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = xr.Dataset({"ndvi_pred": (("time", "y", "x"), np.zeros((2, 2, 2), "f4"))},
                    attrs={"seed": 0, "horizon": 2, "sampler": "euler", "steps": 10, "conditioned": 1,
                           "guidance_scale": 1.0, "forecast_start": "2017-08-13", "precision": "fp32", **attrs})
    if members > 1:
        ds["ndvi_member"] = (("member", "time", "y", "x"), np.zeros((members, 2, 2, 2), "f4"))
    ds.to_netcdf(path)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture()
def tile_files(tmp_path: Path) -> TileFiles:
    files = TileFiles.of(tmp_path, TILE)
    _write_cube(files.cube)
    older = files.cube.stat().st_mtime
    os.utime(files.cube, (older - 100, older - 100))  # the forecast below is newer than its cube
    return files


def _settings(**changes) -> ForecastSettings:
    sampler = SamplerSettings(sampler=changes.pop("sampler", "euler"), steps=changes.pop("steps", 10),
                              guidance_scale=changes.pop("guidance", 1.0))
    return ForecastSettings(**{"horizon": 2, "seed": 0, "start": pd.Timestamp("2017-08-13"), "precision": "fp32",
                               **changes}, sampler=sampler)


def test_a_forecast_made_with_the_asked_settings_is_not_stale(tile_files):
    forecast = _write_forecast(tile_files.forecast)
    assert stale_reason(forecast, tile_files.cube, _settings(), asked={"seed", "horizon", "steps", "start"}) is None


def test_a_setting_is_compared_only_when_asked_for(tile_files):
    forecast = _write_forecast(tile_files.forecast)
    assert stale_reason(forecast, tile_files.cube, _settings(seed=7), asked=set()) is None
    reason = stale_reason(forecast, tile_files.cube, _settings(seed=7), asked={"seed"})
    assert reason == "it was made with seed=0, this run asks for 7"
    reason = stale_reason(forecast, tile_files.cube, _settings(guidance=2.0), asked={"guidance"})
    assert reason == "it was made with guidance_scale=1.0, this run asks for 2.0"


def test_guidance_of_an_unconditioned_forecast_is_not_compared(tile_files):
    forecast = _write_forecast(tile_files.forecast, conditioned=0)
    assert stale_reason(forecast, tile_files.cube, _settings(guidance=2.0), asked={"guidance"}) is None


def test_a_cube_newer_than_a_forecast_without_provenance_makes_it_stale(tile_files):
    forecast = _write_forecast(tile_files.forecast, mtime=tile_files.cube.stat().st_mtime - 50)
    assert stale_reason(forecast, tile_files.cube, _settings(), asked=set()) == \
        f"{tile_files.cube} is newer than {forecast}"


def test_the_tile_forecast_is_run_when_missing_stale_or_short_of_members(tile_files, tmp_path):
    common = {"tile": TILE, "root": tmp_path, "from_input": False, "settings": _settings(), "asked": set()}
    assert forecast_cube(tile_files.forecast, None, members=None, **common) == (tile_files.cube, None)
    _write_forecast(tile_files.forecast, members=4)
    assert forecast_cube(tile_files.forecast, None, members=4, **common) == (None, None)
    assert forecast_cube(tile_files.forecast, None, members=8, **common) == (tile_files.cube, None)
    cube, reason = forecast_cube(tile_files.forecast, None, members=4, **{**common, "settings": _settings(seed=3),
                                                                          "asked": {"seed"}})
    assert cube == tile_files.cube and reason == "it was made with seed=0, this run asks for 3"


def test_a_given_forecast_with_too_few_members_is_a_usage_error(tmp_path):
    forecast = _write_forecast(tmp_path / "given.nc", members=1)
    with pytest.raises(UsageError, match="holds 1 member"):
        forecast_cube(forecast, None, tile=None, root=tmp_path, from_input=True, members=None,
                      settings=_settings(), asked=set())


def test_sources_of_an_input_cube_a_forecast_and_a_tile(tmp_path):
    target = tmp_path / "out" / "ens.nc"
    cube = _write_cube(tmp_path / "cube.nc")
    forecast = _write_forecast(tmp_path / "given.nc", members=3)
    assert is_forecast(forecast) and not is_forecast(cube)
    assert ensemble_sources(cube, None, tmp_path, target, None) == (tmp_path / "out" / "ens_forecast.nc", cube)
    assert ensemble_sources(forecast, None, tmp_path, target, None) == (forecast, None)
    assert ensemble_sources(None, TILE, tmp_path, target, None) == (TileFiles.of(tmp_path, TILE).forecast, None)
    with pytest.raises(InputNotFoundError, match="does not exist"):
        ensemble_sources(tmp_path / "missing.nc", None, tmp_path, target, None)
    with pytest.raises(UsageError, match="no input given"):
        ensemble_sources(None, None, tmp_path, target, None)
