"""`vegediff forecast`: forecast the next frames (NDVI and reflectance) with the diffusion model; GPU when present, CPU otherwise."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..config import SamplerSettings
from ..dates import parse_day
from ..errors import UsageError
from .options import (
    ForceOpt,
    ForecastOptions,
    JsonOpt,
    OutputOpt,
    QuietOpt,
    WorkdirOpt,
    emit_json,
    setup,
    with_options,
    workdir_of,
)

if TYPE_CHECKING:  # the command modules import the pipeline only when they run: `vegediff --help` stays fast
    import pandas as pd

    from ..pipeline.forecast.plan import ForecastSettings

def parse_start(text: str | None) -> pd.Timestamp | None:
    if text is None:
        return None
    import pandas as pd

    return pd.Timestamp(parse_day(text, name="start"))


def build_settings(run: ForecastOptions, *, members: int) -> ForecastSettings:
    """The library's ForecastSettings from the shared options (guidance already resolved or None)."""
    from ..pipeline.forecast.model import PAPER_GUIDANCE
    from ..pipeline.forecast.plan import ForecastSettings

    if run.memory_mb < 64:
        raise UsageError(f"--memory-mb {run.memory_mb} is too small", fix="give at least 64 MiB")
    guidance = run.guidance
    if guidance is not None and (not math.isfinite(guidance) or guidance < 0):
        raise UsageError(f"--guidance {guidance} must be a finite number of 0 or more",
                         fix="use e.g. --guidance 1 (the paper uses 2), or leave it out for the weights' own")
    return ForecastSettings(
        horizon=run.horizon, members=members, seed=run.seed, start=parse_start(run.start), overlap=run.overlap,
        batch_size=run.batch_size, min_clear_context=run.min_clear_context, memory_mb=run.memory_mb,
        precision=run.precision, calibrate_spread=run.calibrated_spread,
        sampler=SamplerSettings(sampler=run.sampler, steps=run.steps,
                                guidance_scale=guidance if guidance is not None else PAPER_GUIDANCE))


def with_guidance(run: ForecastOptions) -> ForecastOptions:
    """`run` with the guidance scale the weights recommend when --guidance was left out."""
    from ..pipeline.forecast.model import default_guidance

    return run if run.guidance is not None else dataclasses.replace(run, guidance=default_guidance(run.weights))


@with_options(ForecastOptions, into="run")
def forecast(
    tile: Annotated[list[str] | None, typer.Option(
        "--tile", "-t", help="MGRS tile such as 32UQD (cube from the working directory); repeat for several.",
        show_default=False)] = None,
    input: Annotated[list[Path] | None, typer.Option(
        "--input", "-i", help="Cube file (prepared cube, GreenEarthNet/EarthNet2021x minicube, EarthNet2021 .npz); "
                              "repeat for several.", show_default=False)] = None,
    output: OutputOpt = None,
    workdir: WorkdirOpt = None,
    members: Annotated[int, typer.Option(help="Ensemble members (samples) per pixel.")] = 1,
    run: ForecastOptions = ForecastOptions(),
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Forecast the next frames (NDVI and reflectance) with the diffusion model; GPU when present, CPU otherwise.

    Writes forecast.nc (ndvi_pred, s2_B02_pred..s2_B8A_pred, ndvi_member with --members > 1,
    context_clear_count) on the cube's grid, and one NDVI COG per step.
    """
    from ..pipeline.forecast.jobs import plan_jobs
    from ..pipeline.forecast.run import run_forecasts

    progress = setup(quiet)
    root = workdir_of(workdir)
    run = with_guidance(run)
    settings = build_settings(run, members=members)
    jobs = plan_jobs(list(tile or []), list(input or []), output, root, cogs=run.cogs, weather=run.weather)
    summaries = run_forecasts(jobs, weights=run.weights, settings=settings, device=run.device,
                              scheduler=run.scheduler, workers=run.workers, threads=run.threads, compile=run.compile,
                              progress=progress, force=force, keep_history=run.keep_history)
    if json_out:
        result = [s.as_dict() for s in summaries]
        emit_json(result[0] if len(result) == 1 else {"forecasts": result})


def register(app: typer.Typer) -> None:
    app.command("forecast")(forecast)
