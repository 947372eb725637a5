"""How a forecast uses the machine: worker processes, torch threads, compiled denoiser, rows per model call.

The policy follows measurements on this project's 2-core AVX512-BF16 CPU (benchmarks/forecast_speed.py
prints them again on any machine; docs/forecast.md, "Speed and memory"):

- **One torch thread per process, one process per core.** The small denoiser's matrices (128-wide
  tokens) are too small to share between threads: two intra-op threads ran a chip no faster than
  one, and under load from another process spinning OpenMP threads made a chip 10-30 x slower
  (issue 13). Separate single-threaded processes scale with the cores, and under load each one
  just gets less CPU time. Both the local path (pipeline/forecast/workers.py: chip batches on a
  pool of processes) and `--scheduler local` (Dask: one single-threaded worker per core) follow it.
- **Passive OpenMP waiting** (``OMP_WAIT_POLICY=PASSIVE``) wherever more than one thread is asked
  for: idle threads sleep instead of spinning against other processes. OpenMP reads it once, when
  torch loads, so :func:`configure_process` runs before the first torch import (cli/app.py's
  `main`, and each worker process before it imports torch).
- **Workers only when there is work for them**: a process costs 2-8 s to start (imports, weights),
  so the forecast times one model call here first (:func:`workers.probe_call`, on
  synthetic inputs of the real call's shape) and starts workers only when its calls add up to at
  least POOL_MIN_SECONDS: a full tile does, the tests' tiny model does not, one chip with 16
  members (4 calls) does on a CPU without AVX-512 (26 s of calls) but not with AVX512-BF16 (5 s).
- **Compiled denoiser (model/compiled.py) above COMPILE_MIN_CHIP_MEMBERS chip-members per process**
  (and per denoiser, for weights with several: each is compiled apart and draws its share of the members):
  compiling costs about 10 CPU s per process with a warm on-disk cache and saves about 0.07 CPU s
  per chip-member (bf16, small preset), so it pays from about 150 chip-members per process with a
  warm cache; the threshold leaves room for the first, cold compilation. GPUs: only when asked
  (`--compile on`; not measured on this project's machines).
- **Memory**: ``--memory-mb`` bounds the data (blocks, calls under way); each process adds a fixed
  overhead (MAIN_OVERHEAD_MIB, WORKER_OVERHEAD_MIB: libraries, weights, one call's activations;
  measured with the small preset). Workers are capped so that the budget and the overheads fit in
  the memory the system has available.
- **Rows per denoiser call**: 4 chip-members on CPU (1, 4 and 8 cost the same per chip; fewer
  hold less memory and let members spread over processes), 64 on GPU. Members are chunked too:
  16 members of one chip run as 4 calls of 4, on different processes when there are several.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ...errors import UsageError

COMPILE_MODES = ("auto", "on", "off")
ROWS_PER_CALL = {"cpu": 4, "cuda": 64}  # chip-members per denoiser call
POOL_MIN_UNITS = 2  # model calls below which a forecast runs in this process, without timing a call
# Estimated model time (one process) from which worker processes pay off: half of it is saved on two cores,
# minus the workers' start. Measured on a 2-core AVX2 host (no AVX-512, fp32: 6.4 s per call of 4
# chip-members), one real chip, whole CLI: 16 members (4 calls) 38.0 and 38.8 s with two workers vs 46.9 s
# in one process; 8 members (2 calls) 29.4 vs 28.4 s: starting the workers cost about 7.5 s there (2-4 s
# on the AVX512-BF16 host, where one chip's 16 members are about 5 s of calls and stay in one process).
POOL_MIN_SECONDS = 20.0
COMPILE_MIN_CHIP_MEMBERS = 400  # per model process, for --compile auto on CPUs
# Measured on a full 5490^2 px tile of real chips (benchmarks/forecast_speed.py, --memory-mb 1024, compiled
# workers): the main process peaked at 1999 MiB (727 MiB before the first block: torch, xarray, GDAL, the weights,
# a timed call; the rest blocks in flight and allocator slack), each worker at 728 MiB.
MAIN_OVERHEAD_MIB = 1000  # this process besides --memory-mb
WORKER_OVERHEAD_MIB = 750  # each worker: torch, weights, compiled kernels, one call's activations and its data in transit
PROCESS_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}  # set before torch loads, unless the user set it
ENV_CACHE = "VEGEDIFF_CACHE_DIR"


def configure_process() -> None:
    """Environment every process that may run the model needs before torch loads (user values win)."""
    for key, value in PROCESS_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def cache_dir() -> Path:
    """$VEGEDIFF_CACHE_DIR, else $XDG_CACHE_HOME/vegediff, else ~/.cache/vegediff."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vegediff"


