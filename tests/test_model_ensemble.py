"""Weights with several denoisers (model/ensemble.py): member m is drawn by denoiser m mod N, exactly as
that denoiser alone would draw it; files round-trip; training and the runtime policy handle them."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from tests.forecast_fixtures import edited_weights, synthetic_cube, write_weights
from vegediff_cli.config import SamplerSettings
from vegediff_cli.errors import ModelError
from vegediff_cli.model.ensemble import combine_denoisers, single_denoiser
from vegediff_cli.model.presets import PRESETS
from vegediff_cli.model.vegediff import VegeDiff
from vegediff_cli.model.weights import load_weights, read_metadata, save_weights
from vegediff_cli.pipeline.forecast.chips import ChipBatch, ChipSettings, forecast_chips
from vegediff_cli.pipeline.forecast.plan import ForecastSettings
from vegediff_cli.pipeline.forecast.run import ForecastJob, run_forecasts
from vegediff_cli.pipeline.forecast.runtime import choose_runtime
from vegediff_cli.resources import check_model_size, parameter_count

ROOT = Path(__file__).resolve().parents[1]
FAST = SamplerSettings(steps=2, guidance_scale=1.0)


def _models(count: int) -> list[VegeDiff]:
    """`count` tiny models with one VAE and different denoisers (a fresh denoiser's zero-initialised output
    layers make every seed predict the same: each is perturbed as training would)."""
    torch.manual_seed(0)
    first = VegeDiff(PRESETS["tiny"]).eval()
    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        model = VegeDiff(PRESETS["tiny"]).eval()
        model.vae.load_state_dict(first.vae.state_dict())
        with torch.no_grad():
            for parameter in model.vegenet.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        models.append(model)
    return models


def _batch(chips: int) -> ChipBatch:
    rng = np.random.default_rng(0)
    return ChipBatch((0.05 + 0.3 * rng.random((chips, 10, 4, 128, 128))).astype("float32"),
                     rng.random((chips, 10, 128, 128)) > 0.2, rng.normal(0, 1, (chips, 30, 24)).astype("float32"),
                     rng.normal(0, 1, (chips, 5, 128, 128)).astype("float32"), [11 + i for i in range(chips)])


def test_member_m_is_what_denoiser_m_mod_n_alone_draws_in_any_chunking():
    models = _models(2)
    combined = combine_denoisers(models)
    assert combined.cfg.denoisers == 2 and [combined.denoiser_of(m) for m in range(5)] == [0, 1, 0, 1, 0]
    batch = _batch(1)
    settings = ChipSettings(members=4, sampler=FAST)
    got = forecast_chips(combined, batch, conditioned=True, settings=settings)  # (4, 1, F, 4, H, W)
    alone = [forecast_chips(model, batch, conditioned=True, settings=settings) for model in models]
    for member in range(4):
        np.testing.assert_allclose(got[member], alone[member % 2][member], atol=2e-5)
    assert not np.allclose(alone[0][0], alone[1][0], atol=1e-3)  # the two denoisers do differ
    chunks = np.concatenate([forecast_chips(combined, batch, conditioned=True, settings=settings, member_range=r)
                             for r in ((0, 3), (3, 4))])
    np.testing.assert_allclose(chunks, got, atol=2e-5)


def test_a_combined_file_round_trips_and_splits_back(tmp_path):
    models = _models(3)
    path = save_weights(combine_denoisers(models), tmp_path / "three.safetensors", metadata={"purpose": "tests"})
    loaded, _ = load_weights(path)
    assert loaded.cfg.denoisers == 3 and json.loads(read_metadata(path)["config"])["denoisers"] == 3
    for net, model in zip(loaded.denoisers(), models, strict=True):
        for key, value in model.vegenet.state_dict().items():
            assert torch.equal(net.state_dict()[key], value)
    second = single_denoiser(loaded, 1)
    assert second.cfg.denoisers == 1 and not list(second.extra_vegenets)
    assert all(torch.equal(v, models[1].vegenet.state_dict()[k]) for k, v in second.vegenet.state_dict().items())
    old, _ = load_weights(write_weights(tmp_path / "one.safetensors"))  # a file without the field: one denoiser
    assert old.cfg.denoisers == 1 and old.denoisers() == [old.vegenet]


def test_only_denoisers_of_one_vae_and_config_combine():
    first, other = _models(2)
    torch.manual_seed(5)
    foreign = VegeDiff(PRESETS["tiny"]).eval()
    with pytest.raises(ModelError, match="another VAE"):
        combine_denoisers([first, foreign])
    wider = VegeDiff(replace(PRESETS["tiny"], vegenet=replace(PRESETS["tiny"].vegenet, depth=PRESETS["tiny"].vegenet.depth + 1))).eval()
    wider.vae.load_state_dict(first.vae.state_dict())
    with pytest.raises(ModelError, match="another denoiser"):
        combine_denoisers([first, wider])


def test_memory_checks_count_every_denoiser_and_refuse_impossible_counts():
    cfg = PRESETS["small"]
    one, three = parameter_count(cfg), parameter_count(replace(cfg, denoisers=3))
    assert 2.5 * one < three < 3 * one  # the VAE is shared
    for bad in (0, -1, "2", True):
        with pytest.raises(ModelError, match="denoisers"):
            check_model_size(replace(cfg, denoisers=bad), source="x")
    with pytest.raises(ModelError, match="billion parameters"):
        check_model_size(replace(cfg, denoisers=10**7), source="x")


def test_each_denoiser_is_compiled_apart_so_compilation_needs_more_work_per_process():
    single = choose_runtime(units=200, chip_members=800, device_type="cpu", workers=1)
    combined = choose_runtime(units=200, chip_members=800, device_type="cpu", workers=1, denoisers=3)
    assert single.compiled and not combined.compiled and "per process and denoiser" in combined.reason


def test_a_forecast_with_combined_weights_writes_every_member(tmp_path):
    weights = save_weights(combine_denoisers(_models(2)), tmp_path / "two.safetensors", metadata={"purpose": "tests"})
    cube = synthetic_cube(tmp_path / "cube.nc", height=128, width=128, frames=11, seed=3)
    settings = ForecastSettings(horizon=2, members=3, sampler=FAST, seed=1)
    [result] = run_forecasts([ForecastJob(cube, tmp_path / "forecast.nc")], weights=weights, settings=settings,
                             device="cpu", workers=0)
    with xr.open_dataset(result.output) as ds:
        members = ds["ndvi_member"].values
    assert members.shape[0] == 3 and np.isfinite(members).all()
    assert not np.allclose(members[0], members[1], atol=1e-4)


def test_combine_script_keeps_the_base_choice_and_records_its_sources(tmp_path):
    sys.path.insert(0, str(ROOT))
    from scripts.combine_weights import combine_files

    first, second = _models(2)
    base = save_weights(first, tmp_path / "base.safetensors",
                        metadata={"recommended_guidance": "1.0", "spread_added_variance": "[0.1]",
                                  "validation_rmse": "0.2", "diffusion_settings": json.dumps({"seed": 0})})
    other = save_weights(second, tmp_path / "other.safetensors", metadata={"diffusion_settings": json.dumps({"seed": 1})})
    out = combine_files([base, other], tmp_path / "out.safetensors", extra={"note": "x"})
    meta = read_metadata(out)
    assert meta["recommended_guidance"] == "1.0" and meta["note"] == "x"
    assert "spread_added_variance" not in meta and "validation_rmse" not in meta  # fitted for one denoiser, not both
    assert [s["seed"] for s in json.loads(meta["denoiser_sources"])] == [0, 1]
    assert load_weights(out)[0].cfg.denoisers == 2


@pytest.mark.parametrize(("denoisers", "words"), [(0, "impossible model"), ("two", "impossible model"),
                                                  (2, "does not match its own config")])
def test_a_file_declaring_other_denoisers_than_it_holds_is_exit_9(cli, tiny_weights, tmp_path, denoisers, words):
    config = json.loads(read_metadata(tiny_weights)["config"])
    bad = edited_weights(tiny_weights, tmp_path / "bad.safetensors",
                         metadata={"config": json.dumps({**config, "denoisers": denoisers})})
    cube = synthetic_cube(tmp_path / "cube.nc", height=128, width=128)
    out = tmp_path / "f.nc"
    result = cli("forecast", "--input", cube, "--weights", bad, "--output", out, "--no-cogs", "--quiet",
                 "--horizon", "2", "--steps", "1")
    assert result.code == ModelError.exit_code, result
    assert words in result.err and len(result.err.strip().splitlines()) == 1
    assert not out.exists()


def test_training_from_a_combined_file_goes_on_with_its_first_denoiser(cli, tmp_path):
    combined = save_weights(combine_denoisers(_models(2)), tmp_path / "two.safetensors", metadata={"purpose": "tests"})
    sample = ROOT / "sample_data" / "29SND_2017_sample.nc"
    out = tmp_path / "trained.safetensors"
    result = cli("train", "diffusion", "--data", sample, "--init", combined, "--output", out,
                 "--run-dir", tmp_path / "run", "--steps", "1", "--batch", "2", "--quiet")
    assert result.code == 0, result
    trained, _ = load_weights(out)
    assert trained.cfg.denoisers == 1 and not list(trained.extra_vegenets)
