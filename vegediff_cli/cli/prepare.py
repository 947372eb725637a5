"""`vegediff prepare`: build the analysis-ready cube."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..config import DEFAULT_CLEAR_SCL
from ..cube.cog import write_time_series_cogs
from ..cube.describe import describe
from ..cube.masks import cube_ndvi
from ..cube.netcdf import write_netcdf
from ..errors import UsageError
from ..pipeline.prepare import prepare_cube
from ..workdir import resolve_input, resolve_output
from .options import InputOpt, JsonOpt, OutputOpt, QuietOpt, TileOpt, WorkdirOpt, emit_json, setup, workdir_of


def parse_classes(text: str) -> tuple[int, ...]:
    try:
        classes = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        classes = ()
    if not classes or any(not 0 <= c <= 11 for c in classes):
        raise UsageError(f"--clear-classes '{text}' is not a list of SCL classes 0-11", fix="e.g. 4,5,6,7")
    return classes


def prepare(
    tile: TileOpt = None,
    input: InputOpt = None,
    output: OutputOpt = None,
    workdir: WorkdirOpt = None,
    clear_classes: Annotated[
        str, typer.Option(help="SCL classes counted as clear (GreenEarthNet: 1,2,4,5,6,7).")
    ] = ",".join(map(str, DEFAULT_CLEAR_SCL)),
    cogs: Annotated[Path | None, typer.Option(help="Also write one NDVI COG per frame into this folder.")] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Turn a fetched cube, a GreenEarthNet minicube or an EarthNet2021 sample into the analysis-ready cube."""
    setup(quiet)
    root = workdir_of(workdir)
    source = resolve_input(input, tile, root, "raw", made_by="fetch")
    target = resolve_output(output, tile, root, "cube")
    cube = prepare_cube(source, clear_classes=parse_classes(clear_classes))
    write_netcdf(cube, target)
    if cogs is not None:
        ndvi = cube_ndvi(cube)
        ndvi.attrs.update({"long_name": "NDVI (clear-sky observations)", "units": "1"})
        write_time_series_cogs(ndvi.rio.write_crs(cube.rio.crs), cogs, prefix="ndvi")
    if json_out:
        emit_json({"output": str(target), "cogs": str(cogs) if cogs else None, **describe(cube)})


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare)
