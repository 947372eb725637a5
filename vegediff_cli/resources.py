"""Memory a run will need, estimated before anything large is allocated, and refused when it cannot fit.

A weights file's config or a command-line value can ask for any amount of memory: a config that
declares ``hidden = 100000`` allocates terabytes in ``VegeDiff(cfg)``, and ``--members 100000``
asks for member arrays of the same order. Instead of letting the kernel kill the process after
minutes of swapping, every step that builds a model or member arrays first calls one of the
checks below, which estimate the bytes from the config and the settings (nothing is allocated)
and compare them with

- the memory the system can still give (``MemAvailable``, or the cgroup limit when lower), and
- ``--memory-mb`` for the part of a forecast it governs: one streamed block of member
  accumulators (pipeline/forecast/plan.py ``bytes_per_pixel``).

The estimates are upper bounds calibrated on this project's CPU runs (small preset, 128 px
chips): 1 / 16 / 64 members peaked at 0.55 / 0.79 / 1.58 GB in all, 16 MB per extra member;
the formula below gives 24 MB per member-chip.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .config import BANDS, CHIP_SIZE
from .errors import ModelError, UsageError
from .model.presets import ModelConfig

FLOAT_BYTES = 4
DECODE_BATCH = 32  # frames per VAE decoder call (model/vegediff.py decode_frames)
GIB = 2**30
MIB = 2**20


def available_bytes() -> int:
    """Memory the system can still give this process: MemAvailable, capped by a cgroup limit."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    try:  # cgroup v2: a container's limit minus what it already uses
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            limits.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    if not limits:
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return 1 << 62  # unknown: do not refuse
    return min(limits)


def release_freed_memory() -> None:
    """Hand the heap memory that freed arrays leave behind back to the system (glibc's malloc_trim).

    A forecast frees a block's arrays after writing it; glibc keeps much of that memory for reuse,
    so without trimming the main process grew by about 250 MiB more over a full tile than over a
    strip of it. A no-op where the C library has no malloc_trim.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, looked up once (the symbols this process already has); None elsewhere."""
    import ctypes

    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def _size(value: float) -> str:
    return f"{value / GIB:.1f} GiB" if value >= GIB else f"{value / MIB:.0f} MiB"


# --- the model -------------------------------------------------------------------------------------
_POSITIVE_INTS = {
    "vae": ("in_channels", "latent_channels", "base_channels", "blocks_per_level"),
    "vegenet": ("latent_channels", "patch_size", "hidden", "depth", "heads", "context_frames", "horizon",
                "meteo_channels", "static_channels", "static_patch"),
    "diffusion": ("train_steps",),
}


def check_config_values(cfg: ModelConfig, *, source: str) -> None:
    """ModelError for a config no network can be built from (wrong types, zero or negative sizes)."""
    problems = []
    for part, names in _POSITIVE_INTS.items():
        section = getattr(cfg, part)
        for name in names:
            value = getattr(section, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{part}.{name} = {value!r}")
    count = cfg.denoisers
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        problems.append(f"denoisers = {count!r}")
    mults = cfg.vae.channel_mults
    if not mults or not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in mults):
        problems.append(f"vae.channel_mults = {mults!r}")
    ratio = cfg.vegenet.mlp_ratio
    if not isinstance(ratio, int | float) or not math.isfinite(ratio) or ratio <= 0:
        problems.append(f"vegenet.mlp_ratio = {ratio!r}")
    for name in ("band_mean", "band_std", "latent_mean", "latent_std"):
        values = getattr(cfg.vae, name)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            problems.append(f"vae.{name} holds a non-finite value")
    if not problems:
        v = cfg.vegenet
        if v.hidden % v.heads:
            problems.append(f"vegenet.hidden {v.hidden} is not a multiple of vegenet.heads {v.heads}")
        if CHIP_SIZE % (2 ** (len(mults) - 1) * v.patch_size):
            problems.append(f"a {CHIP_SIZE} px chip cannot be cut into patches of {v.patch_size} latent pixels")
    if problems:
        raise ModelError(f"{source} declares an impossible model ({'; '.join(problems[:3])})",
                         fix="use a weights file written by `vegediff train` (e.g. the shipped vegediff-small)")


