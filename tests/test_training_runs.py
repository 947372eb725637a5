"""Training runs (tiny preset, a few steps): one process vs two under torchrun, interrupted and resumed
runs, and memory that does not grow with the number of files."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import PROJECT_ROOT
from tests.training_fixtures import training_folder, untrained_dated_weights
from vegediff_cli.errors import RunInterrupted
from vegediff_cli.training import diffusion_train
from vegediff_cli.training.diffusion_train import DiffusionTrainSettings
from vegediff_cli.training.run import run_diffusion, run_vae
from vegediff_cli.training.vae_train import VAETrainSettings

# 1 vs 2 processes: the same windows and draws, summed in another order (two half-batch gradients
# averaged by all-reduce, micro-batches accumulated): the weights agree to float32 rounding,
# measured 1.5e-8 after 4 AdamW steps, while training moved them by 8e-4.
PROCESS_TOLERANCE = 1e-6
SETTINGS = DiffusionTrainSettings(steps=4, batch=4, warmup=2, precision="fp32", checkpoint_every=100, log_every=1)


@pytest.fixture(scope="module")
def setup(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"data": training_folder(shared_data, root / "data"), "init": untrained_dated_weights(root / "tiny.safetensors"),
            "latents": root / "latents", "index": root / "index.json", "root": root}


def _train(setup, name: str, settings: DiffusionTrainSettings = SETTINGS, **extra) -> dict:
    return run_diffusion([setup["data"]], init=setup["init"], exclude=[], settings=settings,
                         run_dir=setup["root"] / name, output=setup["root"] / f"{name}.safetensors", device="cpu",
                         latent_cache=setup["latents"], index_cache=setup["index"], **extra)


@pytest.fixture(scope="module")
def reference(setup):
    """The uninterrupted one-process run, single-threaded like each torchrun worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = _train(setup, "reference")
    finally:
        torch.set_num_threads(threads)
    assert result["completed"] and result["step"] == 4
    return load_file(setup["root"] / "reference.safetensors")


def _denoiser(weights: dict) -> dict:
    return {k: v for k, v in weights.items() if k.startswith("vegenet.")}


def test_trained_weights_record_their_training_domain(setup, reference):
    """`training_domain` (model/domain.py): one entry per source, the two minicube crops with weather
    at their sites' latitudes, the Rhone series without, each window's forecast start after its context."""
    from vegediff_cli.model.domain import read_domain
    from vegediff_cli.model.weights import read_metadata

    meta = read_metadata(setup["root"] / "reference.safetensors")
    entries = {e.name: e for e in read_domain(meta)}
    assert set(entries) == {name.removesuffix(".nc") for name in json.loads(meta["trained_on"])}
    assert entries["jas_crop"].conditioned and entries["mjj_crop"].conditioned
    assert not entries["france_rhone_2017-2019_20m"].conditioned
    assert 38.5 < entries["jas_crop"].latitude < 40 and 58.5 < entries["mjj_crop"].latitude < 59.5
    assert str(entries["jas_crop"].first_start) == "2021-07-03"  # the crop's 11th frame: forecasts start there
    assert entries["jas_crop"].first_start <= entries["jas_crop"].last_start


