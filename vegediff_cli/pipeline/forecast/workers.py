"""A pool of single-threaded model processes for the local forecast (pipeline/forecast/runtime.py says why).

The parent plans, reads the cube, blends and writes; the workers only run model calls: a call's
inputs (a few chips' context, meteorology and static layers, ~3 MB per chip) go in, its member
forecasts (~5 MB per chip-member) come back. Every worker loads the weights once, compiles the
denoiser when asked (model/compiled.py, kernels cached on disk), and runs one torch thread.

Calls are cut by the parent, whatever the number of workers, and their results are blended in
call order, so a forecast is bit for bit the same with 0, 1 or N workers (each with one thread).

Processes are *spawned* (not forked: a fork of a process whose OpenMP runtime is already running
can hang) with the environment of runtime.configure_process set before torch loads. A worker
exits when its parent goes away, and a worker that dies (e.g. killed for memory) stops the run
with a message instead of a hang.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import VegediffError
from .chips import ChipBatch, ChipSettings
from .runtime import Runtime, choose_runtime, configure_process, needs_probe, use_compile_cache

if TYPE_CHECKING:  # the workers import this module: keep its imports to what a model process needs
    from .blocks import CallLayout

log = logging.getLogger("vegediff.forecast")
_POLL_S = 1.0  # how often a waiting parent checks that its workers are alive, and a worker its parent


def _serve(tasks, results, parent: int, weights: str, device: str, precision: str, threads: int,
           compiled: bool) -> None:
    """Worker process: load the model, then answer calls until told to stop or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent cleans up
    configure_process()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
        from ...model.device import pick_device
        from .chips import forecast_chips
        from .model import load_model

        torch_device = pick_device(device)
        model = load_model(weights, torch_device)
        if compiled:
            from ...model.compiled import compile_for_sampling
            from .runtime import use_compile_cache

            use_compile_cache()
            compile_for_sampling(model, precision=precision, device=torch_device)
    except BaseException:  # noqa: BLE001 - reported to the parent, which stops the run
        results.put((-1, None, traceback.format_exc(limit=3)))
        return
    while True:
        try:
            task = tasks.get(timeout=_POLL_S)
        except queue.Empty:
            if os.getppid() != parent:  # orphaned: the parent died without stopping us
                return
            continue
        if task is None:
            return
        ticket, batch, conditioned, settings, member_range = task
        try:
            out = forecast_chips(model, batch, conditioned=conditioned, settings=settings, device=torch_device,
                                 member_range=member_range)
            results.put((ticket, out, None))
        except BaseException:  # noqa: BLE001 - reported to the parent
            results.put((ticket, None, traceback.format_exc(limit=5)))


class ChipPool:
    """`workers` model processes; submit() calls in order, result() them in any order (a context manager)."""

    parallel = True

    def __init__(self, *, weights: Path, device: str, precision: str, workers: int, threads: int = 1,
                 compiled: bool = False) -> None:
        self.workers = workers
        self.capacity = workers + 1  # calls in flight: every worker busy and one queued (plan counts them)
        self._args = (str(weights), device, precision, threads, compiled)
        self._context = mp.get_context("spawn")
        self._tasks = self._context.Queue()
        self._results = self._context.Queue()
        self._processes: list[Any] = []
        self._done: dict[int, np.ndarray] = {}
        self._next = 0
        self._pending: set[int] = set()

    def __enter__(self) -> ChipPool:
        configure_process()  # spawned children inherit this environment before they import torch
        for _ in range(self.workers):
            process = self._context.Process(target=_serve, args=(self._tasks, self._results, os.getpid(), *self._args),
                                            daemon=True)
            process.start()
            self._processes.append(process)
        return self

    def __exit__(self, *exc) -> None:
        for _ in self._processes:
            with contextlib.suppress(Exception):
                self._tasks.put(None)
        for process in self._processes:
            process.join(timeout=5 if exc[0] is None else 0.5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        for q in (self._tasks, self._results):
            q.cancel_join_thread()  # never block the exit on items nobody will read
            q.close()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def peak_rss_mib(self) -> list[float]:
        """Each worker's peak resident memory so far (Linux VmHWM; empty where unknown)."""
        return [mib for process in self._processes if (mib := peak_rss_mib(process.pid)) is not None]

    def submit(self, batch: ChipBatch, *, conditioned: bool, settings: ChipSettings,
               member_range: tuple[int, int]) -> int:
        ticket = self._next
        self._next += 1
        self._tasks.put((ticket, batch, conditioned, settings, member_range))
        self._pending.add(ticket)
        return ticket

    def result(self, ticket: int) -> np.ndarray:
        """The member forecasts of call `ticket` (waits for it; raises WorkerError if a worker failed)."""
        while ticket not in self._done:
            try:
                got, out, error = self._results.get(timeout=_POLL_S)
            except queue.Empty:
                self._check_alive()
                continue
            if error is not None:
                raise VegediffError(f"a forecast worker failed: {error.strip().splitlines()[-1]}",
                                  fix="re-run with `workers` 0 `debug` to see the full error in this process")
            self._done[got] = out
        self._pending.discard(ticket)
        return self._done.pop(ticket)

    def _check_alive(self) -> None:
        for process in self._processes:
            if not process.is_alive():
                code = process.exitcode
                why = "killed (out of memory?)" if code is not None and code < 0 else f"exit code {code}"
                raise VegediffError(f"a forecast worker process stopped: {why}",
                                  fix="lower `memory_mb` or `workers`, or run with `workers` 0")


class InProcess:
    """The same interface, computed here and only when the result is asked for (no read-ahead, no copies)."""

    parallel = False
    capacity = 1

    def peak_rss_mib(self) -> list[float]:
        return []

    def __init__(self, model, device) -> None:
        self.model, self.device = model, device
        self._calls: dict[int, Callable[[], np.ndarray]] = {}
        self._next = 0

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *exc) -> None:
        self._calls.clear()

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    def submit(self, batch: ChipBatch, *, conditioned: bool, settings: ChipSettings,
               member_range: tuple[int, int]) -> int:
        from .chips import forecast_chips

        ticket = self._next
        self._next += 1
        self._calls[ticket] = lambda: forecast_chips(self.model, batch, conditioned=conditioned, settings=settings,
                                                     device=self.device, member_range=member_range)
        return ticket

    def result(self, ticket: int) -> np.ndarray:
        return self._calls.pop(ticket)()


