"""Speed and memory of `vegediff forecast` on this CPU: the figures issue 5 asks for, measured in one run.

Prints
1. seconds per 128 x 128 chip (horizon 20, 1 member), split into encode / sample / decode, for
   the defaults (Euler 10 steps, the weights' recommended guidance, `--precision auto`), the same
   in fp32, the paper's guidance 2 (two denoiser passes per step) and DPM-Solver++(2M) with 5 steps;
2. the denoiser's FLOPs (counted with torch.utils.flop_counter) and achieved FLOP/s as a fraction
   of this machine's matmul throughput in the same precision (fp32 or bf16), measured in the same
   run with the same threads;
3. the cost of 16 members relative to 1: end-to-end `vegediff forecast` runs (new process, model
   load, cube read, NetCDF and COG writes) of one chip, 1 member vs 16 members, and the cost of
   16 separate 1-member runs (measured `--separate-runs` times, scaled to 16) vs one 16-member run,
   with the CLI's defaults and with `--precision fp32`;
4. peak resident memory of `vegediff forecast` over 1024 x 1024 and 2048 x 2048 px synthetic cubes
   (vegetation only in sparse patches, so that few chips run but every block is read, blended and
   written), with the default block budget and with a small one (--memory-mb 256);
5. the extrapolated time of a full MGRS tile (5490 x 5490 px at 20 m, 1 member): chips in its
   layout x seconds per chip x (1 + stripe-border recomputation) + the measured per-area I/O time.

Times are wall-clock seconds and, beside them, CPU seconds of the process (children included for
CLI runs). On a shared machine the CPU seconds are the better guide: wall time grows with the
other processes' load, CPU time hardly does. The tile extrapolation uses CPU seconds spread over
the cores given (`--cores`, default 2): the tool keeps two cores busy either with two torch threads
or, better for these small matrices, with `--scheduler local --workers 2` (one thread each).

Weights: the shipped weights/vegediff-small.safetensors when present, else a random-init model of the
"small" preset (speed does not depend on the weights' values). Nothing here is a test.

    python benchmarks/forecast_speed.py [--threads 1] [--cores 2] [--separate-runs 3] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from vegediff_cli.config import BANDS, METEO_VARS, SamplerSettings
from vegediff_cli.cube.netcdf import write_netcdf
from vegediff_cli.cube.schema import add_meteo, add_static, new_cube
from vegediff_cli.geo import chip_layout
from vegediff_cli.model.device import inference_autocast, resolve_precision
from vegediff_cli.model.presets import PRESETS
from vegediff_cli.model.vegediff import VegeDiff
from vegediff_cli.model.weights import save_weights
from vegediff_cli.pipeline.chips import ChipBatch, ChipSettings, forecast_chips
from vegediff_cli.pipeline.forecast_model import default_guidance, load_model, shipped_weights
from vegediff_cli.pipeline.forecast_plan import bytes_per_pixel
from vegediff_cli.pipeline.tiling import plan_tiles, stripe_width

TILE_PX = 5490
PATCH_PERIOD = 960  # vegetation patches at 40 + k * 960 px: each lies inside exactly one chip


class Clock:
    """Wall and CPU seconds of a block of work (CPU: this process, or its finished children)."""

    def __init__(self, children: bool = False) -> None:
        self.children = children

    def _cpu(self) -> float:
        if self.children:
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            return usage.ru_utime + usage.ru_stime
        return time.process_time()

    def __enter__(self) -> Clock:
        self._wall, self._cpu0 = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = self._cpu() - self._cpu0


def weights_file(folder: Path) -> tuple[Path, str]:
    shipped = shipped_weights()
    if shipped.exists():
        return shipped, f"shipped {shipped.name}"
    torch.manual_seed(0)
    return save_weights(VegeDiff(PRESETS["small"]), folder / "small.safetensors"), "random-init 'small' preset"


def configurations(guidance: float, precision: str) -> list[tuple[str, SamplerSettings, str]]:
    """(label, sampler settings, resolved precision) of the per-chip timings; the first is the CLI default."""
    default = f"guidance {guidance:g}"
    return [
        (f"defaults: euler 10, {default}, {precision}", SamplerSettings(steps=10, guidance_scale=guidance), precision),
        (f"euler 10, {default}, fp32", SamplerSettings(steps=10, guidance_scale=guidance), "fp32"),
        (f"paper: euler 10, guidance 2, {precision}", SamplerSettings(steps=10, guidance_scale=2.0), precision),
        ("paper: euler 10, guidance 2, fp32", SamplerSettings(steps=10, guidance_scale=2.0), "fp32"),
        (f"dpmpp2m 5, {default}, {precision}", SamplerSettings(sampler="dpmpp2m", steps=5, guidance_scale=guidance),
         precision),
    ]


def matmul_gflops(size: int = 1024, repeats: int = 20, dtype: torch.dtype = torch.float32) -> tuple[float, float]:
    """Matmul throughput in `dtype`, in GFLOP per wall second and per CPU second."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    with Clock() as clock:
        for _ in range(repeats):
            a @ b
    flops = 2 * size**3 * repeats
    return flops / clock.wall / 1e9, flops / clock.cpu / 1e9


