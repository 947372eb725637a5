"""`vegediff ensemble`: summarise many stochastic forecast members: mean, spread, quantiles and exceedance probabilities."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..config import DEFAULT_BELOW, DEFAULT_DROP, DEFAULT_KEEP_HISTORY
from ..errors import InputNotFoundError, UsageError
from ..workdir import TileFiles, resolve_input, resolve_output
from .forecast import (
    BatchOpt,
    CogsOpt,
    CompileOpt,
    DeviceOpt,
    GuidanceOpt,
    HorizonOpt,
    KeepHistoryOpt,
    MemoryOpt,
    MinClearOpt,
    OverlapOpt,
    PrecisionOpt,
    SamplerOpt,
    SchedulerOpt,
    SeedOpt,
    SpreadOpt,
    StartOpt,
    StepsOpt,
    ThreadsOpt,
    WeatherOpt,
    WeightsOpt,
    WorkersOpt,
    build_settings,
    cogs_beside,
)
from .options import InputOpt, JsonOpt, OutputOpt, QuietOpt, TileOpt, WorkdirOpt, emit_json, setup, workdir_of

if TYPE_CHECKING:
    from ..pipeline.forecast.plan import ForecastSettings

log = logging.getLogger("vegediff.ensemble")
DEFAULT_MEMBERS = 16


def _is_forecast(path: Path) -> bool:
    """True for a forecast file (ndvi_pred), False for a cube; errors for anything unreadable."""
    from ..cube.readers import open_netcdf

    if path.suffix.lower() == ".npz":
        return False
    ds = open_netcdf(path)
    try:
        return "ndvi_pred" in ds
    finally:
        ds.close()


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
    weights: WeightsOpt = None,
    start: StartOpt = None,
    horizon: HorizonOpt = 20,
    sampler: SamplerOpt = "euler",
    steps: StepsOpt = 10,
    guidance: GuidanceOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    batch_size: BatchOpt = None,
    weather: WeatherOpt = "auto",
    overlap: OverlapOpt = 32,
    min_clear_context: MinClearOpt = 1,
    memory_mb: MemoryOpt = 1024,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    threads: ThreadsOpt = None,
    compile: CompileOpt = "auto",
    cogs: CogsOpt = True,
    calibrated_spread: SpreadOpt = True,
    force: Annotated[bool, typer.Option("--force", help="Summarise again even when ensemble.nc is up to date "
                                                        "(made from this forecast with the same levels).")] = False,
    keep_history: KeepHistoryOpt = DEFAULT_KEEP_HISTORY,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Summarise many stochastic forecast members: mean, spread, quantiles and exceedance probabilities.

    Reads the tile's forecast.nc (or --input FORECAST.nc); runs the forecast with --members first
    when it is missing or has fewer members, or when --input is a cube. Writes ensemble.nc and one
    COG per statistic and step.
    """
    from ..pipeline.ensemble.run import EnsembleSettings, summarise_forecast
    from ..pipeline.forecast.model import default_guidance
    from ..pipeline.forecast.run import ForecastJob, run_forecasts

    progress = setup(quiet)
    root = workdir_of(workdir)
    target = resolve_output(output, tile, root, "ensemble", inputs=(input, forecast_output))
    folder = (cogs_beside(target) if output is not None else TileFiles.of(root, tile).ensemble_cogs) if cogs else None
    forecast_file, cube = _sources(input, tile, root, target, forecast_output)
    ran = None
    count = members if members is not None else DEFAULT_MEMBERS
    if count < 2:
        raise UsageError(f"--members {count} cannot make an ensemble", fix="use --members 2 or more (16 is typical)")
    if guidance is None:
        guidance = default_guidance(weights)
    settings = build_settings(horizon=horizon, members=count, sampler=sampler, steps=steps, guidance=guidance,
                              seed=seed, start=start, overlap=overlap, batch_size=batch_size,
                              min_clear_context=min_clear_context, memory_mb=memory_mb, precision=precision,
                              calibrate_spread=calibrated_spread)
    cube_file = TileFiles.of(root, tile).cube if input is None else None
    if cube is None and cube_file is not None and cube_file.exists() and forecast_file.exists():
        reason = stale_reason(forecast_file, cube_file, settings, asked=_given_options(ctx))
        if reason is not None:
            log.info("re-running the forecast: %s", reason)
            cube = cube_file
    if cube is not None or _needs_run(forecast_file, members, from_input=input is not None):
        cube = cube or resolve_input(None, tile, root, "cube", made_by="prepare")
        forecast_cogs = None
        if cogs:
            forecast_cogs = TileFiles.of(root, tile).forecast_cogs if input is None else cogs_beside(forecast_file)
        log.info("running the forecast with %d members -> %s", count, forecast_file)
        files = TileFiles.of(root, tile) if input is None else None
        [ran] = run_forecasts([ForecastJob(cube, forecast_file, forecast_cogs, weather, tile=files)], weights=weights,
                              settings=settings, device=device, scheduler=scheduler, workers=workers, threads=threads,
                              compile=compile, progress=progress, keep_history=keep_history)
    settings = EnsembleSettings(below=tuple(below) if below else DEFAULT_BELOW, drop=tuple(drop) if drop else DEFAULT_DROP)
    summary = summarise_forecast(forecast_file, target, settings=settings, cogs=folder, progress=progress, force=force)
    if json_out:
        emit_json({**summary.as_dict(), "forecast": str(forecast_file),
                   "forecast_run": ran.as_dict() if ran is not None else None})


