"""`vegediff ensemble`: summarise many stochastic forecast members: mean, spread, quantiles and exceedance probabilities."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ..config import DEFAULT_BELOW, DEFAULT_DROP
from ..errors import UsageError
from ..workdir import TileFiles, resolve_output
from .forecast import build_settings, with_guidance
from .options import (
    ForecastOptions,
    InputOpt,
    JsonOpt,
    OutputOpt,
    QuietOpt,
    TileOpt,
    WorkdirOpt,
    emit_json,
    setup,
    with_options,
    workdir_of,
)

log = logging.getLogger("vegediff.ensemble")
DEFAULT_MEMBERS = 16


@with_options(ForecastOptions, into="run")
def ensemble(
    ctx: typer.Context,
    tile: TileOpt = None,
    input: InputOpt = None,
    output: OutputOpt = None,
    workdir: WorkdirOpt = None,
    members: Annotated[int | None, typer.Option(
        help=f"Members to summarise: the forecast is (re)run with this many when it has fewer or is missing "
             f"(default {DEFAULT_MEMBERS} when a forecast is run).", show_default=False)] = None,
    below: Annotated[list[float] | None, typer.Option(
        help="NDVI threshold for P(NDVI < threshold); repeat for several.",
        show_default=" ".join(map(str, DEFAULT_BELOW)))] = None,
    drop: Annotated[list[float] | None, typer.Option(
        help="NDVI loss for P(last clear NDVI - NDVI > drop); repeat for several.",
        show_default=" ".join(map(str, DEFAULT_DROP)))] = None,
    forecast_output: Annotated[Path | None, typer.Option(
        help="Where the forecast run for a cube --input goes (default: <output stem>_forecast.nc).",
        show_default=False)] = None,
    run: ForecastOptions = ForecastOptions(),
    force: Annotated[bool, typer.Option("--force", help="Summarise again even when ensemble.nc is up to date "
                                                        "(made from this forecast with the same levels).")] = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Summarise many stochastic forecast members: mean, spread, quantiles and exceedance probabilities.

    Reads the tile's forecast.nc (or --input FORECAST.nc); runs the forecast with --members first
    when it is missing or has fewer members, or when --input is a cube. Writes ensemble.nc and one
    COG per statistic and step.
    """
    from ..pipeline.ensemble.run import EnsembleSettings, summarise_forecast
    from ..pipeline.ensemble.sources import MIN_MEMBERS, ensemble_sources, forecast_cube
    from ..pipeline.forecast.jobs import cogs_beside
    from ..pipeline.forecast.run import ForecastJob, run_forecasts

    progress = setup(quiet)
    root = workdir_of(workdir)
    target = resolve_output(output, tile, root, "ensemble", inputs=(input, forecast_output))
    folder = (cogs_beside(target) if output is not None else TileFiles.of(root, tile).ensemble_cogs) if run.cogs else None
    forecast_file, cube = ensemble_sources(input, tile, root, target, forecast_output)
    ran = None
    count = members if members is not None else DEFAULT_MEMBERS
    if count < MIN_MEMBERS:
        raise UsageError(f"--members {count} cannot make an ensemble", fix="use --members 2 or more (16 is typical)")
    run = with_guidance(run)
    settings = build_settings(run, members=count)
    cube, reason = forecast_cube(forecast_file, cube, tile=tile, root=root, from_input=input is not None,
                                 members=members, settings=settings, asked=_given_options(ctx))
    if reason is not None:
        log.info("re-running the forecast: %s", reason)
    if cube is not None:
        forecast_cogs = None
        if run.cogs:
            forecast_cogs = TileFiles.of(root, tile).forecast_cogs if input is None else cogs_beside(forecast_file)
        log.info("running the forecast with %d members -> %s", count, forecast_file)
        files = TileFiles.of(root, tile) if input is None else None
        [ran] = run_forecasts([ForecastJob(cube, forecast_file, forecast_cogs, run.weather, tile=files)],
                              weights=run.weights, settings=settings, device=run.device, scheduler=run.scheduler,
                              workers=run.workers, threads=run.threads, compile=run.compile, progress=progress,
                              keep_history=run.keep_history)
    settings = EnsembleSettings(below=tuple(below) if below else DEFAULT_BELOW, drop=tuple(drop) if drop else DEFAULT_DROP)
    summary = summarise_forecast(forecast_file, target, settings=settings, cogs=folder, progress=progress, force=force)
    if json_out:
        emit_json({**summary.as_dict(), "forecast": str(forecast_file),
                   "forecast_run": ran.as_dict() if ran is not None else None})


def _given_options(ctx: typer.Context) -> set[str]:
    """Forecast options given on the command line (not left at their defaults)."""
    from ..pipeline.ensemble.sources import ASKABLE

    # compared by name: Typer may bring its own copy of click, with its own ParameterSource enum
    return {n for n in ASKABLE if getattr(ctx.get_parameter_source(n), "name", "DEFAULT") != "DEFAULT"}


def register(app: typer.Typer) -> None:
    app.command("ensemble")(ensemble)
