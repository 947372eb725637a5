"""The local runtime: the process/thread/compile policy, the worker pool (bit-equal to one process),
member chunks and padded batches, the compiler fallback. Speed itself is measured in benchmarks/."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
import xarray as xr

from tests.forecast_fixtures import synthetic_cube
from vegediff_cli.config import SamplerSettings
from vegediff_cli.errors import UsageError
from vegediff_cli.model import compiled
from vegediff_cli.model.presets import PRESETS
from vegediff_cli.model.vegediff import VegeDiff
from vegediff_cli.pipeline.forecast import runtime as forecast_runtime
from vegediff_cli.pipeline.forecast.chips import ChipBatch, ChipSettings, forecast_chips
from vegediff_cli.pipeline.forecast.plan import ForecastSettings
from vegediff_cli.pipeline.forecast.run import ForecastJob, run_forecasts
from vegediff_cli.pipeline.forecast.runtime import choose_runtime

FAST = SamplerSettings(steps=2, guidance_scale=1.0)


@pytest.fixture
def one_thread():
    """The policy's one torch thread (and no OpenMP spinning against a loaded CI machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def machine(monkeypatch):
    """Pretend a machine with `cores` cores and `free` MiB available."""

    def set_machine(cores: int, free: float | None = 64_000) -> None:
        monkeypatch.setattr(forecast_runtime, "usable_cores", lambda: cores)
        monkeypatch.setattr(forecast_runtime, "available_mib", lambda: free)

    return set_machine


def test_policy_one_thread_per_process_and_workers_only_when_they_pay(machine):
    machine(4)
    one_call = choose_runtime(units=1, chip_members=4, device_type="cpu")
    assert (one_call.workers, one_call.threads, one_call.compiled) == (0, 1, False)
    quick = choose_runtime(units=9, chip_members=36, device_type="cpu", seconds_per_call=0.2)
    assert quick.workers == 0 and "not worth" in quick.reason
    tile = choose_runtime(units=800, chip_members=3200, device_type="cpu", seconds_per_call=1.7)
    assert (tile.workers, tile.threads, tile.compiled) == (4, 1, True)  # 800 chip-members per process
    assert choose_runtime(units=3, chip_members=12, device_type="cpu", seconds_per_call=30).workers == 3
    machine(1)
    assert choose_runtime(units=800, chip_members=3200, device_type="cpu", seconds_per_call=1.7).workers == 0


def test_policy_follows_the_user_and_the_gpu(machine):
    machine(8)
    forced = choose_runtime(units=800, chip_members=3200, device_type="cpu", workers=0, threads=3, compile="off")
    assert (forced.workers, forced.threads, forced.compiled) == (0, 3, False)
    gpu = choose_runtime(units=800, chip_members=51_200, device_type="cuda")
    assert (gpu.workers, gpu.compiled, gpu.rows_per_call) == (0, False, 64)
    assert choose_runtime(units=1, chip_members=1, device_type="cuda", compile="on").compiled
    for bad in ({"workers": -1}, {"threads": 0}, {"compile": "maybe"}):
        with pytest.raises(UsageError):
            choose_runtime(units=1, chip_members=1, device_type="cpu", **bad)


def test_workers_are_capped_by_the_memory_available(machine):
    main, worker = forecast_runtime.MAIN_OVERHEAD_MIB, forecast_runtime.WORKER_OVERHEAD_MIB
    machine(8, free=1024 + main + 3 * worker + 10)
    assert choose_runtime(units=800, chip_members=3200, device_type="cpu", memory_mb=1024).workers == 3
    machine(8, free=1024 + main + worker)
    assert choose_runtime(units=800, chip_members=3200, device_type="cpu", memory_mb=1024).workers == 0


