"""The processes of one training run: one plain process, or N started by `torchrun`.

`torchrun --nproc-per-node N -m vegediff_cli train ...` starts N copies of the same command and
tells each its place through the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).
:func:`processes` reads it: without it the run is one process on the chosen device; with it, the
processes join one group (NCCL between GPUs, one GPU per process; gloo between CPU processes)
and the training loop wraps its model in DistributedDataParallel. Rank 0 alone writes files,
logs at INFO and draws progress bars.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from ..errors import UsageError
from ..model.device import pick_device

# The data index and the latent cache are built before training, each process its share, and the
# others wait at a barrier: allow them hours on data sets of tens of thousands of files.
GROUP_TIMEOUT = timedelta(hours=3)


@dataclass(frozen=True)
class Runtime:
    """Where this process sits in the run."""

    rank: int = 0  # 0 .. world - 1; rank 0 writes files and logs
    world: int = 1  # number of processes
    local_rank: int = 0  # index on this machine (the GPU it drives)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched_world() -> int:
    """Number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True in a plain run and in torchrun's rank 0 (for printing results once)."""
    return int(os.environ.get("RANK", "0")) == 0


def _device_of(name: str | torch.device, local_rank: int, world: int) -> torch.device:
    device = name if isinstance(name, torch.device) else pick_device(str(name))
    if world > 1 and device.type == "cuda":  # one GPU per process, whatever index was asked for
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise UsageError(f"torchrun started {local_rank + 1}+ processes on this machine but it has {count} GPU(s)",
                             fix="pass --nproc-per-node at most the number of GPUs, or `device` cpu")
        device = torch.device("cuda", local_rank)
    return device


@contextlib.contextmanager
def processes(device: str | torch.device = "auto") -> Iterator[Runtime]:
    """The run's Runtime; joins (and afterwards leaves) the process group when torchrun started several."""
    world = launched_world()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    resolved = _device_of(device, local_rank, world)
    if world == 1:
        yield Runtime(device=resolved)
        return
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    owner = not dist.is_initialized()  # a second stage in the same command reuses the group
    if owner:
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo", timeout=GROUP_TIMEOUT)
    if rank > 0:  # one log and one progress bar per run, from rank 0
        logging.getLogger("vegediff").setLevel(logging.WARNING)
    try:
        yield Runtime(rank=rank, world=world, local_rank=local_rank, device=resolved)
    finally:
        if owner and dist.is_initialized():
            dist.destroy_process_group()


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


def all_sum(runtime: Runtime, values: list[float]) -> list[float]:
    """Element-wise sum over processes (float64; one collective)."""
    if not runtime.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=runtime.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather(runtime: Runtime, value: Any) -> list[Any]:
    """Every process's `value` (plain Python data), in rank order."""
    if not runtime.distributed:
        return [value]
    out: list[Any] = [None] * runtime.world
    dist.all_gather_object(out, value)
    return out


def shard(items: list, runtime: Runtime) -> list:
    """This process's share of `items`: every world-th one, starting at its rank."""
    return items[runtime.rank :: runtime.world]
