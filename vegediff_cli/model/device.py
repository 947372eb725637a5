"""Device choice: the GPU when present, the CPU otherwise; bf16 autocast only on GPUs."""

from __future__ import annotations

import contextlib

import torch

from ..errors import UsageError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else cpu; 'cpu', 'cuda', 'cuda:1' as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device '{name}' is not a device name", fix="use auto, cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is visible", fix="use --device cpu or auto")
    return device


def autocast(device: torch.device):
    """bf16 autocast on CUDA (fast and safe for transformers); plain fp32 on CPU, where bf16 is slower."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
