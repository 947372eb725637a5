#!/usr/bin/env bash
# GPU check of vegediff, under 5 minutes on one lent GPU, run from the repository root as is:
#
#   bash benchmarks/gpu_check.sh          # on the GPU machine: installs a CUDA torch + vegediff in .venv-gpu
#   bash benchmarks/gpu_check.sh --cpu    # dry run of every step on the CPU (tiny sizes), with .venv
#
# 1. A CUDA forecast equals the CPU one for the same seed, within the tolerance printed below:
#    the bundled sample cube (sample_data/, one 128 px chip, real EarthNet2021x data), shipped
#    weights, 4 members, fp32 on both devices (TF32 off), hindcast from its 11th frame.
#    The noise is drawn on the CPU from each chip's seed, so both devices start from the same noise.
# 2. Throughput in chips per second (1 member, Euler 10 steps, guidance 1, bf16 autocast) at
#    batches of 64 and 256 chips per model call, for the shipped `small` weights and a random-init
#    model of the `paper` preset (speed does not depend on the weights' values).
#
# Environment: PYTHON=/path/to/python uses an interpreter that already has a CUDA torch and vegediff.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
[[ "${1:-}" == "--cpu" ]] && MODE=cpu

if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif [[ "$MODE" == cpu ]]; then
    PY=.venv/bin/python
else
    # A CPU-only torch (as in .venv) cannot see the GPU: a separate environment with pip's default torch
    # wheel for Linux x86_64, which is the CUDA build, within the project's supported range.
    if [[ ! -x .venv-gpu/bin/python ]]; then
        python3 -m venv .venv-gpu
    fi
    .venv-gpu/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null || {
        echo "installing a CUDA torch and vegediff into .venv-gpu ..."
        .venv-gpu/bin/pip install -q --upgrade pip
        .venv-gpu/bin/pip install -q "torch>=2.2,<2.14"
    }
    .venv-gpu/bin/python -c "import vegediff_cli" 2>/dev/null || .venv-gpu/bin/pip install -q -e .
    PY=.venv-gpu/bin/python
fi

exec "$PY" -u - "$MODE" <<'PYTHON'
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from vegediff_cli.config import SamplerSettings
from vegediff_cli.model.presets import PRESETS
from vegediff_cli.model.vegediff import VegeDiff
from vegediff_cli.pipeline.forecast.chips import ChipBatch, ChipSettings, forecast_chips
from vegediff_cli.pipeline.forecast.run import ForecastJob, run_forecasts
from vegediff_cli.pipeline.forecast.model import load_model, shipped_weights
from vegediff_cli.pipeline.forecast.plan import ForecastSettings

MODE = sys.argv[1]
CUBE = Path("sample_data/29SND_2017_sample.nc")
START = "2017-08-13"  # the 11th frame: 10 context frames before it, 20 observed frames after it
# fp32 on both devices: the sampler is deterministic given the noise, so differences are rounding
# only. Tolerance, over every member, step and pixel: NDVI RMS difference <= 0.005 and 99.9 % of
# NDVI values within 0.02 (NDVI of dark pixels swings with the last bits, so not the maximum), and
# member-mean reflectance (s2_*_pred) within 0.005 everywhere. For scale: bf16 vs fp32 on the same
# CPU differs by an NDVI RMS of about 0.003; the forecast's own error is about 0.2.
RMS_TOL, P999_TOL, REFLECTANCE_TOL = 0.005, 0.02, 0.005
BANDS = ("s2_B02_pred", "s2_B03_pred", "s2_B04_pred", "s2_B8A_pred")

if MODE == "gpu" and not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA GPU (torch %s); use --cpu for a dry run" % torch.__version__)
device = "cuda" if MODE == "gpu" else "cpu"
if MODE == "cpu":
    torch.set_num_threads(1)  # the CLI policy: one thread per process (pipeline/forecast/runtime.py)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
