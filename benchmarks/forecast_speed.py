"""Speed and memory of `vegediff forecast` as a user runs it: the figures of issue 13, measured in one run.

Prints, and with --json PATH also writes:
1. the machine: CPU model and the flags that matter (detected from /proc/cpuinfo, never assumed),
   usable cores, load average, torch build;
2. fp32 and bf16 matmul peaks (2048^3) on 1 thread and on all usable cores, in this run;
3. CLI start-up: `vegediff --help`, `vegediff --version`, `vegediff info --exit-codes` (the
   installed command, new process each);
4. the denoiser: FLOPs per chip (torch FlopCounterMode), CPU seconds per chip eager and compiled
   (model/compiled.py), the achieved rate as a share of this run's 1-thread bf16 peak, the rate of
   matmuls of the denoiser's own shapes, and a profile by operator (why the share is what it is);
   the cost of compiling (cold: empty kernel cache; warm) and the chip-members where it pays off;
5. the whole CLI with its defaults on one real chip (the Portugal 2021 GreenEarthNet minicube):
   1 member and 16 members, wall and CPU seconds (children included);
6. the thread policy, measured: a small mosaic with one process and 1 or N threads vs the default
   (one single-threaded process per core);
7. a full MGRS tile of real chips (benchmarks/mosaic.py: 5490 x 5490 px tiled from the shared
   minicubes; `--tile-size 2048` extrapolates from a 2048^2 mosaic and says so) with the CLI
   defaults: wall time, CPU time, seconds per chip, peak resident memory of all its processes
   against `--memory-mb` plus the documented overhead; then the same command while another
   process keeps `--load-threads` cores busy.

Times are wall-clock and CPU seconds; on a shared machine CPU seconds are the steadier figure.
Nothing here is a test. Rerun everything (about an hour on 2 cores) with

    python benchmarks/forecast_speed.py --json forecast_speed.json
    python benchmarks/forecast_speed.py --tile-size 1024 --skip-load    # a few minutes, for development
    python benchmarks/forecast_speed.py --skip-compile --skip-policy --skip-tile   # quickest check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mosaic import WEATHER, write_mosaic  # noqa: E402

from vegediff_cli.config import SamplerSettings  # noqa: E402
from vegediff_cli.geo import chip_layout  # noqa: E402
from vegediff_cli.model.compiled import compile_for_sampling  # noqa: E402
from vegediff_cli.model.device import inference_autocast, resolve_precision  # noqa: E402
from vegediff_cli.model.inputs import date_features  # noqa: E402
from vegediff_cli.pipeline.forecast.model import default_guidance, load_model, resolve_weights  # noqa: E402
from vegediff_cli.pipeline.forecast.runtime import (  # noqa: E402
    COMPILE_MIN_CHIP_MEMBERS,
    MAIN_OVERHEAD_MIB,
    WORKER_OVERHEAD_MIB,
    usable_cores,
)

TILE_PX = 5490
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
         "amx_bf16", "amx_int8")
REAL_CHIP = WEATHER  # the Portugal 2021 minicube: one 128 px chip with meteorology; hindcast from frame 10
HINDCAST_START = "2021-07-03"
OVERHEAD_MIB = {"main": MAIN_OVERHEAD_MIB, "worker": WORKER_OVERHEAD_MIB}  # docs/forecast.md, "Memory"
RESULTS: dict = {}

# FlopCounterMode knows the GPU attention kernels; count the CPU one too (QK^T and AV, as for those).
_CPU_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
if _CPU_FLASH not in flop_registry:
    register_flop_formula(_CPU_FLASH)(lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v))


def say(section: str, key: str, value, text: str) -> None:
    RESULTS.setdefault(section, {})[key] = value
    print(text, flush=True)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min)"


# --- 1. machine ---------------------------------------------------------------------------------
def machine() -> None:
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    model = info.get("model name") or platform.processor() or "unknown"
    print("## machine")
    say("machine", "cpu", model, f"CPU: {model} (vendor {info.get('vendor_id', '?')}, family {info.get('cpu family', '?')}, "
        f"model {info.get('model', '?')})")
    present = [f for f in FLAGS if f in flags]
    say("machine", "flags", present, f"flags: {' '.join(present) or 'none of ' + ' '.join(FLAGS)}; absent: "
        f"{' '.join(f for f in FLAGS if f not in flags)}")
    say("machine", "cores", {"usable": usable_cores(), "os": os.cpu_count()},
        f"cores: {usable_cores()} usable of {os.cpu_count()}; memory {psutil.virtual_memory().total / 2**30:.1f} GiB")
    backend = torch.__config__.parallel_info().splitlines()
    say("machine", "torch", torch.__version__, f"torch {torch.__version__}; {next((b for b in backend if 'backend' in b), '').strip()}")
    say("machine", "load_start", os.getloadavg()[0], load() + " at the start")


# --- 2. matmul peaks ----------------------------------------------------------------------------
def matmul_rate(dtype: torch.dtype, threads: int, size: int = 2048, seconds: float = 3.0,
                shape: tuple[int, int, int] | None = None) -> tuple[float, float]:
    """GFLOP per wall second and per CPU second of (m x k) @ (k x n) matmuls."""
    torch.set_num_threads(threads)
    m, k, n = shape or (size, size, size)
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b
    count, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        a @ b
        count += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    torch.set_num_threads(1)
    flops = 2 * m * k * n * count
    return flops / wall / 1e9, flops / cpu / 1e9


def matmul_peaks() -> dict:
    print("\n## matmul peaks (2048^3, this run)")
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for threads in sorted({1, usable_cores()}):
            wall, cpu = matmul_rate(dtype, threads)
            peaks[(name, threads)] = (wall, cpu)
            say("matmul", f"{name}_{threads}t", {"gflops_wall": wall, "gflops_per_cpu_s": cpu},
                f"{name}, {threads} thread(s): {wall:.0f} GFLOP/s wall, {cpu:.0f} GFLOP per CPU second")
    return peaks


# --- 3. CLI start-up ----------------------------------------------------------------------------
def vegediff_command() -> str:
    found = shutil.which("vegediff", path=str(Path(sys.executable).parent)) or shutil.which("vegediff")
    if not found:
        raise SystemExit("the `vegediff` command is not installed here: pip install -e . first")
    return found


def startup() -> None:
    print("\n## CLI start-up (installed `vegediff`, new process, median of 5)")
    for args in (["--help"], ["--version"], ["info", "--exit-codes"]):
        times, cpus = [], []
        for _ in range(5):
            began, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([vegediff_command(), *args], capture_output=True, check=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            times.append(time.perf_counter() - began)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        say("startup", " ".join(args), {"wall_s": statistics.median(times), "cpu_s": statistics.median(cpus)},
            f"vegediff {' '.join(args)}: {statistics.median(times):.2f} s wall, {statistics.median(cpus):.2f} CPU s "
            "(target < 1 s)")


# --- 4. the denoiser ----------------------------------------------------------------------------
def denoiser(weights: Path, peaks: dict, folder: Path, *, compiled: bool = True) -> None:
    print("\n## the denoiser: one chip, 20 frames, Euler 10, the weights' guidance, 1 thread")
    torch.set_num_threads(1)
    device = torch.device("cpu")
    precision = resolve_precision("auto", device)
    model = load_model(weights, device)
    chips = 4
    gen = torch.Generator().manual_seed(0)
    frames = 0.05 + 0.3 * torch.rand(chips, 10, 4, 128, 128, generator=gen)
    meteo = torch.randn(chips, 30, 24, generator=gen)
    static = torch.randn(chips, 5, 128, 128, generator=gen)
    dates = chip_dates(model, chips)
    settings = SamplerSettings(steps=10, guidance_scale=default_guidance(weights))
    with torch.no_grad(), inference_autocast(device, precision):
        context = model.encode_frames(frames).float()

        def sample():
            return model.sample(context, meteo=meteo, static=static, conditioned=True, members=1, settings=settings,
                                dates=dates)

        with FlopCounterMode(display=False) as counter:
            sample()
        flops = counter.get_total_flops() / chips
        flops_by_op = {str(op): count for op, count in counter.get_flop_counts().get("Global", {}).items()}
        times = {}
        for label in ("eager", "compiled") if compiled else ("eager",):
            if label == "compiled":
                began = time.process_time()
                compile_for_sampling(model, precision=precision, device=device)
                sample()
                say("denoiser", "compile_in_process_cpu_s", time.process_time() - began,
                    f"compiling in this process (kernel cache as found): {time.process_time() - began:.1f} CPU s")
            sample()
            cpu0 = time.process_time()
            for _ in range(3):
                sample()
            times[label] = (time.process_time() - cpu0) / 3 / chips
        model.sampling_nets = None
        peak = peaks[(precision, 1)][1]
        say("denoiser", "gflop_per_chip", flops / 1e9, f"{flops / 1e9:.1f} GFLOP per chip ({precision}, guidance "
            f"{settings.guidance_scale:g})")
        for label, seconds in times.items():
            rate = flops / seconds / 1e9
            say("denoiser", f"{label}_cpu_s_per_chip", seconds, f"{label}: {seconds:.3f} CPU s per chip = {rate:.0f} GFLOP "
                f"per CPU s = {rate / peak:.0%} of the 1-thread {precision} matmul peak ({peak:.0f}) (target 30 %)")
        profile(sample, flops_by_op, times["eager"] * chips, peak, precision)
    if compiled:
        compile_cost(weights, precision, times["eager"] - times["compiled"], folder)


def chip_dates(model, chips: int) -> torch.Tensor | None:
    """(chips, 30, 3) date features of the real chip's frames (weights with date_channels need them), else None."""
    if not model.cfg.vegenet.date_channels:
        return None
    import pandas as pd

    frames = pd.date_range(end=HINDCAST_START, periods=11, freq="5D")[:-1].append(
        pd.date_range(HINDCAST_START, periods=20, freq="5D"))
    return torch.from_numpy(date_features(frames, 39.29)).expand(chips, -1, -1).contiguous()


