"""`vegediff train` never runs code stored in a checkpoint of its run folder (issue 11, security)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vegediff_cli.errors import CorruptInputError
from vegediff_cli.training.checkpoint import load_checkpoint, rng_state, save_checkpoint

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "29SND_2017_sample.nc"


class _CreatesFile:
    """Unpickling this object opens (creates) `marker`: what an attacker's checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A real torch checkpoint whose unpickling runs code; proven to run it with the old, unsafe load first."""
    torch.save({"step": 1, "vae": {}, "payload": _CreatesFile(marker)}, path)
    torch.load(path, weights_only=False)["payload"].close()  # the unsafe load the old code did: it runs
    assert marker.exists()
    marker.unlink()
    return path


def test_safe_checkpoint_round_trip(tmp_path: Path):
    model = torch.nn.Linear(3, 2)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimiser.step()
    rng = np.random.default_rng(7)
    path = tmp_path / "vae.ckpt"
    save_checkpoint(path, {"vae": model.state_dict(), "optimiser": optimiser.state_dict(), "rng": rng_state(rng),
                           "step": 3, "losses": [0.5, 0.25]})
    state = load_checkpoint(path)
    assert state["step"] == 3 and state["losses"] == [0.5, 0.25]
    assert state["rng"]["numpy"] == rng.bit_generator.state
    torch.testing.assert_close(state["vae"]["weight"], model.weight.detach())


def test_crafted_checkpoint_is_refused_not_run(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = malicious_checkpoint(tmp_path / "diffusion.ckpt", marker)
    with pytest.raises(CorruptInputError, match="can be read safely"):
        load_checkpoint(path)
    assert not marker.exists()


def test_train_with_crafted_checkpoint_in_run_dir(cli, tmp_path: Path):
    """The attack as reported: a crafted vae.ckpt in --run-dir; `vegediff train vae` must not execute it."""
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "runs" / "vae"
    run_dir.mkdir(parents=True)
    malicious_checkpoint(run_dir / "vae.ckpt", marker)
    output = tmp_path / "w.safetensors"
    result = cli("train", "vae", "--data", SAMPLE, "--preset", "tiny", "--steps", "2", "--crop", "32", "--batch", "2",
                 "--run-dir", run_dir, "--output", output, "--quiet")
    assert result.code == CorruptInputError.exit_code, result
    assert "vae.ckpt" in result.err and "--run-dir" in result.err
    assert not marker.exists()
    assert not output.exists()


def test_checkpoint_of_another_model_is_refused(cli, tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_checkpoint(run_dir / "vae.ckpt", {"vae": {"encoder.weight": torch.zeros(2, 2)}, "optimiser": {},
                                           "rng": {}, "step": 1, "losses": []})
    output = tmp_path / "w.safetensors"
    result = cli("train", "vae", "--data", SAMPLE, "--preset", "tiny", "--steps", "2", "--crop", "32", "--batch", "2",
                 "--run-dir", run_dir, "--output", output, "--quiet")
    assert result.code == CorruptInputError.exit_code, result
    assert "does not fit this model" in result.err
    assert not output.exists()
