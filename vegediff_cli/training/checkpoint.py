"""Resumable training state: model, EMA, optimiser, step and RNG states in one atomic file.

A checkpoint is read with ``torch.load(weights_only=True)``: PyTorch's restricted unpickler
accepts tensors, numbers, strings, lists, tuples and dicts only, so a crafted file in the run
folder (a pickle whose ``__reduce__`` calls ``os.system``) is refused instead of executed.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_file
from ..errors import CorruptInputError


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    with atomic_file(Path(path)) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    """The state saved at `path` (None when there is none); never runs code stored in the file."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError,
            AttributeError, ImportError, KeyError, IndexError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CorruptInputError(
            f"{path} is not a vegediff training checkpoint that can be read safely ({reason})",
            fix="delete it (training then starts afresh) or pass another `run_dir`; "
                "checkpoints holding code are never loaded") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CorruptInputError(f"{path} is not a vegediff training checkpoint (no step counter)",
                                fix="delete it (training then starts afresh) or pass another `run_dir`")
    return state


def restore(target: Any, state: dict[str, Any], key: str, path: str | os.PathLike) -> None:
    """``target.load_state_dict(state[key])`` for a module, optimiser or EMA; a checkpoint of another
    model (missing key, other shapes) is a CorruptInputError naming the file, not a crash."""
    try:
        target.load_state_dict(state[key])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CorruptInputError(f"{path} does not fit this model ({key}: {reason})",
                                fix="delete it (training then starts afresh) or pass another `run_dir`") from None


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}


def restore_rng(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])


class EMA:
    """Exponential moving average of parameters, used for sampling (standard for diffusion)."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def current_decay(self) -> float:
        """Warm-up (1 + n) / (10 + n), capped at `decay`: a short run's average is not dominated by
        the initial weights, whose zero-initialised output layers predict eps = 0."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        decay = self.current_decay()
        self.updates += 1
        for key, value in module.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[key].mul_(decay).add_(value.detach(), alpha=1 - decay)
            else:
                self.shadow[key].copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        # on the module's device and dtype (a checkpoint loads on the CPU; a run resumed on a GPU trains there)
        self.shadow = {k: v.to(device=self.shadow[k].device, dtype=self.shadow[k].dtype, copy=True) if k in self.shadow
                       else v.clone() for k, v in state.items()}