def chip_inputs(chips: int, seed: int = 0) -> ChipBatch:
    rng = np.random.default_rng(seed)
    context = (0.05 + 0.3 * rng.random((chips, 10, 4, 128, 128))).astype("float32")
    return ChipBatch(context, np.ones((chips, 10, 128, 128), bool), rng.normal(0, 1, (chips, 30, 24)).astype("float32"),
                     rng.normal(0, 1, (chips, 5, 128, 128)).astype("float32"), list(range(chips)))


def stage_clocks(model, settings: SamplerSettings, precision: str) -> dict[str, Clock]:
    """Encode, sample (the denoiser loop) and decode of one chip, 1 member, as forecast_chips runs them."""
    batch = chip_inputs(1)
    clocks = {name: Clock() for name in ("encode", "sample", "decode")}
    with torch.no_grad(), inference_autocast(torch.device("cpu"), precision):
        with clocks["encode"]:
            context = model.encode_frames(torch.from_numpy(batch.context))
        with clocks["sample"]:
            future = model.sample(context, meteo=torch.from_numpy(batch.meteo), static=torch.from_numpy(batch.static),
                                  conditioned=True, members=1, settings=settings)
        with clocks["decode"]:
            model.decode_frames(future[0])
            model.vae.decode(context[:, -1])  # detail transfer's reference reconstruction
    return clocks


def sample_flops(model, settings: SamplerSettings) -> int:
    batch = chip_inputs(1)
    with torch.no_grad():
        context = model.encode_frames(torch.from_numpy(batch.context))
        with FlopCounterMode(display=False) as counter:
            model.sample(context, meteo=torch.from_numpy(batch.meteo), static=torch.from_numpy(batch.static),
                         conditioned=True, members=1, settings=settings)
    return counter.get_total_flops()