name = torch.cuda.get_device_name(0) if MODE == "gpu" else "CPU (dry run)"
print(f"gpu_check: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
began = time.perf_counter()

# --- 1. CUDA forecast vs CPU forecast ------------------------------------------------------------
with tempfile.TemporaryDirectory() as tmp:
    outputs = {}
    for dev, precision in (("cpu", "fp32"), (device, "fp32"), (device, "bf16")):
        out = Path(tmp) / f"{dev}_{precision}.nc"
        settings = ForecastSettings(members=4, seed=7, precision=precision, start=np.datetime64(START))
        [summary] = run_forecasts([ForecastJob(CUBE, out)], settings=settings, device=dev, workers=0)
        with xr.open_dataset(out) as ds:
            outputs[dev, precision] = (ds["ndvi_member"].values.astype("float64"),
                                       np.stack([ds[b].values for b in BANDS]).astype("float64"))
        print(f"  forecast on {dev}, {precision}: {summary.seconds:.1f} s")
    def compare(x, y):
        (ndvi_x, refl_x), (ndvi_y, refl_y) = x, y
        both = np.isfinite(ndvi_x) & np.isfinite(ndvi_y)
        diff = np.abs(ndvi_x - ndvi_y)[both]
        refl = np.abs(refl_x - refl_y)[np.isfinite(refl_x) & np.isfinite(refl_y)]
        same_nan = bool((np.isfinite(ndvi_x) == np.isfinite(ndvi_y)).all())
        return float(np.sqrt((diff**2).mean())), float(np.quantile(diff, 0.999)), float(refl.max()), same_nan

    rms, p999, refl, same_nan = compare(outputs["cpu", "fp32"], outputs[device, "fp32"])
    ok = same_nan and rms <= RMS_TOL and p999 <= P999_TOL and refl <= REFLECTANCE_TOL
    print(f"1. {device} vs cpu, fp32, seed 7, 4 members: NDVI RMS difference {rms:.2e}, 99.9 % within {p999:.2e}, "
          f"reflectance max {refl:.2e} (tolerances {RMS_TOL}, {P999_TOL}, {REFLECTANCE_TOL}); same empty pixels: "
          f"{same_nan} -> {'PASS' if ok else 'FAIL'}")
    rms, p999, refl, _ = compare(outputs["cpu", "fp32"], outputs[device, "bf16"])
    print(f"   for scale, {device} bf16 vs cpu fp32: NDVI RMS {rms:.2e}, 99.9 % within {p999:.2e}, reflectance max {refl:.2e}")

# --- 2. throughput -------------------------------------------------------------------------------
batches = (64, 256) if MODE == "gpu" else (1,)
steps = 10 if MODE == "gpu" else 1
presets = {"small": load_model(shipped_weights(), torch.device(device))}
torch.manual_seed(0)
presets["paper"] = VegeDiff(PRESETS["paper"]).to(device).eval()
rng = np.random.default_rng(0)
for label, model in presets.items():
    for chips in batches:
        batch = ChipBatch((0.05 + 0.3 * rng.random((chips, 10, 4, 128, 128))).astype("float32"),
                          np.ones((chips, 10, 128, 128), bool), rng.normal(0, 1, (chips, 30, 24)).astype("float32"),
                          rng.normal(0, 1, (chips, 5, 128, 128)).astype("float32"), list(range(chips)))
        settings = ChipSettings(sampler=SamplerSettings(steps=steps, guidance_scale=1.0), precision="bf16",
                                frames_per_vae_call=32 if MODE == "gpu" else 4)
        run = lambda: forecast_chips(model, batch, conditioned=True, settings=settings, device=torch.device(device))  # noqa: E731
        run()  # warm-up: kernels, allocator
        if MODE == "gpu":
            torch.cuda.synchronize()
        repeats = 3 if MODE == "gpu" else 1
        t0 = time.perf_counter()
        for _ in range(repeats):
            run()
        if MODE == "gpu":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - t0) / repeats
        memory = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if MODE == "gpu" else ""
        print(f"2. {label} preset, batch {chips}, bf16, Euler {steps}: {chips / seconds:.3g} chips/s{memory}")
        if MODE == "gpu":
            torch.cuda.reset_peak_memory_stats()
print(f"gpu_check done in {time.perf_counter() - began:.0f} s")
sys.exit(0 if ok else 1)
PYTHON
