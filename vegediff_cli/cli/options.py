"""Options shared by several commands, defined once."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import math
import re
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer

from ..config import CHIP_OVERLAP, DEFAULT_KEEP_HISTORY
from ..errors import UsageError
from ..progress import ProgressFactory, tqdm_progress
from ..redact import RedactingFormatter, redact_json
from ..workdir import ENV_WORKDIR, default_workdir

TileOpt = Annotated[
    str | None,
    typer.Option("--tile", "-t", help="MGRS tile name such as 32UQD; files are found in the working directory."),
]
InputOpt = Annotated[
    Path | None,
    typer.Option("--input", "-i", help="Read this file instead of the tile's file in the working directory."),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write here instead of the tile's file in the working directory."),
]
WorkdirOpt = Annotated[
    Path | None,
    typer.Option("--workdir", "-w", envvar=ENV_WORKDIR, help="Working directory with one folder per tile.",
                 show_default="./vegediff-work"),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, only warnings and errors on stderr.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]

# Forecast options, shared by `vegediff forecast` and `vegediff ensemble` (which runs a forecast when it needs members).
WeightsOpt = Annotated[Path | None, typer.Option(
    help="Weights file (.safetensors). Default: $VEGEDIFF_WEIGHTS, else the shipped weights/vegediff-small.safetensors.",
    show_default=False)]
StartOpt = Annotated[str | None, typer.Option(
    help="First forecast date YYYY-MM-DD (moved to the next frame date if between frames). "
         "Default: 5 days after the cube's last frame.", show_default=False)]
HorizonOpt = Annotated[int, typer.Option(help="Forecast steps of 5 days (at most the model's horizon, 20).")]
SamplerOpt = Annotated[str, typer.Option(help="euler (paper) or dpmpp2m (DPM-Solver++(2M), second order: fewer steps for the same error).")]
StepsOpt = Annotated[int, typer.Option(help="Denoising steps per sample.")]
GuidanceOpt = Annotated[float | None, typer.Option(
    help="Classifier-free guidance weight on meteorology and static layers. Default: the scale recorded in the "
         "weights (chosen on validation data; 1.0 for the shipped weights), else the paper's 2.",
    show_default=False)]
MAX_SEED = 2**63 - 1  # seeds are stored as 64-bit integers (NetCDF attributes, torch generators)
SeedOpt = Annotated[int, typer.Option(help="Run seed: the same seed gives the same forecast, whatever the batching.",
                                      min=0, max=MAX_SEED)]
DeviceOpt = Annotated[str, typer.Option(help="auto (GPU when present), cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[str, typer.Option(
    help="auto (bf16 on GPUs and on CPUs with native bf16, about 1.7 x faster there; fp32 elsewhere), fp32 or bf16. "
         "The output records the one used.")]
BatchOpt = Annotated[int | None, typer.Option(
    "--batch-size", help="Chips (with all their members) per model call (default: 4 chip-members per call on CPU, "
                         "members in chunks of 4; 64 on GPU).", show_default=False)]
WeatherOpt = Annotated[str, typer.Option(
    envvar="VEGEDIFF_WEATHER",
    help="Weather for forecast dates the cube does not cover. auto: Open-Meteo (no account): ERA5 and its "
         "16-day forecast, then one past year's weather per member (scenarios); open-meteo: the same, ignoring the "
         "cube's future; scenarios: past years only (hindcast experiments); none: no network (the cube's climatology, "
         "else the unconditional model); or a NetCDF file with eobs_* series.")]
OverlapOpt = Annotated[int, typer.Option(help="Minimum overlap of neighbouring 128 px chips, blended smoothly.")]
MinClearOpt = Annotated[int, typer.Option(
    help="Pixels with fewer clear context frames are left empty (NaN); see context_clear_count.")]
MemoryOpt = Annotated[int, typer.Option("--memory-mb", help=(
    "Memory for the run's data (streamed blocks, model calls under way), MiB; "
    "each process adds a fixed overhead (docs/forecast.md)."))]
SchedulerOpt = Annotated[str | None, typer.Option(
    help="Dask scheduler address (tcp://HOST:PORT) to spread blocks over its workers, or 'local' for a local cluster.",
    show_default=False)]
WorkersOpt = Annotated[int | None, typer.Option(
    help="Model processes, one torch thread each (default: one per usable core when the forecast's model calls "
         "add up to 20 s or more; 0: run in this process). With --scheduler local: its workers (default: one per "
         "GPU, else one per core).", show_default=False)]
ThreadsOpt = Annotated[int | None, typer.Option(
    help="Torch threads per model process (default 1: faster for this model, and robust under other load).",
    show_default=False)]
CompileOpt = Annotated[str, typer.Option(
    "--compile", help="Compile the denoiser (TorchInductor, frozen weights; about 25 % faster per chip on CPU, "
                      "10 s to a few minutes to compile, cached in ~/.cache/vegediff): auto (on CPU above "
                      "400 chip-members per process), on or off.")]
CogsOpt = Annotated[bool, typer.Option("--cogs/--no-cogs", help="Also write Cloud-Optimized GeoTIFFs.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Run the forecast even when the output is up to date "
                                                        "(made from the same cube, weights and settings).")]
KeepHistoryOpt = Annotated[int, typer.Option(
    help="Earlier forecasts of a tile kept in <workdir>/<TILE>/history/ for `evaluate --tile` "
         "(0: none; each holds the whole forecast.nc).", min=0, max=100)]
SpreadOpt = Annotated[bool, typer.Option(
    "--calibrated-spread/--raw-spread",
    help="Widen the members about their mean by the spread calibration the weights carry (fitted on validation "
         "data, so that the spread matches the error); --raw-spread keeps the diffusion samples as drawn.")]


def finite(value: float | None, option: str) -> float | None:
    """A float option must be a real number: click's range checks let NaN through (every comparison is False)."""
    if value is not None and not math.isfinite(value):
        raise UsageError(f"{option} {value} is not a finite number", fix=f"pass a number, e.g. {option} 1")
    return value