def profile(sample, flops_by_op: dict[str, int], cpu_seconds: float, peak: float, precision: str) -> None:
    """Where the denoiser's time goes, by operator, and the rate each kind reaches (its share of the
    profile times `cpu_seconds`, the measured CPU time of one eager call: the profiler's clock is wall time)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        sample()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]
    say("denoiser", "profile_top_ops", {e.key: e.self_cpu_time_total / total for e in top},
        "profile (eager, share of self CPU time): " + ", ".join(f"{e.key} {e.self_cpu_time_total / total:.0%}"
                                                                 for e in top))
    kinds = {"linear layers (addmm, mm, bmm)": ("addmm", "mm", "bmm"), "attention (SDPA)": ("scaled_dot_product",)}
    for kind, names in kinds.items():
        share = sum(e.self_cpu_time_total for e in events
                    if e.key.removeprefix("aten::").split(".")[0] in names
                    or any(n in e.key for n in names if "_" in n)) / total
        work = sum(count for op, count in flops_by_op.items()
                   if op.split(".")[1] in names or any(n in op for n in names if "_" in n))
        if share > 0:
            rate = work / (share * cpu_seconds) / 1e9
            say("denoiser", f"rate_{kind.split()[0]}", {"share_of_time": share, "gflops": rate},
                f"  {kind}: {share:.0%} of the time, {work / max(1, sum(flops_by_op.values())):.0%} "
                f"of the FLOPs, at {rate:.0f} GFLOP per CPU s = {rate / peak:.0%} of the peak")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    for shape in ((5120, 128, 384), (5120, 512, 128)):
        _, cpu = matmul_rate(dtype, 1, shape=shape, seconds=1.0)
        say("denoiser", f"matmul_{'x'.join(map(str, shape))}", cpu,
            f"  a {shape[0]}x{shape[1]} @ {shape[1]}x{shape[2]} {precision} matmul alone (a linear layer of the "
            f"denoiser at 4 chips): {cpu:.0f} GFLOP per CPU s = {cpu / peak:.0%} of the 2048^3 peak")


def compile_cost(weights: Path, precision: str, saving: float, folder: Path) -> None:
    """Cold (empty kernel cache) and warm compilation, each in a fresh process, as a worker pays it."""
    cache = folder / "inductor-cold"
    code = ("import sys, time, torch; torch.set_num_threads(1)\n"
            "from vegediff_cli.pipeline.forecast.model import load_model\n"
            "from vegediff_cli.model.compiled import compile_for_sampling\n"
            "from vegediff_cli.config import SamplerSettings\n"
            "from vegediff_cli.model.device import inference_autocast\n"
            "d = torch.device('cpu'); m = load_model(sys.argv[1], d)\n"
            "x = torch.rand(4, 10, 4, 128, 128)\n"
            "n = m.cfg.vegenet.date_channels\n"
            "dates = torch.zeros(4, 30, n) if n else None\n"
            "with torch.no_grad(), inference_autocast(d, sys.argv[2]):\n"
            "    c = m.encode_frames(x).float()\n"
            "    t = time.process_time(); w = time.perf_counter()\n"
            "    compile_for_sampling(m, precision=sys.argv[2], device=d)\n"
            "    m.sample(c, meteo=torch.zeros(4, 30, 24), static=torch.zeros(4, 5, 128, 128), conditioned=True,"
            " settings=SamplerSettings(steps=1), dates=dates)\n"
            "    print(time.process_time() - t, time.perf_counter() - w)\n")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    for label in ("cold", "warm"):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run([sys.executable, "-c", code, str(weights), precision], capture_output=True, text=True,
                              env=env, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_self, wall = map(float, done.stdout.split()[-2:])
        children = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        say("compile", label, {"cpu_s": cpu_self, "wall_s": wall, "process_cpu_s": children},
            f"compile, {label} kernel cache: {wall:.0f} s wall, {cpu_self:.0f} CPU s (whole process incl. the C++ "
            f"compiler: {children:.0f} CPU s)")
    warm, cold = RESULTS["compile"]["warm"]["process_cpu_s"], RESULTS["compile"]["cold"]["process_cpu_s"]
    if saving > 0:  # in CPU seconds: the other processes want the same cores
        say("compile", "break_even_chip_members", {"warm": warm / saving, "cold": cold / saving},
            f"compiling saves {saving:.3f} CPU s per chip-member: it pays from {warm / saving:.0f} chip-members per "
            f"process with a warm cache, {cold / saving:.0f} cold (CPU seconds; --compile auto: "
            f"{COMPILE_MIN_CHIP_MEMBERS})")


# --- CLI runs -----------------------------------------------------------------------------------
def run_cli(*args: str, env: dict | None = None) -> dict:
    """One `vegediff forecast ... --json` run: wall, CPU (all its processes), peak RSS of its process tree."""
    began, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    # --force: reruns with the same inputs would otherwise be skipped as up to date
    process = subprocess.Popen([vegediff_command(), "forecast", *args, "--force", "--quiet", "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    peak, tree = 0, psutil.Process(process.pid)
    while process.poll() is None:
        try:
            rss = 0
            for member in [tree, *tree.children(recursive=True)]:
                try:
                    rss += member.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    out, err = process.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise SystemExit(f"vegediff forecast {' '.join(args)} failed ({process.returncode}): {err.strip()[-800:]}")
    summary = json.loads(out)
    return {"wall": time.perf_counter() - began, "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "peak_tree_mib": peak / 2**20, "summary": summary}


def one_chip(folder: Path) -> None:
    print(f"\n## the whole CLI on one real chip ({REAL_CHIP.name}, --start {HINDCAST_START}, defaults)")
    common = ["--input", str(REAL_CHIP), "--start", HINDCAST_START]
    runs = {}
    for members, repeats in ((1, 3), (16, 2)):
        results = [run_cli(*common, "--members", str(members), "--output", str(folder / f"chip{members}_{i}.nc"))
                   for i in range(repeats)]
        wall = statistics.median(r["wall"] for r in results)
        cpu = statistics.median(r["cpu"] for r in results)
        runs[members] = (wall, cpu)
        runtime = results[0]["summary"]["runtime"]
        say("one_chip", f"members_{members}", {"wall_s": wall, "cpu_s": cpu, "runtime": runtime},
            f"{members} member(s): {wall:.1f} s wall, {cpu:.1f} CPU s (median of {repeats}; {runtime['reason']})")
    ratio = runs[16][0] / runs[1][0]
    say("one_chip", "ratio_16_to_1_wall", ratio, f"16 members cost {ratio:.1f} x one member in wall time "
        f"({runs[16][1] / runs[1][1]:.1f} x in CPU time) (target <= 4 x)")


def policy(folder: Path, size: int) -> None:
    cube = write_mosaic(size, folder / f"policy{size}.nc")
    cores = usable_cores()
    print(f"\n## thread policy: {size} x {size} px mosaic, CLI defaults otherwise ({load()})")
    choices = [("one process, 1 thread", ["--workers", "0", "--threads", "1"]),
               (f"one process, {cores} threads", ["--workers", "0", "--threads", str(cores)]),
               (f"default: {cores} processes x 1 thread", [])]
    for label, extra in choices:
        result = run_cli("--input", str(cube), "--weather", str(WEATHER), *extra, "--output", str(folder / "policy.nc"))
        chips = result["summary"]["chips_computed"]
        say("policy", label, {"wall_s": result["wall"], "cpu_s": result["cpu"], "chips": chips},
            f"{label}: {result['wall']:.1f} s wall, {result['cpu']:.1f} CPU s, {chips} chips")


def tile(folder: Path, size: int, cache: Path | None, load_threads: int, skip_load: bool) -> None:
    path = (cache or folder) / f"mosaic{size}.nc"
    if not path.exists():
        began = time.perf_counter()
        write_mosaic(size, path)
        print(f"\n(built {path.name} in {time.perf_counter() - began:.0f} s)")
    layout = len(chip_layout(size, size))
    full = len(chip_layout(TILE_PX, TILE_PX))
    what = "a full MGRS tile" if size == TILE_PX else f"a {size}^2 mosaic, extrapolated to a full tile ({full} chips)"
    print(f"\n## {what} of real chips, 1 member, CLI defaults + --weather ({load()})")
    args = ["--input", str(path), "--weather", str(WEATHER), "--output", str(folder / "tile.nc")]
    quiet = run_cli(*args)
    report_tile("no added load", quiet, size, layout, full)
    if skip_load:
        return
    spin = ("import sys, threading\n"
            "def spin():\n    x = 0\n    while True:\n        x += 1\n"
            "for _ in range(int(sys.argv[1]) - 1):\n    threading.Thread(target=spin, daemon=True).start()\nspin()\n")
    # A Python thread holds the GIL: one process per busy core.
    loads = [subprocess.Popen([sys.executable, "-c", spin, "1"]) for _ in range(load_threads)]
    try:
        print(f"\n## the same under load: {load_threads} other process(es) keeping a core busy each ({load()})")
        loaded = run_cli(*args)
    finally:
        for process in loads:
            process.kill()
    report_tile("with added load", loaded, size, layout, full)
    ratio = loaded["wall"] / quiet["wall"]
    say("tile", "load_slowdown", ratio, f"under load: {ratio:.2f} x the wall time (target <= 2 x)")


def report_tile(label: str, result: dict, size: int, layout: int, full: int) -> None:
    summary, runtime = result["summary"], result["summary"]["runtime"]
    chips = summary["chips_computed"]
    scale = full / layout if size != TILE_PX else 1.0
    budget = summary["runtime"]["memory_mb"]
    overhead = OVERHEAD_MIB["main"] + OVERHEAD_MIB["worker"] * runtime["workers"]
    peaks = [runtime["main_peak_rss_mib"], *runtime["worker_peak_rss_mib"]]
    say("tile", label, {"wall_s": result["wall"], "cpu_s": result["cpu"], "chips": chips, "chips_in_layout": layout,
                        "full_tile_wall_min_extrapolated": result["wall"] * scale / 60, "peak_tree_mib": result["peak_tree_mib"],
                        "peak_rss_mib_per_process": peaks, "runtime": runtime},
        f"{label}: {result['wall']:.0f} s wall ({result['wall'] / 60:.1f} min), {result['cpu']:.0f} CPU s, {chips} chips "
        f"computed of {layout}: {result['wall'] / chips:.3f} s wall / {result['cpu'] / chips:.3f} CPU s per chip"
        + (f"; full tile ({full} chips) extrapolated: {result['wall'] * scale / 60:.1f} min" if scale != 1 else "")
        + " (target < 15 min)\n"
        f"  runtime: {runtime['reason']}\n"
        f"  peak RSS of all its processes {result['peak_tree_mib']:.0f} MiB (sampled; per process "
        f"{', '.join(f'{p:.0f}' for p in peaks)} MiB) vs --memory-mb {budget} + overhead {overhead} MiB = "
        f"{budget + overhead} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile-size", type=int, default=TILE_PX, help="mosaic side in px (5490: a full tile)")
    parser.add_argument("--policy-size", type=int, default=768, help="mosaic side of the thread-policy runs")
    parser.add_argument("--load-threads", type=int, default=1, help="cores the load process(es) keep busy")
    parser.add_argument("--cache", type=Path, help="folder to keep the mosaic cubes in between runs")
    parser.add_argument("--skip-tile", action="store_true")
    parser.add_argument("--skip-load", action="store_true", help="skip the tile run under load")
    parser.add_argument("--skip-policy", action="store_true")
    parser.add_argument("--skip-compile", action="store_true", help="eager denoiser only: no compilation (minutes cold)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    weights = resolve_weights(None)
    with tempfile.TemporaryDirectory(prefix="vegediff-speed-") as tmp:
        folder = Path(tmp)
        machine()
        peaks = matmul_peaks()
        startup()
        denoiser(weights, peaks, folder, compiled=not args.skip_compile)
        one_chip(folder)
        if not args.skip_policy:
            policy(folder, args.policy_size)
        if not args.skip_tile:
            tile(folder, args.tile_size, args.cache, args.load_threads, args.skip_load)
    say("machine", "load_end", os.getloadavg()[0], f"\n{load()} at the end")
    if args.json:
        args.json.write_text(json.dumps(RESULTS, indent=2, default=str))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