def use_compile_cache() -> Path:
    """Point TorchInductor's kernel cache at <cache_dir>/inductor (kept across runs), unless the user chose one."""
    folder = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor")))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def available_mib() -> float | None:
    """Memory the system can give without swapping (Linux MemAvailable), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


@dataclass(frozen=True)
class Runtime:
    """The choice for one run; recorded in forecast.nc's attributes and the --json summary."""

    workers: int  # model processes besides this one (0: the model runs in this process)
    threads: int  # torch intra-op threads of each process that runs the model
    compiled: bool  # denoiser compiled by TorchInductor with frozen weights (model/compiled.py)
    rows_per_call: int  # chip-members per denoiser call
    cores: int  # usable cores seen
    reason: str  # why, in a few words

    def as_dict(self) -> dict:
        return {"workers": self.workers, "threads_per_process": self.threads, "compiled": self.compiled,
                "rows_per_call": self.rows_per_call, "cores": self.cores, "reason": self.reason}

    def attrs(self) -> dict:
        return {"runtime_workers": self.workers, "runtime_threads_per_process": self.threads,
                "runtime_compiled": int(self.compiled), "runtime_rows_per_call": self.rows_per_call,
                "runtime_cores": self.cores}


def check_runtime_options(*, workers: int | None, threads: int | None, compile: str) -> None:
    if workers is not None and workers < 0:
        raise UsageError(f"`workers` {workers} must be 0 (this process) or more")
    if threads is not None and threads < 1:
        raise UsageError(f"`threads` {threads} must be at least 1")
    if compile not in COMPILE_MODES:
        raise UsageError(f"`compile` '{compile}' is not one of {', '.join(COMPILE_MODES)}")


def needs_probe(*, units: int, device_type: str, workers: int | None) -> bool:
    """Whether choose_runtime needs the time of one model call to decide on worker processes."""
    return workers is None and device_type == "cpu" and usable_cores() > 1 and units >= POOL_MIN_UNITS


def choose_runtime(
    *,
    units: int,
    chip_members: int,
    device_type: str,
    workers: int | None = None,
    threads: int | None = None,
    compile: str = "auto",
    rows_per_call: int | None = None,
    seconds_per_call: float | None = None,
    memory_mb: int = 1024,
    denoisers: int = 1,
) -> Runtime:
    """Processes, threads and compilation for a forecast of `units` model calls over `chip_members` in all.

    `workers`, `threads`, `compile` are the user's choices (None / "auto": decide here);
    `seconds_per_call` is the measured time of one call in this process (see needs_probe); `denoisers`:
    how many of the model's denoisers draw members (each is compiled apart and draws its share of them).
    """
    check_runtime_options(workers=workers, threads=threads, compile=compile)
    cores = usable_cores()
    rows = rows_per_call or ROWS_PER_CALL.get(device_type, ROWS_PER_CALL["cpu"])
    reasons = []
    if workers is None:
        if device_type != "cpu":
            workers, why = 0, "one GPU per process"
        elif cores < 2:
            workers, why = 0, "one usable core"
        elif units < POOL_MIN_UNITS:
            workers, why = 0, f"{units} model call(s): not worth starting processes"
        elif seconds_per_call is not None and seconds_per_call * units < POOL_MIN_SECONDS:
            workers, why = 0, (f"{units} model calls x {seconds_per_call:.2f} s: not worth starting processes")
        else:
            timed = f" x {seconds_per_call:.2f} s" if seconds_per_call is not None else ""
            workers, why = min(cores, units), f"one process per core ({cores}), {units} model calls{timed}"
            free = available_mib()
            if free is not None:
                fitting = int((free - memory_mb - MAIN_OVERHEAD_MIB) // WORKER_OVERHEAD_MIB)
                if fitting < workers:
                    workers = fitting if fitting >= 2 else 0
                    why += f", {workers} for the {free:.0f} MiB of memory available"
        reasons.append(why)
    else:
        reasons.append(f"--workers {workers}")
    threads = threads or 1
    processes = max(1, workers)
    if compile == "auto":
        per_process = chip_members / processes / denoisers
        compiled = device_type == "cpu" and per_process >= COMPILE_MIN_CHIP_MEMBERS
        reasons.append(f"{'compiled' if compiled else 'eager'}: {per_process:.0f} chip-members per process"
                       + (" and denoiser" if denoisers > 1 else "")
                       + ("" if device_type == "cpu" else " (GPU: --compile on to compile)"))
    else:
        compiled = compile == "on"
        reasons.append(f"--compile {compile}")
    return Runtime(workers, threads, compiled, rows, cores, "; ".join(reasons))
