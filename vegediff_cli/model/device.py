"""Device choice (the GPU when present, the CPU otherwise) and inference precision.

Training autocasts to bf16 on GPUs only. Inference takes a precision: "auto" is bf16 on GPUs
and on CPUs with native bf16 instructions (AVX512-BF16 or AMX: there bf16 convolutions and
matmuls run about twice as fast as fp32), fp32 elsewhere; "fp32" and "bf16" force one.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from ..errors import UsageError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else cpu; 'cpu', 'cuda', 'cuda:1' as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"`device` '{name}' is not a device name", fix="use auto, cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("`device` cuda was asked for but no CUDA GPU is visible", fix="use `device` cpu or auto")
    return device


PRECISIONS = ("auto", "fp32", "bf16")
_BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU advertises bf16 arithmetic (Linux /proc/cpuinfo flags); False if unknown."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool(_BF16_CPU_FLAGS & set(flags))


def check_precision(precision: str) -> None:
    """UsageError unless `precision` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise UsageError(f"`precision` '{precision}' is not one of {', '.join(PRECISIONS)}")


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' on CUDA and on CPUs with native bf16, else 'fp32'; 'fp32'/'bf16' as given (checked)."""
    check_precision(precision)
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "fp32"


def inference_autocast(device: torch.device, precision: str):
    """Autocast context for sampling and decoding at a resolved precision ('fp32' or 'bf16')."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def autocast(device: torch.device, precision: str = "auto"):
    """Training autocast at a precision: "auto" is bf16 on CUDA and on CPUs with native bf16
    (matmuls 5 x faster there; weights, optimiser and loss stay fp32), fp32 elsewhere."""
    return inference_autocast(device, resolve_precision(precision, device))
