"""Bad input to `vegediff forecast`: one-line errors, documented exit codes, nothing left on disk."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from tests.forecast_fixtures import synthetic_cube, weather_file, write_weights
from vegediff_cli.cube.netcdf import write_netcdf
from vegediff_cli.cube.readers import open_cube
from vegediff_cli.model.presets import PRESETS
from vegediff_cli.pipeline.forecast.plan import ForecastSettings, forecast_times
from vegediff_cli.pipeline.forecast.run import ForecastJob, run_forecasts


@pytest.fixture(scope="module")
def cube(tmp_path_factory) -> Path:
    return synthetic_cube(tmp_path_factory.mktemp("cube") / "cube.nc", height=128, width=128, frames=14)


def _no_files(folder: Path) -> None:
    assert [p.name for p in folder.iterdir() if p.name != "cube.nc"] == []


def _run(cli, cube, weights, out, *extra):
    return cli("forecast", "--input", cube, "--weights", weights, "--output", out, "--steps", "1", "--quiet", *extra)


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        (("--horizon", "21"), 2, "--horizon 21 is outside 1..20"),
        (("--horizon", "0"), 2, "--horizon 0"),
        (("--members", "0"), 2, "--members 0"),
        (("--sampler", "ddim"), 2, "--sampler 'ddim'"),
        (("--start", "2022-05-20"), 2, "needs the 10 frames"),
        (("--start", "May 40th"), 2, "is not a date"),
        (("--device", "tpu"), 2, "--device 'tpu'"),
        (("--min-clear-context", "11"), 2, "--min-clear-context 11"),
    ],
)
def test_bad_options_fail_with_one_line_and_exit_2(cli, cube, tiny_weights, tmp_path, extra, code, words):
    result = _run(cli, cube, tiny_weights, tmp_path / "f.nc", *extra)
    assert result.code == code, result
    assert words in result.err and len(result.err.strip().splitlines()) == 1
    _no_files(tmp_path)


def test_start_error_names_the_dates_the_cube_allows(cli, cube, tiny_weights, tmp_path):
    result = _run(cli, cube, tiny_weights, tmp_path / "f.nc", "--start", "2022-05-10")
    assert result.code == 2
    assert "holds 14 frames 2022-05-01 .. 2022-07-05" in result.err
    assert "choose --start between 2022-06-20 and 2022-07-10" in result.err


def test_start_between_frames_moves_to_the_next_frame_date():
    frames = pd.date_range("2022-05-01", periods=14, freq="5D")
    times = forecast_times(frames, start=pd.Timestamp("2022-06-18"), horizon=3, context_frames=10, model_horizon=20)
    assert f"{times.dates[0]:%Y-%m-%d}" == "2022-06-20"
    after = forecast_times(frames, start=pd.Timestamp("2022-07-08"), horizon=2, context_frames=10, model_horizon=20)
    assert f"{after.dates[0]:%Y-%m-%d}" == "2022-07-10"  # after the last frame: the next date of its 5-day grid
    assert len(after.model_dates) == 30 and list(after.context_index) == list(range(4, 14))


def test_missing_weights_exit_3(cli, cube, tmp_path):
    result = _run(cli, cube, tmp_path / "nope.safetensors", tmp_path / "f.nc")
    assert result.code == 3 and "nope.safetensors" in result.err and "--weights" in result.err


def test_missing_default_weights_say_how_to_provide_them(cli, cube, tmp_path, monkeypatch):
    monkeypatch.setenv("VEGEDIFF_WEIGHTS", str(tmp_path / "absent.safetensors"))
    result = cli("forecast", "--input", cube, "--output", tmp_path / "f.nc", "--quiet")
    assert result.code == 3 and "$VEGEDIFF_WEIGHTS" in result.err


def test_weights_for_other_bands_exit_9(cli, cube, tmp_path):
    tiny = PRESETS["tiny"]
    three_bands = dataclasses.replace(tiny, vae=dataclasses.replace(tiny.vae, in_channels=3, band_mean=(0.1,) * 3,
                                                                    band_std=(0.1,) * 3))
    weights = write_weights(tmp_path / "rgb.safetensors", three_bands)
    result = _run(cli, cube, weights, tmp_path / "f.nc")
    assert result.code == 9 and "3 input bands" in result.err and "B8A" in result.err
    assert not (tmp_path / "f.nc").exists()


def test_not_a_weights_file_exit_9(cli, cube, tmp_path):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not safetensors at all")
    assert _run(cli, cube, bogus, tmp_path / "f.nc").code == 9


def test_cube_without_a_band_exit_5(cli, tiny_weights, tmp_path):
    broken = synthetic_cube(tmp_path / "cube.nc", height=128, width=128, frames=12, drop_band="s2_B8A")
    result = _run(cli, broken, tiny_weights, tmp_path / "f.nc")
    assert result.code == 5 and "s2_B8A" in result.err
    _no_files(tmp_path)


def test_all_cloud_context_exit_7(cli, tiny_weights, tmp_path):
    cloudy = synthetic_cube(tmp_path / "cube.nc", height=128, width=128, frames=12, cloudy_frames=tuple(range(12)))
    cube = open_cube(cloudy).load()
    cube["valid_mask"][:] = 0  # every frame cloudy
    cube.close()
    write_netcdf(cube, tmp_path / "cloudy.nc")
    result = _run(cli, tmp_path / "cloudy.nc", tiny_weights, tmp_path / "f.nc")
    assert result.code == 7 and "no pixel has a clear observation" in result.err
    assert not (tmp_path / "f.nc").exists()


def test_cube_without_meteorology_runs_unconditional_or_with_weather(cli, tiny_weights, tmp_path):
    dry = synthetic_cube(tmp_path / "cube.nc", height=128, width=128, frames=12, meteo=None)
    result = _run(cli, dry, tiny_weights, tmp_path / "f.nc", "--horizon", "2", "--no-cogs", "--json")
    assert result.code == 0, result
    assert json.loads(result.out)["meteo_source"] == "unconditional"
    days = pd.date_range("2022-06-01", "2022-08-01", freq="D")
    weather = weather_file(tmp_path / "scenario.nc", days, warm=3.0)
    result = _run(cli, dry, tiny_weights, tmp_path / "g.nc", "--horizon", "2", "--no-cogs", "--json", "--weather", weather)
    assert result.code == 0, result
    with xr.open_dataset(tmp_path / "g.nc") as ds:
        assert ds.attrs["meteo_source"] == "scenario.nc" and ds.attrs["conditioned"] == 1


def test_weather_outside_the_forecast_period_exit_2(cli, cube, tiny_weights, tmp_path):
    days = pd.date_range("2021-01-01", "2021-02-01", freq="D")
    weather = weather_file(tmp_path / "old.nc", days)
    result = _run(cli, cube, tiny_weights, tmp_path / "f.nc", "--weather", weather)
    assert result.code == 2 and "covers 2021-01-01 to 2021-02-01" in result.err


def test_interrupted_run_leaves_nothing(cube, tiny_weights, tmp_path):
    from contextlib import contextmanager

    @contextmanager
    def interrupting(total, desc):
        class Bar:
            def update(self, n=1):
                raise KeyboardInterrupt

        yield Bar()

    out = tmp_path / "f.nc"
    with pytest.raises(KeyboardInterrupt):
        run_forecasts([ForecastJob(cube, out, tmp_path / "cogs")], weights=tiny_weights,
                      settings=ForecastSettings(horizon=2), device="cpu", progress=interrupting)
    assert list(tmp_path.iterdir()) == []


def test_pixels_with_too_few_clear_frames_are_left_empty(cube, tiny_weights, tmp_path):
    """Frames 3 and 7 are cloudy over the top half: there the context has 8 clear frames, elsewhere 10."""
    out = tmp_path / "f.nc"
    run_forecasts([ForecastJob(cube, out)], weights=tiny_weights, device="cpu",
                  settings=ForecastSettings(horizon=2, min_clear_context=9, start=pd.Timestamp("2022-06-20")))
    with xr.open_dataset(out) as ds:
        count = ds["context_clear_count"].values
        pred = ds["ndvi_pred"].values
    assert set(np.unique(count)) == {8, 10}
    assert np.isnan(pred[:, count < 9]).all() and np.isfinite(pred[:, count >= 9]).all()


def test_guidance_defaults_to_the_scale_recorded_in_the_weights(cli, cube, tmp_path):
    import torch

    from vegediff_cli.model.vegediff import VegeDiff
    from vegediff_cli.model.weights import save_weights

    torch.manual_seed(0)
    weights = save_weights(VegeDiff(PRESETS["tiny"]), tmp_path / "w.safetensors",
                           metadata={"recommended_guidance": "1.5"})
    plain = write_weights(tmp_path / "plain.safetensors")
    start = f"{pd.Timestamp(open_cube(cube)['time'].values[10]):%Y-%m-%d}"  # hindcast: meteorology in the cube
    for chosen, extra, expected in ((weights, (), 1.5), (weights, ("--guidance", "3"), 3.0), (plain, (), 2.0)):
        out = tmp_path / f"f{expected}.nc"
        result = _run(cli, cube, chosen, out, "--horizon", "1", "--no-cogs", "--start", start, *extra)
        assert result.code == 0, result
        with xr.open_dataset(out) as ds:
            assert ds.attrs["conditioned"] and float(ds.attrs["guidance_scale"]) == expected
