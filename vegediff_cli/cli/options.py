"""Options shared by several commands, defined once."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

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


def finite(value: float | None, option: str) -> float | None:
    """A float option must be a real number: click's range checks let NaN through (every comparison is False)."""
    if value is not None and not math.isfinite(value):
        raise UsageError(f"{option} {value} is not a finite number", fix=f"pass a number, e.g. {option} 1")
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


def setup(quiet: bool) -> ProgressFactory:
    """Configure logging to stderr and return the progress-bar factory for this run."""
    level = logging.WARNING if quiet else logging.INFO
    handler = _CurrentStderr()
    handler.setFormatter(RedactingFormatter("%(message)s"))  # no credential reaches a log line
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger().setLevel(level)
    logging.captureWarnings(True)  # Python warnings go through the same (redacting) handler
    return tqdm_progress(quiet=quiet)


def emit_json(result: dict[str, Any]) -> None:
    """The machine-readable result: one JSON document on stdout, nothing else there (credentials masked)."""
    sys.stdout.write(json.dumps(redact_json(json.loads(json.dumps(result, default=str))), indent=2) + "\n")
    sys.stdout.flush()
