"""`vegediff evaluate`: score forecasts against observations with GreenEarthNet's NDVI metrics and probabilistic scores."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..config import CONTEXT_FRAMES
from ..errors import UsageError
from .options import JsonOpt, QuietOpt, TileOpt, WorkdirOpt, as_flags, emit_json, setup, workdir_of

log = logging.getLogger("vegediff.evaluate")

if TYPE_CHECKING:
    from ..pipeline.evaluate.run import Report


def _choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise UsageError(f"{option} '{value}' is not one of {', '.join(allowed)}", fix=f"use e.g. {option} {allowed[0]}")
    return value


def summary_lines(report: Report) -> list[str]:
    """A short human-readable table of the pooled scores."""
    lines = [f"{'forecast':<22} {'RMSE':>7} {'NSE':>7} {'R2':>6} {'|bias|':>7} {'pixels':>7}  "
             "RMSE forest/shrub/grass/crop"]
    for name, scores in report.forecasts.items():
        h = scores.headline
        classes = scores.per_class
        per = "/".join(f"{classes[c]['rmse']:.3f}" if c in classes else "-" for c in (10, 20, 30, 40))
        lines.append(f"{name:<22} {h['rmse']:7.3f} {h['nse']:7.3f} {h['r2']:6.3f} {h['abs_bias']:7.3f} "
                     f"{h['n_pixels']:7d}  {per}")
        if scores.probabilistic and scores.probabilistic.get("crps") is not None:
            p = scores.probabilistic
            lines.append(f"{'':<22} fair CRPS {p['crps']:.4f}, spread-skill {p['spread_skill_ratio']:.2f} "
                         f"({p['members']} members)")
        if scores.outperformance:
            o = scores.outperformance
            lines.append(f"{'':<22} outperforms {scores.baseline.forecast} in {100 * o['outperformance']:.0f} % "
                         f"of (cube, land cover) groups")
    lines.append(f"cubes scored: {len(report.per_cube)}, skipped: {len(report.skipped)}; "
                 f"written: {report.files.get('json')}")
    return lines


def evaluate(
    tile: TileOpt = None,
    input: Annotated[
        list[Path] | None,
        typer.Option("--input", "-i", help="Target cube, or a folder of cubes (searched recursively). Repeatable."),
    ] = None,
    forecast: Annotated[
        list[str] | None,
        typer.Option("--forecast", "-f", help="[NAME=]forecast.nc or GreenEarthNet prediction file, or a folder of "
                                              "predictions named like the cube files. Repeatable: scored side by side."),
    ] = None,
    ensemble: Annotated[
        Path | None, typer.Option(help="ensemble.nc whose event probabilities are scored (one cube, first forecast).")
    ] = None,
    baseline: Annotated[
        str, typer.Option(help="Reference forecast made from each cube: persistence, context-mean, climatology or none.")
    ] = "persistence",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output folder (scores.json, scores.csv, figures/); with --tile the "
                                            "default is <workdir>/<TILE>/evaluation."),
    ] = None,
    workdir: WorkdirOpt = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw PNG figures into OUTPUT/figures.")] = True,
    pixels: Annotated[
        str, typer.Option(help="Pixels scored: greenearthnet (the benchmark's high-quality vegetation pixels) or "
                               "all-valid (every pixel with a clear target observation).")
    ] = "greenearthnet",
    context_frames: Annotated[
        int, typer.Option(help="Frames before the first forecast date that baselines and the quality rule use.")
    ] = CONTEXT_FRAMES,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", help="Cubes scored in parallel.", show_default="CPU count")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random tie-breaking in rank histograms.",
                                      min=0, max=2**63 - 1)] = 0,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Score NDVI forecasts against the observed cube: GreenEarthNet's RMSE, NSE, R2 and |bias| per land cover,
    fair CRPS, spread-skill, rank histogram and reliability for ensembles, against a baseline; JSON, CSV and figures."""
    from ..metrics.deterministic import QUALITY_RULES
    from ..pipeline.evaluate.baselines import BASELINES
    from ..pipeline.evaluate.plan import find_targets, plan_jobs, tile_job
    from ..pipeline.evaluate.run import RunOptions, evaluate_jobs, json_ready
    from ..pipeline.evaluate.scoring import EvaluationSettings

    progress = setup(quiet)
    baseline_name = _choice(baseline, (*BASELINES, "none"), "--baseline")
    rule = QUALITY_RULES[_choice(pixels, tuple(QUALITY_RULES), "--pixels")]
    workers = jobs if jobs is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise UsageError(f"--jobs {workers} must be at least 1", fix="e.g. --jobs 4")
    reference = None if baseline_name == "none" else baseline_name
    if tile is not None and input:
        raise UsageError("--tile and --input both name the target", fix="pass one of them")
    status: dict = {}
    if tile is not None:
        plan = tile_job(workdir_of(workdir), tile, forecast or [], ensemble=ensemble, baseline=reference)
        status = plan.status
        if plan.job is None:  # cron: a forecast into the future is not an error, there is just nothing to score
            typer.echo(f"vegediff: nothing to score yet: {as_flags(status['reason'])}; evaluate again once the cube "
                       "holds those dates", err=True)
            if json_out:
                emit_json({"output": None, **status})
            return
        planned, target_dir = [plan.job], output or plan.output
    elif input:
        planned = plan_jobs(find_targets(input), forecast or [], ensemble=ensemble, baseline=reference)
        if output is None:
            raise UsageError("no output folder given", fix="pass --output DIR (or --tile TILE to use the working directory)")
        target_dir = output
    else:
        raise UsageError("no target cube given", fix="pass --tile TILE (uses the working directory) or --input CUBE")
    options = RunOptions(baseline=reference, plots=plots, workers=workers,
                         settings=EvaluationSettings(context_frames=context_frames, quality=rule, seed=seed))
    report = evaluate_jobs(planned, target_dir, options=options, progress=progress)
    if status.get("dates_pending"):
        log.info("scored %d observed date(s) of %s; %d not observed yet", len(status["dates_scored"]),
                 status["forecast_file"], len(status["dates_pending"]))
    if json_out:
        emit_json(json_ready({"output": str(target_dir), **({"status": "scored"} | status), **report.to_dict()}))
    elif not quiet:
        typer.echo(as_flags("\n".join(summary_lines(report))))


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