def parameter_count(cfg: ModelConfig) -> int:
    """Parameters of VegeDiff(cfg), from the config alone (an upper bound; no tensor is allocated)."""
    v, a = cfg.vegenet, cfg.vae
    h = v.hidden
    block = (8 + 2 * v.mlp_ratio + 9) * h * h + 24 * h  # 2 x attention (qkv, proj), MLP, adaLN; biases
    embeds = (v.latent_channels * v.patch_size**2 + v.static_channels * v.static_patch**2 + v.meteo_inputs
              + 256 + 8) * h + 4 * h * h + h * v.latent_channels * v.patch_size**2 * 2
    widths = [a.base_channels * m for m in a.channel_mults]
    # encoder + decoder: per level 2 convs per residual block, a 1x1 skip, a resampling conv (3 x 3 each)
    vae = sum(2 * (9 * w * w * (2 * a.blocks_per_level + 1) + w * w) for w in widths)
    vae += 2 * 9 * widths[0] * (a.in_channels + 2 * a.latent_channels) + 9 * widths[-1] * 3 * a.latent_channels
    return int(1.1 * (cfg.denoisers * (v.depth * block + embeds) + vae))  # 1.1: an upper bound (presets: 1.07 x real)


def check_model_size(cfg: ModelConfig, *, source: str, copies: int = 2) -> int:
    """Refuse weights whose model would not fit in memory (`copies`: weights plus one loading copy);
    returns the estimated bytes of one copy."""
    check_config_values(cfg, source=source)
    needed = parameter_count(cfg) * FLOAT_BYTES
    free = available_bytes()
    if needed * copies > free:
        raise ModelError(
            f"{source} declares a model of about {parameter_count(cfg) / 1e9:.2g} billion parameters, "
            f"{_size(needed * copies)} to load, but only {_size(free)} of memory is available",
            fix="use weights that fit this machine (the shipped vegediff-small needs about 60 MiB), or a larger machine")
    return needed


# --- a forecast --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForecastMemory:
    """Estimated bytes of a forecast run, by part."""

    weights: int  # parameters (fp32) and one loading copy
    sampling: int  # one model call: member latents, denoiser activations, decoded frames, decoder activations
    block: int  # one streamed block of accumulators and inputs, as planned (at most --memory-mb)
    smallest_block: int  # the narrowest block the plan could use: it must fit --memory-mb

    @property
    def total(self) -> int:
        return self.weights + self.sampling + self.block


def forecast_memory(cfg: ModelConfig, *, members: int, chips_per_call: int, width: int, stripe: int,
                    band_rows: int, bytes_per_pixel: float, align: int) -> ForecastMemory:
    """The memory of a forecast with these settings (see the module docstring for the calibration)."""
    v = cfg.vegenet
    frames = v.context_frames + v.horizon
    tokens = (CHIP_SIZE // (2 ** (len(cfg.vae.channel_mults) - 1)) // v.patch_size) ** 2
    per_sample = (3 * v.horizon * len(BANDS) * CHIP_SIZE**2 * FLOAT_BYTES  # decoded members, detail, NDVI
                  + 2 * frames * tokens * v.hidden * FLOAT_BYTES * (v.mlp_ratio + 4))  # CFG doubles the batch
    decoder = DECODE_BATCH * cfg.vae.base_channels * max(cfg.vae.channel_mults) * CHIP_SIZE**2 * FLOAT_BYTES * 3
    rows = band_rows + CHIP_SIZE  # a band's accumulators reach one chip below it (pipeline/forecast/tiling.py)
    return ForecastMemory(weights=2 * parameter_count(cfg) * FLOAT_BYTES,
                          sampling=int(members * chips_per_call * per_sample + decoder),
                          block=int(bytes_per_pixel * rows * min(width, stripe)),
                          smallest_block=int(bytes_per_pixel * rows * min(width, align)))


def check_forecast_memory(estimate: ForecastMemory, *, members: int, memory_mb: int) -> None:
    """UsageError when the smallest block exceeds --memory-mb, or the whole run exceeds the free memory."""
    budget = memory_mb * MIB
    if estimate.smallest_block > budget:
        raise UsageError(
            f"`members` {members} needs at least {_size(estimate.smallest_block)} for one streamed block, "
            f"more than `memory_mb` {memory_mb}",
            fix=f"lower `members`, or raise `memory_mb` to {math.ceil(estimate.smallest_block / MIB)} or more "
                f"if the machine has the memory ({_size(available_bytes())} free now)")
    free = available_bytes()
    if estimate.total > free:
        raise UsageError(
            f"this forecast needs about {_size(estimate.total)} of memory ({members} member(s): model "
            f"{_size(estimate.weights)}, sampling {_size(estimate.sampling)}, block {_size(estimate.block)}) "
            f"but only {_size(free)} is available",
            fix="lower `members` or `batch_size` (or `memory_mb`)")


def check_ensemble_memory(*, members: int, steps: int, width: int, levels: int, statistics: int) -> None:
    """UsageError when even one row of a forecast's members cannot be summarised in the free memory."""
    per_row = FLOAT_BYTES * width * steps * (3 * members + statistics + levels)
    free = available_bytes()
    if per_row > free:
        raise UsageError(
            f"summarising {members} members of a {width} px wide forecast needs {_size(per_row)} per row, "
            f"but only {_size(free)} is available",
            fix="forecast fewer `members` (16 is typical)")
