"""`vegediff info`: what is in a cube, and the table of exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..errors import EXIT_CODES, UsageError
from ..redact import redact
from ..workdir import resolve_input
from .options import InputOpt, JsonOpt, TileOpt, WorkdirOpt, emit_json, workdir_of
from .version import weights_in_use, weights_lines

MADE_BY = {"raw": "fetch", "cube": "prepare", "forecast": "forecast", "ensemble": "ensemble"}


def info(
    path: Annotated[Path | None, typer.Argument(help="Cube, GreenEarthNet minicube or EarthNet2021 .npz.")] = None,
    tile: TileOpt = None,
    input: InputOpt = None,
    workdir: WorkdirOpt = None,
    step: Annotated[str, typer.Option(help="With --tile: which file of the tile (raw, cube, forecast, ensemble).")] = "cube",
    exit_codes: Annotated[bool, typer.Option("--exit-codes", help="List the exit codes and what they mean.")] = False,
    weights: Annotated[bool, typer.Option(
        "--weights", help="Describe the weights in use (or the weights file PATH): SHA-256, preset, training.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Describe a cube (grid, CRS, dates, clear-sky fraction, meteorology, static layers), a forecast or
    ensemble file (dates, members, what it was made from), or with --weights the model weights."""
    if weights:
        _print_weights(path, json_out)
        return
    if exit_codes:
        if json_out:
            emit_json({str(code): text for code, text in EXIT_CODES.items()}, flags=False)
            return
        table = Table("exit code", "meaning")
        for code, text in sorted(EXIT_CODES.items()):
            table.add_row(str(code), text)
        Console().print(table)
        return
    if step not in MADE_BY:
        raise UsageError(f"--step '{step}' is not one of {', '.join(MADE_BY)}", fix="e.g. --step forecast")
    target = resolve_input(path or input, tile, workdir_of(workdir), step, made_by=MADE_BY[step])
    from ..cube.describe import describe_file

    summary = {"path": str(target), **describe_file(target)}
    if json_out:
        emit_json(summary, flags=False)
        return
    table = Table(show_header=False, title=redact(str(target)))
    for key, value in summary.items():
        if key != "path":
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            table.add_row(key, redact(text))
    Console(stderr=False).print(table)


def _print_weights(path: Path | None, json_out: bool) -> None:
    described = weights_in_use(path)
    if json_out:
        emit_json(described, flags=False)
        return
    table = Table(show_header=False, title="weights")
    table.add_column()
    table.add_column(overflow="fold")  # a SHA-256 is copied whole, never cut to "..."
    for label, value in weights_lines(described):
        table.add_row(label, value)
    Console(stderr=False).print(table)


def register(app: typer.Typer) -> None:
    app.command("info")(info)
