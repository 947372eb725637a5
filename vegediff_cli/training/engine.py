"""The optimisation loop both stages share: one process or many, resumable, measured.

- Many processes (torchrun): the trained module is wrapped in DistributedDataParallel, each
  process computes its slice of the global batch (order.StepBatches) and gradients are averaged,
  so N processes take the same steps as one process with the same global batch.
- Gradient accumulation: a process's slice runs as micro-batches whose mean losses are scaled by
  1 / micro-batches; gradients are synchronised once per step.
- Precision: the model's autocast (bf16 on GPUs and CPUs with native bf16; fp32 weights,
  optimiser and loss), model/device.py.
- Checkpoints (rank 0, atomic): module, optimiser, EMA, step, recent losses, the data order's
  position and the torch RNG state, every `checkpoint_every` steps, at kept steps, at the end and
  when a budget or a signal stops the run. Only tensors, numbers, strings, lists and dicts are
  stored: a checkpoint loads with torch.load(weights_only=True) (checkpoint.py), and a foreign or
  crafted file in the run folder is refused (exit 4), never executed. A rerun with the same run
  folder resumes and ends where an uninterrupted run ends.
- Budgets: `budget_steps` (steps in this invocation) and `budget_seconds` stop the run cleanly
  with a checkpoint; SIGTERM / SIGINT (a scheduler's pre-emption, Ctrl-C) do the same, then exit 130
  (a second signal stops at once).
- Log: `<run_dir>/<name>-log.jsonl`, one line every `log_every` steps (loss, learning rate,
  windows per second of wall time, CPU seconds of all processes, epochs, elapsed time), and a
  progress bar on rank 0.
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import RunInterrupted
from ..model.device import autocast
from ..progress import ProgressFactory, no_progress
from .checkpoint import EMA, load_checkpoint, restore, save_checkpoint
from .parallel import Runtime, all_sum

log = logging.getLogger("vegediff.train")

KEPT_LOSSES = 1000  # losses a checkpoint carries (final_loss is the mean of the last 100)


@dataclass(frozen=True)
class LoopSettings:
    """How one stage runs (the stages' settings dataclasses fill it in)."""

    steps: int  # optimiser steps of the whole schedule
    batch: int  # global batch: items per optimiser step, over all processes
    micro_batch: int = 0  # items per forward/backward on a process (0: its whole share of the batch)
    precision: str = "auto"  # autocast: auto, fp32, bf16
    checkpoint_every: int = 200  # steps between resumable checkpoints
    keep_every: int = 0  # also keep a copy every this many steps (0: none), for checkpoint selection
    budget_steps: int = 0  # stop (resumable) after this many steps in this invocation (0: no limit)
    budget_seconds: float = 0.0  # stop (resumable) after this much wall time in this invocation (0: none)
    log_every: int = 10  # steps between lines of the JSONL log
    clip: float = 1.0  # gradient norm clipping


@dataclass
class LoopResult:
    completed: bool  # the schedule reached `steps`
    step: int  # steps done so far (all invocations)
    losses: list[float] = field(default_factory=list)  # per step, the recent ones
    windows_per_s: float = float("nan")  # global items per second of wall time in this invocation


class Trainer:
    """Optimiser, EMA, DDP wrapper and checkpoints around one trained module."""

    def __init__(self, name: str, module: nn.Module, *, state_key: str, runtime: Runtime, run_dir: Path,
                 settings: LoopSettings, lr: Callable[[int], float], weight_decay: float,
                 ema_decay: float | None = None, progress: ProgressFactory = no_progress) -> None:
        self.name, self.state_key, self.runtime, self.run_dir = name, state_key, runtime, run_dir
        self.settings, self.lr, self.progress = settings, lr, progress
        self.module = module.to(runtime.device).train()
        self.model: nn.Module = self.module
        if runtime.distributed:
            ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.module, device_ids=ids, gradient_as_bucket_view=True)
        self.optimiser = torch.optim.AdamW(self.module.parameters(), lr=lr(0), weight_decay=weight_decay)
        self.ema = EMA(self.module, ema_decay) if ema_decay is not None else None
        self.step = 0
        self.losses: list[float] = []
        self.checkpoint = run_dir / f"{name}.ckpt"
        self.log_file = run_dir / f"{name}-log.jsonl"

    # --- checkpoints ---------------------------------------------------------------------------
    def resume(self, position: Callable[[int], dict]) -> int:
        """Load the run folder's checkpoint, if any; returns the step to continue from."""
        state = load_checkpoint(self.checkpoint)
        if state is None:
            return 0
        restore(self.module, state, self.state_key, self.checkpoint)  # another model's checkpoint: exit 4, named
        restore(self.optimiser, state, "optimiser", self.checkpoint)
        if self.ema is not None:
            restore(self.ema, state, "ema", self.checkpoint)
            self.ema.updates = state["step"]
        self.step, self.losses = int(state["step"]), list(state.get("losses", []))
        if "torch" in state.get("rng", {}):
            torch.set_rng_state(state["rng"]["torch"])
        stored = state.get("data")
        if stored is not None and stored != position(self.step):
            log.warning("%s: the data order differs from the checkpoint's (training files or batch changed); "
                        "continuing at step %d in the new order", self.name, self.step)
        log.info("%s: resuming at step %d", self.name, self.step)
        return self.step

    def state(self, position: dict) -> dict:
        state = {self.state_key: self.module.state_dict(), "optimiser": self.optimiser.state_dict(),
                 "step": self.step, "losses": self.losses[-KEPT_LOSSES:], "data": position,
                 "rng": {"torch": torch.get_rng_state()}}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def save(self, position: dict, *, keep: bool = False) -> None:
        if not self.runtime.main:
            return
        state = self.state(position)
        save_checkpoint(self.checkpoint, state)
        if keep:
            save_checkpoint(self.run_dir / f"{self.name}-step{self.step:06d}.ckpt", state)

    # --- the loop ------------------------------------------------------------------------------
    def fit(self, batches: Iterable[dict], loss: Callable[[nn.Module, dict], torch.Tensor], *,
            micro_batches: int, position: Callable[[int], dict]) -> LoopResult:
        """Run steps self.step .. settings.steps-1 over `batches` (micro_batches per step)."""
        s, device = self.settings, self.runtime.device
        first, began = self.step, time.perf_counter()
        stop = _StopFlag()
        interval_losses: list[float] = []
        interval_start, interval_step, interval_cpu = began, first, time.process_time()
        iterator = iter(batches)
        with stop.installed(), self.progress(s.steps, f"train {self.name}") as bar:
            bar.update(first)
            while self.step < s.steps:
                for group in self.optimiser.param_groups:
                    group["lr"] = self.lr(self.step)
                local = 0.0
                for index in range(micro_batches):
                    batch = {k: v.to(device, non_blocking=True) for k, v in next(iterator).items()}
                    sync = self.runtime.distributed and index < micro_batches - 1
                    with self.model.no_sync() if sync else contextlib.nullcontext():  # one all-reduce per step
                        with autocast(device, s.precision):
                            value = loss(self.model, batch)
                        (value / micro_batches).backward()
                    local += float(value.detach())
                if s.clip:
                    torch.nn.utils.clip_grad_norm_(self.module.parameters(), s.clip)
                self.optimiser.step()
                self.optimiser.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.update(self.module)
                self.step += 1
                out_of_budget = bool(s.budget_steps and self.step - first >= s.budget_steps) or bool(
                    s.budget_seconds and time.perf_counter() - began >= s.budget_seconds)
                total, halt = all_sum(self.runtime, [local / micro_batches, float(out_of_budget or stop.raised)])
                self.losses.append(total / self.runtime.world)
                interval_losses.append(self.losses[-1])
                bar.update(1)
                done = self.step >= s.steps
                keep = bool(s.keep_every) and self.step % s.keep_every == 0
                if halt or done or keep or self.step % s.checkpoint_every == 0:
                    self.save(position(self.step), keep=keep)
                    log.info("%s step %d: loss %.4f (mean of last 100)", self.name, self.step,
                             float(np.mean(self.losses[-100:])))
                if halt or done or self.step % s.log_every == 0:
                    now, cpu = time.perf_counter(), time.process_time()
                    cpu_s = all_sum(self.runtime, [cpu - interval_cpu])[0]  # every process's CPU time
                    windows = (self.step - interval_step) * s.batch
                    self._log({"step": self.step, "loss": round(float(np.mean(interval_losses)), 6),
                               "lr": self.lr(self.step - 1), "windows": windows,
                               "windows_per_s": round(windows / max(now - interval_start, 1e-9), 3),
                               "wall_s": round(now - interval_start, 3), "cpu_s": round(cpu_s, 3),
                               "elapsed_s": round(now - began, 2), "processes": self.runtime.world,
                               **position(self.step)})
                    interval_losses, interval_start, interval_step, interval_cpu = [], now, self.step, cpu
                if halt:
                    break
        elapsed = time.perf_counter() - began
        result = LoopResult(completed=self.step >= s.steps, step=self.step, losses=self.losses,
                            windows_per_s=(self.step - first) * s.batch / max(elapsed, 1e-9))
        if stop.raised:
            raise RunInterrupted(f"{self.name} training stopped by a signal at step {self.step}",
                                 fix=f"the checkpoint in {self.run_dir} is saved: rerun the same command to resume")
        if not result.completed:
            log.warning("%s: stopped by the budget at step %d of %d; rerun the same command to resume",
                        self.name, self.step, s.steps)
        return result

    def _log(self, record: dict) -> None:
        if self.runtime.main:
            with self.log_file.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


class _StopFlag:
    """SIGTERM and SIGINT set a flag while the loop runs: it stops at the end of the step, saved.
    A second signal does not wait for the step (a long paper-preset step on a CPU): it interrupts
    at once, and the last periodic checkpoint is where a rerun resumes."""

    def __init__(self) -> None:
        self.raised = False

    def _handle(self, signum, frame) -> None:
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True
        log.warning("stopping at the end of this step (a second signal stops at once)")

    @contextlib.contextmanager
    def installed(self):
        previous = {}
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals to the caller
            pass
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def peak_memory_mib() -> dict[str, float]:
    """Peak resident memory of this process and of its finished children (DataLoader workers), MiB."""
    return {"process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
