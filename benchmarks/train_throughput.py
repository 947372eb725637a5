"""Training throughput: windows per second and achieved FLOP/s against the matmul peak, same run.

    python benchmarks/train_throughput.py                     # small and paper presets, 1 and 2 CPU processes
    python benchmarks/train_throughput.py --presets small --steps 12
    python benchmarks/train_throughput.py --device cuda --processes 1 --batch 64 --paper-batch 32 --steps 30

What runs is the real thing: `torchrun --standalone --nproc-per-node P -m vegediff_cli train
diffusion`, on three real 128 x 128 px cubes of ../shared/data (the two GreenEarthNet cubes and the
EarthNet2021x cube, 60 windows), a fresh denoiser of each preset (`--preset`) on the shipped
weights' VAE (the two presets' VAEs both give 4 x 16 x 16 latents, and the latents come from the
latent cache, built once before the timed runs). The rate is read from the run's own log
(diffusion-log.jsonl), leaving out the first step (warm-up): windows per wall second, and windows
per CPU second of all processes together (the figure that survives a shared, loaded machine).

FLOP per window: torch's FlopCounterMode over one forward and backward pass of the denoiser (the
matmuls, attention and patch embeddings; the AdamW update is not counted). Achieved FLOP/s =
windows/s x FLOP per window, compared with the matmul throughput of this machine measured in the
same run, in fp32 and bf16 (CPU: 1024^3 per thread, per CPU second; GPU: 8192^3, TF32 off for fp32).

The script also measures the alternative the latent cache replaced: encoding each window's 30
frames with the frozen VAE on the training step (VAE forward only, the training precision);
docs/train.md explains the choice with these figures.

CPU processes run one torch thread each (--threads). Report the machine's load (printed) with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vegediff_cli.model.device import resolve_precision  # noqa: E402
from vegediff_cli.model.presets import preset  # noqa: E402
from vegediff_cli.model.vae import VegetationVAE  # noqa: E402
from vegediff_cli.model.vegediff import VegeDiff  # noqa: E402
from vegediff_cli.model.weights import load_weights  # noqa: E402
from vegediff_cli.training.index import build_index, candidates  # noqa: E402
from vegediff_cli.training.latent_cache import build_latent_cache  # noqa: E402
from vegediff_cli.training.parallel import Runtime  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CUBES = ("greenearthnet/JAS2021_minicube_0_29SND_39.29_-8.56.nc", "greenearthnet/MJJ2021_minicube_241_34VCL_59.04_17.96.nc",
         "earthnet2021x/minicube_29SND_39.17_-8.05_2017.nc")
SHIPPED = ROOT / "weights" / "vegediff-small.safetensors"


def matmul_peak(device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """Matmul throughput in GFLOP/s (wall) and, on CPUs, GFLOP per CPU second."""
    size, repeats = (8192, 20) if device.type == "cuda" else (1024, 20)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        a @ b
        torch.cuda.synchronize()
    else:
        a @ b
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    flops = 2 * size**3 * repeats
    return {"wall": flops / wall / 1e9, "cpu": flops / max(cpu, 1e-9) / 1e9}


def denoiser_flops(name: str) -> float:
    """FLOP of one forward + backward pass of the preset's denoiser on one 30-frame 128 px window."""
    with torch.device("meta"):
        model = VegeDiff(preset(name))
        b = 1
        latents = torch.zeros(b, 30, 4, 16, 16)
        with FlopCounterMode(display=False) as counter:
            eps = model.vegenet(latents, torch.zeros(b), meteo=torch.zeros(b, 30, 24), static=torch.zeros(b, 5, 128, 128),
                                keep_cond=torch.ones(b, dtype=torch.bool),
                                dates=torch.zeros(b, 30, 3) if model.cfg.vegenet.date_channels else None)
            eps.sum().backward()
    return float(counter.get_total_flops())


def encode_rate(name: str, device: torch.device, precision: str, frames: int) -> dict[str, float]:
    """The preset's VAE encoding `frames` 128 px frames: FLOP per 30-frame window and windows per second."""
    vae = VegetationVAE(preset(name).vae).to(device).eval()
    batch = torch.rand(frames, 4, 128, 128, device=device) * 0.3
    cast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else torch.autocast(device.type, enabled=False)
    with torch.no_grad(), cast:
        vae.encode(batch[:1])  # warm-up
        with FlopCounterMode(display=False) as counter:
            vae.encode(batch[:1])
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, frames, 32):  # as VegeDiff.encode_frames
            vae.encode(batch[start : start + 32])
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"gflop_per_window": counter.get_total_flops() * 30 / 1e9, "windows_per_s": frames / 30 / wall,
            "windows_per_cpu_s": frames / 30 / max(cpu, 1e-9)}


def prepare(folder: Path, device: torch.device) -> tuple[Path, Path, Path]:
    """Data folder of links, its index and the latent cache of the shipped VAE (built once, untimed)."""
    data = folder / "data"
    data.mkdir()
    for cube in CUBES:
        (data / Path(cube).name).symlink_to(SHARED / cube)
    index, latents = folder / "index.json", folder / "latents"
    sources = build_index(candidates([data]), cache=index, runtime=Runtime(device=device))
    model, _ = load_weights(SHIPPED, device=device)
    build_latent_cache(model, sources, latents, runtime=Runtime(device=device))
    return data, index, latents