def synthetic_cube(path: Path, *, size: int, frames: int, meteo: bool, patches: bool = False) -> Path:
    """A cube of `size` px; with `patches`, vegetation only in 24 px patches every PATCH_PERIOD px (else everywhere)."""
    rng = np.random.default_rng(0)
    times = pd.date_range("2022-04-02", periods=frames, freq="5D")
    yy, xx = np.meshgrid(np.linspace(0, 1, size, dtype="float32"), np.linspace(0, 1, size, dtype="float32"),
                         indexing="ij")
    bands = np.empty((frames, len(BANDS), size, size), dtype="float32")
    for t in range(frames):
        ndvi = 0.55 + 0.2 * np.sin(np.pi * t / frames) + 0.1 * (yy - xx) + rng.normal(0, 0.02, (size, size))
        red = 0.04 + 0.03 * xx
        bands[t] = np.stack([red * 0.7, red * 1.2, red, red * (1 + ndvi) / (1 - ndvi)])
    valid = np.ones((frames, size, size), bool)
    valid[::3, : size // 3] = False  # some cloud
    bands = np.where(valid[:, None], bands, np.nan)
    y = 5_300_000.0 - 10.0 - 20.0 * np.arange(size)
    x = 600_000.0 + 10.0 + 20.0 * np.arange(size)
    cube = new_cube(times=times, y=y, x=x, crs="EPSG:32632", bands=bands, valid=valid, source="prepare")
    del bands
    if meteo:
        days = pd.date_range(times[0] - pd.Timedelta(days=4), times[-1], freq="D")
        season = np.sin(2 * np.pi * (days.day_of_year.values - 110) / 365.0)
        base = {"tg": 10, "tn": 5, "tx": 15, "rr": 2, "pp": 1013, "hu": 75, "fg": 3, "qq": 150}
        cube = add_meteo(cube, {v: base[v] + 5 * season for v in METEO_VARS}, days)
    landcover = np.full((size, size), 50.0 if patches else 30.0, dtype="float32")  # 50 built-up, 30 grassland
    if patches:
        for r in range(40, size, PATCH_PERIOD):
            for c in range(40, size, PATCH_PERIOD):
                landcover[r:r + 24, c:c + 24] = 30.0
    cube = add_static(cube, {"cop_dem": 300 + 100 * yy, "esawc_lc": landcover})
    write_netcdf(cube, path)
    return path


def run_cli(*args: str) -> tuple[Clock, float, dict]:
    """Wall/CPU clock, peak RSS (MiB) and --json summary of one `vegediff forecast` child process."""
    # VmHWM, not ru_maxrss: Linux carries the forked parent's resident set into the child's ru_maxrss
    script = ("import sys; from vegediff_cli.cli.app import main; code = main(sys.argv[1:]); "
              "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
              "print('PEAK_KIB', hwm, file=sys.stderr); sys.exit(code)")
    with Clock(children=True) as clock:
        done = subprocess.run([sys.executable, "-c", script, "forecast", *args, "--quiet", "--json"],
                              capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"forecast failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    peak = int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("PEAK_KIB"))) / 1024
    return clock, peak, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (1: no oversubscription)")
    parser.add_argument("--cores", type=int, default=2, help="cores the tile extrapolation spreads CPU time over")
    parser.add_argument("--batch", type=int, default=2, help="chips per timing batch")
    parser.add_argument("--separate-runs", type=int, default=3, help="1-member runs actually timed (scaled to 16)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the 1024/2048 px memory runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # CLI children use the same thread count
    print(f"# vegediff forecast benchmark: torch {torch.__version__}, {args.threads} thread(s), "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="vegediff-forecast-bench-") as tmp:
        folder = Path(tmp)
        weights, label = weights_file(folder)
        model = load_model(weights, torch.device("cpu"))
        print(f"weights: {label}")

        guidance = default_guidance(weights)
        precision = resolve_precision("auto", torch.device("cpu"))
        print(f"defaults of these weights on this machine: guidance {guidance:g}, --precision auto -> {precision}")
        matmul = {name: matmul_gflops(dtype=dtype) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
        print("\n## machine\n" + "\n".join(
            f"{name} matmul (1024^3, {args.threads} thread(s)): {wall:.1f} GFLOP/s wall, {cpu:.1f} GFLOP per CPU second"
            for name, (wall, cpu) in matmul.items()))

        print("\n## one 128 x 128 chip, horizon 20, 1 member, with meteorology (wall s / CPU s)")
        forecast_chips(model, chip_inputs(1), conditioned=True, settings=ChipSettings(sampler=SamplerSettings(steps=1)))
        per_chip: dict[str, Clock] = {}
        for label, settings, chip_precision in configurations(guidance, precision):
            with Clock() as clock:
                forecast_chips(model, chip_inputs(args.batch), conditioned=True,
                               settings=ChipSettings(sampler=settings, precision=chip_precision))
            clock.wall, clock.cpu = clock.wall / args.batch, clock.cpu / args.batch
            per_chip[label] = clock
            stages = stage_clocks(model, settings, chip_precision)
            flops = sample_flops(model, settings)
            wall_gflops, cpu_gflops = matmul[chip_precision]
            per_cpu_s = flops / stages["sample"].cpu / 1e9
            print(f"{label}: {clock.wall:.2f} / {clock.cpu:.2f} s per chip (batches of {args.batch}); "
                  + ", ".join(f"{k} {v.wall:.2f} / {v.cpu:.2f}" for k, v in stages.items()))
            print(f"  denoiser: {flops / 1e9:.1f} GFLOP per chip, {per_cpu_s:.1f} GFLOP per CPU second = "
                  f"{per_cpu_s / cpu_gflops:.0%} of the {chip_precision} matmul throughput "
                  f"({flops / stages['sample'].wall / 1e9:.1f} GFLOP/s wall = "
                  f"{flops / stages['sample'].wall / 1e9 / wall_gflops:.0%})")

        print("\n## 16 members vs 1: `vegediff forecast` of one 128 px chip, new process each, hindcast with meteorology")
        cube = synthetic_cube(folder / "chip.nc", size=128, frames=30, meteo=True)
        common = ["--input", str(cube), "--weights", str(weights), "--start", "2022-05-22", "--device", "cpu"]
        for extra in ([], ["--precision", "fp32"]):
            options = common + extra
            singles = [run_cli(*options, "--output", str(folder / f"one{i}.nc"))[0] for i in range(args.separate_runs)]
            one_wall = float(np.mean([c.wall for c in singles]))
            one_cpu = float(np.mean([c.cpu for c in singles]))
            sixteen, _, summary = run_cli(*options, "--members", "16", "--output", str(folder / "sixteen.nc"))
            assert summary["meteo_source"] == "cube" and summary["members"] == 16
            print(f"CLI defaults{' ' + ' '.join(extra) if extra else ''} (precision {summary['precision']}):")
            print(f"  1 member: {one_wall:.1f} / {one_cpu:.1f} s per run (mean of {len(singles)} runs)")
            print(f"  16 members in one run: {sixteen.wall:.1f} / {sixteen.cpu:.1f} s = {sixteen.wall / one_wall:.1f} x / "
                  f"{sixteen.cpu / one_cpu:.1f} x the 1-member run")
            print(f"  16 separate 1-member runs: {16 * one_wall:.0f} / {16 * one_cpu:.0f} s = "
                  f"{16 * one_wall / sixteen.wall:.2f} x / {16 * one_cpu / sixteen.cpu:.2f} x the one 16-member run "
                  f"(target >= 4 x)")

        io_cpu = None
        if not args.skip_memory:
            print("\n## peak memory (RSS) of `vegediff forecast`, 1 member, Euler 2 steps, vegetation in sparse patches")
            for size in (1024, 2048):
                path = synthetic_cube(folder / f"area{size}.nc", size=size, frames=11, meteo=False, patches=True)
                for budget in (1024, 256):
                    clock, peak, summary = run_cli("--input", str(path), "--weights", str(weights), "--device", "cpu",
                                                   "--steps", "2", "--memory-mb", str(budget),
                                                   "--output", str(folder / f"area{size}_{budget}.nc"))
                    print(f"{size} x {size} px, --memory-mb {budget}: peak RSS {peak:.0f} MiB, {clock.wall:.0f} / "
                          f"{clock.cpu:.0f} s, {summary['chips_computed']} chips computed")
                    if size == 2048 and budget == 1024:
                        model_cpu = summary["chips_computed"] * per_chip_uncond(model, precision)
                        io_cpu = max(0.0, clock.cpu - model_cpu)
                path.unlink()

        print(f"\n## full MGRS tile ({TILE_PX} x {TILE_PX} px), 1 member, {args.cores} cores")
        stripe = stripe_width(TILE_PX, bytes_per_pixel=bytes_per_pixel(1, 20, 10), band_rows=256,
                              budget_bytes=1024 * 2**20)
        io_tile = 0.0
        if io_cpu is not None:
            io_tile = io_cpu * (TILE_PX / 2048) ** 2
            print(f"non-model CPU time of the 2048 px run (start-up, reads, blending, NetCDF and COG writes): "
                  f"{io_cpu:.0f} s -> {io_tile / 60:.1f} CPU min for a tile")
        for overlap in (32, 16):
            chips = len(chip_layout(TILE_PX, TILE_PX, overlap=overlap))
            overhead = plan_tiles(TILE_PX, TILE_PX, overlap=overlap, stripe_cols=stripe).recompute_overhead()
            print(f"--overlap {overlap}: {chips} chips; stripes of {stripe} px recompute {overhead:.1%} at their borders")
            for label, clock in per_chip.items():
                cpu = chips * (1 + overhead) * clock.cpu + io_tile
                wall = chips * (1 + overhead) * clock.wall
                print(f"  {label}: {cpu / 60 / args.cores:.0f} min on {args.cores} free cores "
                      f"({cpu / 3600:.1f} CPU hours; at this run's wall speed, one process: {wall / 3600:.1f} h) "
                      f"(target < 60 min)")


def per_chip_uncond(model, precision: str) -> float:
    """CPU seconds per chip with the memory runs' settings (Euler, 2 steps, no meteorology -> no guidance)."""
    with Clock() as clock:
        forecast_chips(model, chip_inputs(1), conditioned=False, settings=ChipSettings(sampler=SamplerSettings(steps=2), precision=precision))
    return clock.cpu


if __name__ == "__main__":
    main()
