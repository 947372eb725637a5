"""`vegediff info`: what is in a cube, and the table of exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..errors import EXIT_CODES, UsageError
from ..workdir import resolve_input
from .options import InputOpt, JsonOpt, TileOpt, WorkdirOpt, emit_json, workdir_of


def info(
    path: Annotated[Path | None, typer.Argument(help="Cube, GreenEarthNet minicube or EarthNet2021 .npz.")] = None,
    tile: TileOpt = None,
    input: InputOpt = None,
    workdir: WorkdirOpt = None,
    step: Annotated[str, typer.Option(help="With --tile: which file of the tile (raw, cube, forecast, ensemble).")] = "cube",
    exit_codes: Annotated[bool, typer.Option("--exit-codes", help="List the exit codes and what they mean.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Describe a cube: grid, CRS, dates, clear-sky fraction, meteorology and static layers."""
    if exit_codes:
        if json_out:
            emit_json({str(code): text for code, text in EXIT_CODES.items()})
            return
        table = Table("exit code", "meaning")
        for code, text in sorted(EXIT_CODES.items()):
            table.add_row(str(code), text)
        Console().print(table)
        return
    if step not in ("raw", "cube", "forecast", "ensemble"):
        raise UsageError(f"--step '{step}' is not one of raw, cube, forecast, ensemble")
    from ..cube.describe import describe
    from ..cube.readers import open_cube

    target = resolve_input(path or input, tile, workdir_of(workdir), step, made_by="prepare")
    summary = {"path": str(target), **describe(open_cube(target))}
    if json_out:
        emit_json(summary)
        return
    table = Table(show_header=False, title=str(target))
    for key, value in summary.items():
        if key != "path":
            table.add_row(key, ", ".join(map(str, value)) if isinstance(value, list) else str(value))
    Console(stderr=False).print(table)


def register(app: typer.Typer) -> None:
    app.command("info")(info)