def timed_run(folder: Path, data: Path, index: Path, latents: Path, *, name: str, processes: int, batch: int,
              steps: int, device: str, precision: str, threads: int) -> dict:
    run_dir = folder / f"{name}-{processes}"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               "-m", "vegediff_cli", "train", "diffusion", "--data", str(data), "--init", str(SHIPPED),
               "--preset", name, "--output", str(run_dir / "out.safetensors"), "--steps", str(steps),
               "--batch", str(batch), "--warmup", "1", "--precision", precision, "--device", device,
               "--run-dir", str(run_dir), "--latent-cache", str(latents), "--index-cache", str(index),
               "--log-every", "1", "--checkpoint-every", str(steps), "--quiet", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode:
        raise SystemExit(f"training run failed:\n{done.stderr[-3000:]}")
    log = [json.loads(line) for line in (run_dir / "diffusion-log.jsonl").read_text().splitlines()]
    timed = log[1:] or log
    windows = sum(r["windows"] for r in timed)
    return {"windows_per_s": windows / sum(r["wall_s"] for r in timed),
            "windows_per_cpu_s": windows / sum(r["cpu_s"] for r in timed), "threads": threads, "timed_steps": len(timed)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "paper"])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per process)")
    parser.add_argument("--batch", type=int, default=4, help="global batch of the small preset")
    parser.add_argument("--paper-batch", type=int, default=2, help="global batch of the paper preset")
    parser.add_argument("--steps", type=int, default=6, help="steps per run (the first is not timed)")
    parser.add_argument("--paper-steps", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process (1, as scripts/train_weights.py: on a shared CPU, idle "
                             "OpenMP threads spin and a 2-thread process measured 4-7 x more CPU time per window)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not SHARED.exists():
        print(f"real data not found at {SHARED}", file=sys.stderr)
        return 2
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    precision = resolve_precision(args.precision, device)
    load_before = os.getloadavg()
    if device.type == "cpu":
        torch.set_num_threads(1)  # the CPU peak per thread; per CPU second it is the same on any thread count
    peak = {"fp32": matmul_peak(device, torch.float32), "bf16": matmul_peak(device, torch.bfloat16)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data, index, latents = prepare(folder, device)
        for name in args.presets:
            flops = denoiser_flops(name)
            encode = encode_rate(name, device, precision, frames=30 if name == "small" or device.type == "cuda" else 2)
            batch, steps = (args.paper_batch, args.paper_steps) if name == "paper" else (args.batch, args.steps)
            for processes in args.processes:
                measured = timed_run(folder, data, index, latents, name=name, processes=processes, batch=batch,
                                     steps=steps, device=args.device, precision=args.precision, threads=args.threads)
                achieved = measured["windows_per_s"] * flops / 1e9
                per_cpu = measured["windows_per_cpu_s"] * flops / 1e9
                rows.append({"preset": name, "processes": processes, "batch": batch, "precision": precision,
                             **{k: round(v, 4) if isinstance(v, float) else v for k, v in measured.items()},
                             "gflop_per_window": round(flops / 1e9, 2), "achieved_gflop_s": round(achieved, 1),
                             "achieved_gflop_per_cpu_s": round(per_cpu, 1),
                             "fraction_of_peak": round((per_cpu if device.type == "cpu" else achieved)
                                                       / peak[precision]["cpu" if device.type == "cpu" else "wall"], 3),
                             "encode_on_step": {k: round(v, 4) for k, v in encode.items()}})
    load_after = os.getloadavg()
    summary = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x {os.cpu_count()}",
               "torch": torch.__version__, "matmul_peak_gflop_s": {k: {m: round(v, 1) for m, v in p.items()}
                                                                  for k, p in peak.items()},
               "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)], "runs": rows}
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"device {summary['device']}, torch {summary['torch']}, load average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    unit = "per CPU s" if device.type == "cpu" else "wall"
    for kind, values in summary["matmul_peak_gflop_s"].items():
        print(f"matmul peak {kind}: {values['wall']:.1f} GFLOP/s wall, {values['cpu']:.1f} GFLOP per CPU s")
    for r in rows:
        e = r["encode_on_step"]
        print(f"{r['preset']:5s} x{r['processes']} proc ({r['threads']} thread(s) each), batch {r['batch']}, {r['precision']}: "
              f"{r['windows_per_s']:.2f} windows/s wall, {r['windows_per_cpu_s']:.3f} windows per CPU s; "
              f"{r['gflop_per_window']:.1f} GFLOP/window -> {r['achieved_gflop_s']:.1f} GFLOP/s wall, "
              f"{r['achieved_gflop_per_cpu_s']:.1f} GFLOP per CPU s = {r['fraction_of_peak']:.0%} of the "
              f"{r['precision']} matmul peak ({unit}); encoding on the step instead: {e['gflop_per_window']:.1f} "
              f"GFLOP/window, {e['windows_per_cpu_s' if device.type == 'cpu' else 'windows_per_s']:.3f} windows "
              f"per {'CPU s' if device.type == 'cpu' else 's'} for the VAE alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