def probe_call(model, *, layout: CallLayout, settings: ChipSettings, conditioned: bool, device) -> float:
    """Seconds of one model call of this layout, on synthetic inputs (values do not change the time)."""
    from .chips import forecast_chips

    chips, size = layout.chips_per_call, 128
    net = model.cfg.vegenet
    frames = net.context_frames
    dates = np.zeros((chips, frames + net.horizon, net.date_channels), "float32") if net.date_channels else None
    batch = ChipBatch(np.full((chips, frames, 4, size, size), 0.1, "float32"), np.ones((chips, frames, size, size), bool),
                      np.zeros((chips, frames + net.horizon, net.meteo_channels), "float32"),
                      np.zeros((chips, net.static_channels, size, size), "float32"), list(range(chips)), dates=dates)
    began = time.perf_counter()
    forecast_chips(model, batch, conditioned=conditioned, settings=settings, device=device,
                   member_range=(0, min(settings.members, layout.member_chunk)))
    return time.perf_counter() - began


@contextlib.contextmanager
def local_runner(*, weights: Path, device, precision: str, units: int, chip_members: int, rows_per_call: int,
                 probe: tuple[CallLayout, ChipSettings, bool], workers: int | None, threads: int | None,
                 compile: str, memory_mb: int = 1024) -> Iterator[tuple[Runtime, ChipPool | InProcess]]:
    """Decide the runtime (timing one call here when that decides it) and open its runner.

    `probe` is (layout, chip settings, conditioned) of the first job. This process's torch thread
    count is set for the run and restored afterwards.
    """
    import torch

    from .model import model_config

    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(threads or 1)
        model, seconds = None, None
        if needs_probe(units=units, device_type=device.type, workers=workers):
            from .model import load_model

            model = load_model(weights, device)
            layout, settings, conditioned = probe
            seconds = probe_call(model, layout=layout, settings=settings, conditioned=conditioned, device=device)
        runtime = choose_runtime(units=units, chip_members=chip_members, device_type=device.type, workers=workers,
                                 threads=threads, compile=compile, rows_per_call=rows_per_call,
                                 seconds_per_call=seconds, memory_mb=memory_mb,
                                 denoisers=min(model_config(weights).denoisers, probe[1].members))
        torch.set_num_threads(runtime.threads)
        if runtime.workers > 0:
            del model
            with ChipPool(weights=weights, device=str(device), precision=precision, workers=runtime.workers,
                          threads=runtime.threads, compiled=runtime.compiled) as pool:
                yield runtime, pool
            return
        if model is None:
            from .model import load_model

            model = load_model(weights, device)
        if runtime.compiled:
            from ...model.compiled import compile_for_sampling

            use_compile_cache()
            compile_for_sampling(model, precision=precision, device=device)
        with InProcess(model, device) as runner:
            yield runtime, runner
    finally:
        torch.set_num_threads(saved)


def peak_rss_mib(pid: int | str = "self") -> float | None:
    """Peak resident memory of a process in MiB (Linux /proc VmHWM), None where unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None
