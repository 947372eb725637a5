"""The denoiser compiled for sampling: TorchInductor with frozen weights, for large areas on CPUs and GPUs.

Sampling calls the denoiser `steps x passes` times per chip with the same weights, so the weights
can be *frozen* into the compiled graph: Inductor folds the bf16 casts of autocast into bf16 weight
constants (the "bf16 weights" of the issue's measurements) and, on CPUs, pre-packs the linear
layers for oneDNN. On this project's 2-core AVX512-BF16 CPU that cuts the denoiser's time per chip
by about a quarter (0.28 -> 0.21 CPU s, small preset, bf16); compiling costs about 10 CPU s per
process when Inductor's kernels are already in its on-disk cache, a minute or more the first time
(benchmarks/forecast_speed.py measures both, and pipeline/forecast/runtime.py decides when it pays).

The wrapper is generic over the VegeNet config: it compiles whichever entry points sample() calls
(`forward_future` for causal-context models, the full `forward` otherwise) and leaves the
once-per-chip context pass eager. Shapes are static (`dynamic=False`): callers keep the rows per
call fixed (pipeline/forecast/chips.py pads the last batch) so one graph serves a whole run.

If compilation fails (no C++ compiler, an unsupported platform), the wrapper logs one warning
and samples eagerly from then on: the forecast is the same up to rounding, only slower.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from .vegenet import VegeNet

log = logging.getLogger("vegediff.model")

# Inductor settings for these graphs: constants folded (freezing), oneDNN weight packing, no pool of
# compile subprocesses (forecast workers are already one process per core; a pool would oversubscribe).
INDUCTOR_OPTIONS = {"freezing": True, "cpp.weight_prepack": True, "compile_threads": 1}


class CompiledVegeNet:
    """Stands in for a VegeNet in VegeDiff.sample(): compiled `forward_future` / `__call__`, eager `encode_context`."""

    def __init__(self, net: VegeNet, *, precision: str, device: torch.device) -> None:
        self.net = net
        self.cfg = net.cfg
        self.precision = precision
        self.device = device
        self.failed: str | None = None  # why compilation failed; then everything runs eagerly
        self._future = self._compile(self._eager_future)
        self._full = self._compile(self._eager_full)

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def _compile(self, fn: Callable) -> Callable:
        return torch.compile(fn, dynamic=False, options=dict(INDUCTOR_OPTIONS))

    # The compiled bodies: autocast inside, so the bf16 casts of the frozen weights fold into constants.
    def _eager_future(self, x, timesteps, *, meteo, keep_cond, cache, dates=None):
        with self._autocast():
            return self.net.forward_future(x, timesteps, meteo=meteo, keep_cond=keep_cond, cache=cache, dates=dates)

    def _eager_full(self, z, timesteps, *, meteo, static, keep_cond, dates=None):
        with self._autocast():
            return self.net(z, timesteps, meteo=meteo, static=static, keep_cond=keep_cond, dates=dates)

    def _run(self, compiled: Callable, eager: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.failed is None:
            try:
                return compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, the result is the same
                self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                log.warning("compiling the denoiser failed (%s); sampling without compilation", self.failed)
        return eager(*args, **kwargs)

    def forward_future(self, x, timesteps, *, meteo, keep_cond, cache, dates=None):
        """VegeNet.forward_future, compiled."""
        return self._run(self._future, self._eager_future, x, timesteps, meteo=meteo, keep_cond=keep_cond, cache=cache,
                         dates=dates)

    def __call__(self, z, timesteps, *, meteo, static, keep_cond, dates=None):
        """VegeNet.forward, compiled (models without a causal context)."""
        return self._run(self._full, self._eager_full, z, timesteps, meteo=meteo, static=static, keep_cond=keep_cond,
                         dates=dates)

    def meteo_features(self, meteo):
        """VegeNet.meteo_features (elementwise, eager)."""
        return self.net.meteo_features(meteo)

    def encode_context(self, context, *, meteo, static, keep_cond, dates=None):
        """Once per chip: not worth a graph of its own."""
        return self.net.encode_context(context, meteo=meteo, static=static, keep_cond=keep_cond, dates=dates)


def compile_for_sampling(model, *, precision: str, device: torch.device) -> list[CompiledVegeNet]:
    """Make `model.sample()` use compiled denoisers (each compiled lazily, on its first call); returns the wrappers."""
    wrappers = [CompiledVegeNet(net, precision=precision, device=device) for net in model.denoisers()]
    model.sampling_nets = wrappers
    return wrappers