def test_process_environment_is_set_before_torch_and_user_values_win(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    forecast_runtime.configure_process()
    assert forecast_runtime.PROCESS_ENVIRONMENT["OMP_WAIT_POLICY"] == "PASSIVE"
    assert __import__("os").environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    forecast_runtime.configure_process()
    assert __import__("os").environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_compile_cache_lives_in_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("VEGEDIFF_CACHE_DIR", str(tmp_path / "cache"))
    assert forecast_runtime.use_compile_cache() == tmp_path / "cache" / "inductor"
    assert (tmp_path / "cache" / "inductor").is_dir()
    monkeypatch.delenv("VEGEDIFF_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert forecast_runtime.cache_dir() == tmp_path / "xdg" / "vegediff"


def _batch(chips: int, seed: int = 0) -> ChipBatch:
    rng = np.random.default_rng(seed)
    return ChipBatch((0.05 + 0.3 * rng.random((chips, 10, 4, 128, 128))).astype("float32"),
                     rng.random((chips, 10, 128, 128)) > 0.2, rng.normal(0, 1, (chips, 30, 24)).astype("float32"),
                     rng.normal(0, 1, (chips, 5, 128, 128)).astype("float32"), [11 + i for i in range(chips)])


def test_member_chunks_and_padded_batches_give_the_same_members(one_thread):
    torch.manual_seed(0)
    model = VegeDiff(PRESETS["tiny"]).eval()
    batch = _batch(2)
    settings = ChipSettings(members=3, sampler=FAST)
    whole = forecast_chips(model, batch, conditioned=True, settings=settings)  # (3, 2, F, 4, H, W)
    chunks = np.concatenate([forecast_chips(model, batch, conditioned=True, settings=settings, member_range=r)
                             for r in ((0, 2), (2, 3))])
    np.testing.assert_allclose(chunks, whole, atol=2e-5)  # same noise per member; rounding may differ
    padded = forecast_chips(model, batch, conditioned=True, settings=ChipSettings(members=3, sampler=FAST, pad_chips=4))
    assert padded.shape == whole.shape
    np.testing.assert_allclose(padded, whole, atol=2e-5)


def test_chunks_and_padding_keep_per_member_weather_and_dates(one_thread):
    """Scenario weather (one series per member) and date features survive member chunks and padded batches."""
    cfg = PRESETS["tiny"]
    cfg = replace(cfg, vegenet=replace(cfg.vegenet, date_channels=3))
    torch.manual_seed(0)
    model = VegeDiff(cfg).eval()
    with torch.no_grad():  # a fresh denoiser's zero-initialised output layers would ignore weather and dates
        for p in model.vegenet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rng = np.random.default_rng(1)
    base = _batch(2)
    batch = ChipBatch(base.context, base.valid, rng.normal(0, 1, (3, 2, 30, 24)).astype("float32"), base.static,
                      base.seeds, dates=rng.uniform(-1, 1, (2, 30, 3)).astype("float32"))
    settings = ChipSettings(members=3, sampler=FAST)
    whole = forecast_chips(model, batch, conditioned=True, settings=settings)
    chunks = np.concatenate([forecast_chips(model, batch, conditioned=True, settings=settings, member_range=r)
                             for r in ((0, 1), (1, 3))])
    np.testing.assert_allclose(chunks, whole, atol=2e-5)
    padded = forecast_chips(model, batch, conditioned=True, settings=ChipSettings(members=3, sampler=FAST, pad_chips=3))
    np.testing.assert_allclose(padded, whole, atol=2e-5)
    shared = ChipBatch(base.context, base.valid, np.repeat(batch.meteo[:1], 3, axis=0), base.static, base.seeds,
                       dates=batch.dates)
    assert not np.allclose(forecast_chips(model, shared, conditioned=True, settings=settings)[1:], whole[1:])
    undated = ChipBatch(batch.context, batch.valid, batch.meteo, batch.static, batch.seeds, dates=batch.dates * 0)
    assert not np.allclose(forecast_chips(model, undated, conditioned=True, settings=settings), whole)


def test_a_failing_compiler_falls_back_to_eager_sampling(monkeypatch, caplog, one_thread):
    torch.manual_seed(0)
    model = VegeDiff(PRESETS["tiny"]).eval()
    batch = _batch(1)
    expected = forecast_chips(model, batch, conditioned=True, settings=ChipSettings(sampler=FAST))

    def broken(fn, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("no C++ compiler found")
        return call

    monkeypatch.setattr(compiled.torch, "compile", broken)
    [wrapper] = compiled.compile_for_sampling(model, precision="fp32", device=torch.device("cpu"))
    with caplog.at_level(logging.WARNING, logger="vegediff.model"):
        got = forecast_chips(model, batch, conditioned=True, settings=ChipSettings(sampler=FAST))
    assert "no C++ compiler" in wrapper.failed and "sampling without compilation" in caplog.text
    np.testing.assert_array_equal(got, expected)
    assert not any("sampling" in name for name in model.state_dict())  # never saved with the weights


@pytest.mark.slow
def test_worker_processes_give_the_single_process_forecast_bit_for_bit(tmp_path, tiny_weights, cli):
    """Calls are cut and blended by the parent in the same order, whichever process computes them."""
    cube = synthetic_cube(tmp_path / "cube.nc", height=224, width=256, frames=11, seed=3)
    settings = ForecastSettings(horizon=3, members=3, sampler=FAST, band_rows=128, seed=5)
    [local] = run_forecasts([ForecastJob(cube, tmp_path / "local.nc")], weights=tiny_weights, settings=settings,
                            device="cpu", workers=0)
    result = cli("forecast", "--input", cube, "--weights", tiny_weights, "--output", tmp_path / "pool.nc",
                 "--horizon", "3", "--members", "3", "--steps", "2", "--guidance", "1", "--seed", "5",
                 "--workers", "2", "--no-cogs", "--json", "--quiet")
    assert result.code == 0, result
    summary = json.loads(result.out)
    assert summary["runtime"]["workers"] == 2 and summary["runtime"]["threads_per_process"] == 1
    assert len(summary["runtime"]["worker_peak_rss_mib"]) == 2
    assert local.runtime["workers"] == 0 and summary["chips_computed"] == local.chips
    with xr.open_dataset(tmp_path / "local.nc") as a, xr.open_dataset(tmp_path / "pool.nc") as b:
        for name in ("ndvi_member", "ndvi_pred", "s2_B04_pred"):
            np.testing.assert_array_equal(b[name].values, a[name].values, err_msg=name)
        assert np.isfinite(a["ndvi_pred"].values).any()
        assert b.attrs["runtime_workers"] == 2 and a.attrs["runtime_workers"] == 0
        assert b.attrs["runtime_threads_per_process"] == 1 and b.attrs["runtime_compiled"] == 0