def _given_options(ctx: typer.Context) -> set[str]:
    """Forecast options given on the command line (not left at their defaults)."""
    names = ("seed", "horizon", "sampler", "steps", "guidance", "start", "precision")
    # compared by name: Typer may bring its own copy of click, with its own ParameterSource enum
    return {n for n in names if getattr(ctx.get_parameter_source(n), "name", "DEFAULT") != "DEFAULT"}


def stale_reason(forecast_file: Path, cube_file: Path, settings: ForecastSettings, *,
                 asked: set[str]) -> str | None:
    """Why the tile's existing forecast does not answer this request (None: it does).

    It is stale when the cube changed since the forecast was made from it (the identity the forecast
    records; the modification time for forecasts of older versions), or when an option in `asked` differs from what the
    forecast was made with (options left at their defaults accept whatever it was made with).
    """
    from ..cube import provenance
    from ..cube.readers import open_netcdf

    if provenance.made_from(forecast_file) is not None:
        if provenance.stale_input(forecast_file, "cube", cube_file):
            return f"{cube_file} changed since {forecast_file} was made from it"
    elif cube_file.stat().st_mtime > forecast_file.stat().st_mtime:  # a forecast of an older version
        return f"{cube_file} is newer than {forecast_file}"
    ds = open_netcdf(forecast_file)
    try:
        attrs = dict(ds.attrs)
    finally:
        ds.close()
    wanted = {"seed": settings.seed, "horizon": settings.horizon, "sampler": settings.sampler.sampler,
              "steps": settings.sampler.steps,
              "guidance_scale": settings.sampler.guidance_scale,
              "forecast_start": f"{settings.start:%Y-%m-%d}" if settings.start is not None else None,
              "precision": settings.precision if settings.precision != "auto" else None}
    option = {"guidance_scale": "guidance", "forecast_start": "start"}
    if str(attrs.get("conditioned", "")).lower() not in ("1", "true"):
        wanted.pop("guidance_scale")  # an unconditioned forecast records guidance 1
    for key, value in wanted.items():
        if option.get(key, key) not in asked or value is None:
            continue
        have = attrs.get(key)
        if have is not None and str(have) != str(value) and not _same_number(have, value):
            return f"it was made with {key}={have}, this run asks for {value}"
    return None


def _same_number(a: object, b: object) -> bool:
    try:
        return abs(float(a) - float(b)) < 1e-9
    except (TypeError, ValueError):
        return False


def _needs_run(forecast_file: Path, members: int | None, *, from_input: bool) -> bool:
    """Whether the tile's forecast must be (re)run to get enough members; a given forecast is never rerun."""
    if not forecast_file.exists():
        return True
    from ..pipeline.ensemble.run import forecast_members

    have = forecast_members(forecast_file)
    enough = have >= (members if members is not None else 2)
    if not enough and from_input:
        raise UsageError(f"{forecast_file} holds {have} member(s), fewer than the {members or 2} needed",
                         fix="pass the cube it came from as --input (or use --tile) to re-run the forecast with --members")
    return not enough


def _sources(input: Path | None, tile: str | None, root: Path, target: Path,
             forecast_output: Path | None) -> tuple[Path, Path | None]:
    """(forecast file to read, or to write first; cube to forecast from, or None)."""
    if input is not None:
        if not input.exists():
            raise InputNotFoundError(f"{input} does not exist", fix="check the path, or run `vegediff forecast` first")
        if _is_forecast(input):
            return input, None
        return forecast_output or target.with_name(f"{target.stem}_forecast.nc"), input
    if tile is None:
        raise UsageError("no input given", fix="pass --tile TILE (uses the working directory) or --input PATH")
    return forecast_output or TileFiles.of(root, tile).forecast, None


def register(app: typer.Typer) -> None:
    app.command("ensemble")(ensemble)
