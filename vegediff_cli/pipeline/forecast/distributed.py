"""Forecast blocks on a Dask distributed cluster: one model per worker process, results streamed to the client.

Design (docs/forecast.md, "Many tiles, many GPUs"):

- the client plans every job (dates, meteorology, chips) and scatters each plan once;
- a task computes one block (blocks.compute_block) and returns its final rows plus the
  carry for the next band of its stripe; the client writes the rows and submits that next band
  with the carry, so the stripes of every job run in parallel and each stripe runs top to bottom;
- each worker process loads the weights once (module-level cache keyed by weights path and
  device) and opens each cube once; cube and weights paths must be readable on the workers;
- one worker per GPU: ``dask-cuda``'s ``LocalCUDACluster`` (used by ``--scheduler local`` when
  installed) or ``CUDA_VISIBLE_DEVICES=i dask worker ADDRESS --nthreads 1`` per GPU.

Workers return arrays to the client, which alone writes the output file: no shared file system
is needed for outputs, and the file is complete or absent exactly as in a single-process run.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from ...errors import RemoteError, UsageError
from .blocks import BlockResult, compute_block
from .plan import ForecastPlan

log = logging.getLogger("vegediff.forecast")
_MODELS: dict[tuple[str, str, bool, str], Any] = {}  # (weights, device, compiled, precision) -> model, per worker
_CUBES: dict[str, Any] = {}  # cube path -> opened cube, per worker process


def _worker_model(weights: str, device_name: str, compiled: bool, precision: str):
    import torch

    from ...model.device import pick_device, resolve_precision
    from .model import load_model

    key = (weights, device_name, compiled, precision)
    if key not in _MODELS:
        threads = os.environ.get("VEGEDIFF_WORKER_THREADS")
        if threads:
            torch.set_num_threads(int(threads))
        device = pick_device(device_name)
        model = load_model(weights, device)
        if compiled:
            from ...model.compiled import compile_for_sampling
            from .runtime import use_compile_cache

            use_compile_cache()
            compile_for_sampling(model, precision=resolve_precision(precision, device), device=device)
        _MODELS[key] = (model, device)
    return _MODELS[key]


def _worker_cube(path: str):
    from ...cube.netcdf_stream import small_chunk_cache
    from ...cube.readers import open_cube

    if path not in _CUBES:
        with small_chunk_cache():
            _CUBES[path] = open_cube(path)
    return _CUBES[path]


def block_task(weights: str, device_name: str, cube_path: str, plan: ForecastPlan, stripe: int, band: int, carry,
               compiled: bool = False):
    """Runs on a worker: one block of one job."""
    model, device = _worker_model(weights, device_name, compiled, plan.settings.precision)
    block = plan.tiles.blocks(stripe)[band]
    return compute_block(model, _worker_cube(cube_path), plan, block, carry, device=device, compiled=compiled)


@contextlib.contextmanager
def cluster_client(scheduler: str, *, workers: int | None = None) -> Iterator[Any]:
    """A Client for `scheduler`: an address (tcp://host:port), or "local" for a cluster on this machine.

    "local" starts one worker per GPU with dask-cuda when it is installed and a GPU is visible,
    otherwise `workers` single-threaded worker processes (default: one per usable core, the
    policy of runtime.py) on loopback.
    """
    from distributed import Client, LocalCluster

    if scheduler != "local":
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise RemoteError(f"cannot reach the Dask scheduler at {scheduler} ({exc})",
                              fix="start it with `dask scheduler` and pass its tcp://HOST:PORT address") from exc
        with client:
            yield client
        return
    if workers is not None and workers < 1:
        raise UsageError(f"`workers` {workers} must be at least 1")
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(_local_cluster(LocalCluster, workers))
        client = stack.enter_context(Client(cluster))
        yield client


def _local_cluster(local_cluster, workers: int | None):
    import torch

    if torch.cuda.is_available():
        try:
            from dask_cuda import LocalCUDACluster  # one worker per GPU, CUDA_VISIBLE_DEVICES set for each

            return LocalCUDACluster(threads_per_worker=1, host="127.0.0.1", n_workers=workers)
        except ImportError:
            log.warning("dask-cuda is not installed: starting one worker per GPU is up to you (docs/forecast.md)")
    from .runtime import PROCESS_ENVIRONMENT, usable_cores

    count = workers or usable_cores()
    # one torch thread per worker process, passive OpenMP waiting; set by the nanny before torch loads
    env = {**PROCESS_ENVIRONMENT, "OMP_NUM_THREADS": "1", "VEGEDIFF_WORKER_THREADS": "1"}
    return local_cluster(n_workers=count, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None, env=env)


def run_blocks(client, tasks: list[tuple[str, ForecastPlan]], *, weights: str, device: str,
               compiled: bool = False) -> Iterator[tuple[int, BlockResult]]:
    """Yield (job index, block result) as blocks finish; every stripe's bands run in order."""
    from distributed import as_completed

    plans = [client.scatter(plan, broadcast=True) for _, plan in tasks]
    pending = as_completed()
    where: dict[Any, tuple[int, int, int]] = {}

    def submit(job: int, stripe: int, band: int, carry) -> None:
        cube_path = tasks[job][0]
        future = client.submit(block_task, weights, device, cube_path, plans[job], stripe, band, carry, compiled,
                               pure=False)
        where[future] = (job, stripe, band)
        pending.add(future)

    for job, (_, plan) in enumerate(tasks):
        for stripe in range(len(plan.tiles.stripes)):
            submit(job, stripe, 0, None)
    try:
        for future in pending:
            job, stripe, band = where.pop(future)
            result, carry = future.result()
            if band + 1 < len(tasks[job][1].tiles.bands):
                submit(job, stripe, band + 1, carry)
            yield job, result
    finally:
        for future in list(where):
            future.cancel()