@pytest.mark.slow
def test_two_gloo_processes_reach_the_weights_of_one(setup, reference):
    """torchrun, 2 CPU processes, each 2 accumulated micro-batches of 1: the global batch of 4 as one process."""
    output = setup["root"] / "two.safetensors"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "vegediff_cli", "train", "diffusion", "--data", str(setup["data"]), "--init", str(setup["init"]),
               "--output", str(output), "--steps", "4", "--batch", "4", "--micro-batch", "1", "--warmup", "2",
               "--precision", "fp32", "--device", "cpu", "--run-dir", str(setup["root"] / "two"),
               "--latent-cache", str(setup["latents"]), "--index-cache", str(setup["index"]), "--log-every", "1", "--json", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # one summary, from rank 0
    assert summary["processes"] == 2 and summary["completed"] and summary["global_batch"] == 4
    two, init = load_file(output), load_file(setup["init"])
    for name, value in _denoiser(reference).items():
        torch.testing.assert_close(two[name], value, rtol=0, atol=PROCESS_TOLERANCE, msg=name)
    moved = max(float((value - init[name]).abs().max()) for name, value in _denoiser(reference).items())
    assert moved > 200 * PROCESS_TOLERANCE  # the runs trained: agreement is not the initial weights'
    log = [json.loads(line) for line in (setup["root"] / "two" / "diffusion-log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["processes"] == 2 and r["windows_per_s"] > 0 for r in log)


def test_an_interrupted_run_resumes_to_where_an_uninterrupted_one_ends(setup, reference):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = _train(setup, "resumed", dataclasses.replace(SETTINGS, budget_steps=2))
        assert not first["completed"] and first["step"] == 2 and first["output"] is None
        assert not (setup["root"] / "resumed.safetensors").exists()  # no weights before the schedule ends
        state = torch.load(setup["root"] / "resumed" / "diffusion.ckpt", weights_only=True)  # no code in it
        assert state["step"] == 2 and set(state) >= {"vegenet", "ema", "optimiser", "data", "rng", "losses"}
        second = _train(setup, "resumed", dataclasses.replace(SETTINGS, workers=1))  # and read by a worker process
    finally:
        torch.set_num_threads(threads)
    assert second["completed"] and second["step"] == 4
    resumed = load_file(setup["root"] / "resumed.safetensors")
    for name, value in reference.items():
        assert torch.equal(resumed[name], value), name  # bit for bit: EMA, data order and draws all resumed


def test_a_signal_stops_training_at_a_step_boundary_with_a_checkpoint(setup, monkeypatch):
    calls = []
    original = diffusion_train.diffusion_loss

    def loss_then_sigterm(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # a scheduler pre-empts the job during step 2
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(diffusion_train, "diffusion_loss", loss_then_sigterm)
    with pytest.raises(RunInterrupted, match="stopped by a signal at step 2"):
        _train(setup, "signalled")
    assert torch.load(setup["root"] / "signalled" / "diffusion.ckpt", weights_only=True)["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is not None  # the loop's handler is gone again


def test_the_vae_stage_resumes_exactly_and_records_its_statistics(setup):
    settings = VAETrainSettings(steps=2, batch=4, crop=32, precision="fp32", log_every=1)
    paths = {}
    for name, budgets in (("vae-whole", [0]), ("vae-resumed", [1, 0])):
        for budget in budgets:
            result = run_vae([setup["data"]], exclude=[], preset_name="tiny", settings=dataclasses.replace(
                settings, budget_steps=budget), run_dir=setup["root"] / name, output=setup["root"] / f"{name}.st",
                device="cpu", index_cache=setup["index"])
        assert result["completed"] and result["step"] == 2
        paths[name] = setup["root"] / f"{name}.st"
    whole, resumed = load_file(paths["vae-whole"]), load_file(paths["vae-resumed"])
    assert all(torch.equal(resumed[k], v) for k, v in whole.items())
    from vegediff_cli.model.weights import load_weights

    model, meta = load_weights(paths["vae-resumed"])
    assert model.cfg.vae.latent_std != (1.0, 1.0, 1.0, 1.0) and json.loads(meta["trained_on"])


def test_bad_splits_and_samplings_are_refused_before_any_reading(cli, tmp_path):
    common = ["train", "diffusion", "--data", str(tmp_path), "--init", str(tmp_path / "w.st"), "-o", str(tmp_path / "o")]
    result = cli(*common, "--batch", "4", "--micro-batch", "3")
    assert result.code == 2 and "micro-batches of 3" in result.err
    result = cli(*common, "--sampling", "shuffled")
    assert result.code == 2 and "--sampling 'shuffled'" in result.err


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import torch
    from vegediff_cli.training.diffusion_train import DiffusionTrainSettings
    from vegediff_cli.training.run import run_diffusion
    torch.set_num_threads(1)
    init, root = Path(sys.argv[1]), Path(sys.argv[2])
    settings = DiffusionTrainSettings(steps=6, batch=4, warmup=2, precision="fp32", checkpoint_every=100)
    for i, folder in enumerate(sys.argv[3:]):
        result = run_diffusion([Path(folder)], init=init, exclude=[], settings=settings, run_dir=root / f"run{i}",
                               output=root / f"run{i}.st", device="cpu", latent_cache=root / "latents")
        print(json.dumps({"sources": result["sources"], "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


@pytest.mark.slow
def test_memory_does_not_grow_with_the_number_of_files(setup, tmp_path):
    """One process trains on 20 files (twice: the second run's peak is the baseline, the first one
    allocates once-only buffers), then on 400 and 2000 (links to the cropped cubes): its peak
    resident memory stays within 10 MiB of the baseline. Holding every sequence in memory, as training
    did before, needs about 2.3 MiB per 64 px cube (frames, masks, the 8 transforms' latents): some
    900 MiB more for 400 files."""
    folders = []
    for count in (20, 400, 2000):
        folder = tmp_path / f"cubes{count}"
        folder.mkdir()
        (folder / "rhone.nc").symlink_to(setup["data"] / "france_rhone_2017-2019_20m.nc")
        for i in range(count - 1):
            (folder / f"cube{i:04d}.nc").symlink_to(setup["data"] / ("jas_crop.nc" if i % 2 else "mjj_crop.nc"))
        folders.append(str(folder))
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(setup["init"]), str(tmp_path), folders[0], *folders],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["sources"] for r in runs] == [20, 20, 400, 2000]
    baseline = runs[1]["peak_mib"]
    assert runs[3]["peak_mib"] - baseline < 10, runs
    print("peak RSS (MiB) by file count:", [(r["sources"], round(r["peak_mib"], 1)) for r in runs])