@dataclasses.dataclass(frozen=True)
class ForecastOptions:
    """How a forecast runs: the options `vegediff forecast` and `vegediff ensemble` share (see with_options)."""

    weights: WeightsOpt = None
    start: StartOpt = None
    horizon: HorizonOpt = 20
    sampler: SamplerOpt = "euler"
    steps: StepsOpt = 10
    guidance: GuidanceOpt = None
    seed: SeedOpt = 0
    device: DeviceOpt = "auto"
    precision: PrecisionOpt = "auto"
    batch_size: BatchOpt = None
    weather: WeatherOpt = "auto"
    overlap: OverlapOpt = CHIP_OVERLAP
    min_clear_context: MinClearOpt = 1
    memory_mb: MemoryOpt = 1024
    scheduler: SchedulerOpt = None
    workers: WorkersOpt = None
    threads: ThreadsOpt = None
    compile: CompileOpt = "auto"
    cogs: CogsOpt = True
    calibrated_spread: SpreadOpt = True
    keep_history: KeepHistoryOpt = DEFAULT_KEEP_HISTORY


def with_options(bundle: type, *, into: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the fields of dataclass `bundle` become options of a Typer command, in place of its `into`
    parameter, and reach it as one `bundle` instance there.

    Typer reads a command's options from its signature; options shared by several commands are written
    once as a dataclass (field: Annotated[type, typer.Option(...)] = default) instead of in every signature.
    """
    fields = dataclasses.fields(bundle)
    hints = get_type_hints(bundle, include_extras=True)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        own = list(signature.parameters.values())
        at = [p.name for p in own].index(into)
        shared = [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=hints[f.name],
                                    default=f.default) for f in fields]
        parameters = [*own[:at], *shared, *own[at + 1:]]

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            kwargs[into] = bundle(**{f.name: kwargs.pop(f.name) for f in fields})
            return command(*args, **kwargs)

        # not validated: a shared option with a default may precede a command's own option without one
        run.__signature__ = inspect.Signature(parameters, return_annotation=signature.return_annotation,  # type: ignore[attr-defined]
                                              __validate_parameters__=False)
        run.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": signature.return_annotation}
        return run

    return decorate


LIBRARY_NAME = re.compile(r"`([a-z][a-z0-9_]*)`")  # how library messages name a parameter: `memory_mb`


@cache
def flag_names() -> dict[str, str]:
    """Every long option of every command, by the library's name for it: {"memory_mb": "--memory-mb", ...}."""
    import click
    import typer.main

    from .app import app

    names: dict[str, str] = {}

    def collect(command: click.Command) -> None:
        for param in command.params:
            for opt in (*param.opts, *getattr(param, "secondary_opts", ())):
                if opt.startswith("--"):
                    names[opt[2:].replace("-", "_")] = opt
        for sub in getattr(command, "commands", {}).values():
            collect(sub)

    collect(typer.main.get_command(app))
    return names


def as_flags(text: str) -> str:
    """A library message in the CLI's words: a parameter named in backticks (`memory_mb`) becomes its flag (--memory-mb).

    The library names what is wrong in its own terms (errors.py); only names of this CLI's options change.
    """
    if "`" not in text:
        return text
    names = flag_names()
    return LIBRARY_NAME.sub(lambda m: names.get(m.group(1), m.group(0)), text)


def _as_flags_json(value: Any) -> Any:
    if isinstance(value, str):
        return as_flags(value)
    if isinstance(value, dict):
        return {k: _as_flags_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_flags_json(v) for v in value]
    return value


def workdir_of(value: Path | None) -> Path:
    return value if value is not None else default_workdir()


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record, never to a stale stream.

    In-process runs (tests) swap sys.stderr between calls; a handler bound to an old, closed
    stream would turn every later log line into a "Logging error" traceback.
    """

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _CliFormatter(RedactingFormatter):
    """Log lines on stderr: credentials masked, library parameter names shown as flags."""

    def format(self, record: logging.LogRecord) -> str:
        return as_flags(super().format(record))


def setup(quiet: bool) -> ProgressFactory:
    """Configure logging to stderr and return the progress-bar factory for this run."""
    level = logging.WARNING if quiet else logging.INFO
    handler = _CurrentStderr()
    handler.setFormatter(_CliFormatter("%(message)s"))  # no credential reaches a log line
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger().setLevel(level)
    logging.captureWarnings(True)  # Python warnings go through the same (redacting) handler
    return tqdm_progress(quiet=quiet)


def emit_json(result: dict[str, Any], *, flags: bool = True) -> None:
    """The machine-readable result: one JSON document on stdout, nothing else there (credentials masked).

    With `flags`, library notes name options as flags (as_flags); `info` passes False: it shows file contents.
    """
    document = redact_json(json.loads(json.dumps(result, default=str)))
    sys.stdout.write(json.dumps(_as_flags_json(document) if flags else document, indent=2) + "\n")
    sys.stdout.flush()
