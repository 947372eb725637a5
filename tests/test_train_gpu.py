"""scripts/train_gpu.py: pack the recipe's latents here, train from the pack where the GDAL stack is
missing (as on the lent GPU), unpack into a weights file that holds what was trained."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from scripts import train_gpu  # noqa: E402
from scripts.train_weights import HOLDOUT, VALIDATION  # noqa: E402
from vegediff_cli.model.presets import PRESETS  # noqa: E402
from vegediff_cli.model.weights import load_weights, read_metadata  # noqa: E402

# Runs train_gpu.py with the geo modules made unimportable, the way the GPU image lacks them.
WITHOUT_GEO = """
import importlib.abc, runpy, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {geo!r}:
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Hide())
sys.argv = {argv!r}
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.slow
def test_pack_train_without_the_geo_stack_and_unpack(shared_data, tmp_path):
    pack, out, runs = tmp_path / "pack", tmp_path / "out", tmp_path / "runs"
    exclude = "MJJ2021_minicube_241_34VCL"
    args = train_gpu.argparse.Namespace(exclude=[exclude], cache=tmp_path / "cache", pack=pack)
    assert train_gpu.pack(args) == 0
    manifest = json.loads((pack / "sources.json").read_text())
    names = [Path(s["path"]).name for s in manifest["sources"]]
    assert manifest["held_out"] == [HOLDOUT, VALIDATION, exclude]
    assert names and not any(part in name for name in names for part in manifest["held_out"])
    assert len(list((pack / "latents").glob("*.latents.npy"))) == len(names)

    out.mkdir()
    argv = ["train_gpu.py", "train-one", "--preset", "tiny", "--steps", "3", "--probe-steps", "1", "--batch", "2",
            "--workers", "0", "--seed", "4", "--out", str(out), "--run-root", str(tmp_path / "gpu-runs"),
            "--pack", str(pack)]
    code = WITHOUT_GEO.format(geo=set(train_gpu.GEO_MODULES), argv=argv, script=str(ROOT / "scripts" / "train_gpu.py"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "tiny-seed4.json").read_text())
    assert summary["completed"] and summary["step"] == 3 and summary["seed"] == 4
    assert {"rasterio", "rioxarray"} <= set(summary["stubbed"])  # it really ran without them
    sent = load_file(str(out / "tiny-seed4.safetensors"))
    assert all(v.dtype == torch.float16 for v in sent.values())

    assert train_gpu.unpack(train_gpu.argparse.Namespace(folder=str(out), name="fold", runs=runs, pack=pack)) == 0
    weights = runs / "fold-seed4" / "final.safetensors"
    model, _ = load_weights(weights)
    assert model.cfg.vegenet == PRESETS["tiny"].vegenet
    for name, tensor in model.vegenet.state_dict().items():
        torch.testing.assert_close(tensor, sent[name].float())  # the trained EMA, not a fresh denoiser
    meta = read_metadata(weights)
    assert json.loads(meta["held_out"])[-1] == exclude  # loso_skill.py --files checks this
    assert json.loads(meta["gpu_training"])["steps"] == 3
