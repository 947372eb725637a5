"""Evaluate many cubes at once: plan (target, forecasts) pairs, score them in parallel, write the report.

Output folder (written as a whole, atomically: it appears complete or not at all)::

    scores.json    the report: pooled scores per forecast and baseline, per-cube scores, skipped cubes
    scores.csv     the same as a tidy table: scope, forecast, landcover, metric, value, n_pixels
    figures/       per cube: NDVI maps, RMSE maps, sample time series; per forecast: rank histogram,
                   reliability diagram (member / ensemble forecasts)
    qgis/<cube>/   per cube: observed and forecast NDVI and RMSE maps as COGs, evaluation.qgs (maps.py)
"""

from __future__ import annotations

import csv
import json
import logging
import math
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ... import plots
from ...atomic import atomic_dir, output_lock
from ...cube.predictions import read_ensemble, read_forecast
from ...cube.readers import open_cube
from ...errors import NoValidDataError, UsageError
from ...progress import ProgressFactory, no_progress
from .figures import cube_figures, safe_name
from .maps import write_cube_maps
from .scoring import EvaluationSettings, Scores, merge_scores, score_cube

log = logging.getLogger("vegediff.evaluate")
QGIS = "qgis"  # per cube: COG maps and a QGIS project (maps.py)


@dataclass(frozen=True)
class CubeJob:
    """One target cube and what to score against it."""

    target: Path  # the target cube (any format open_cube reads)
    forecasts: tuple[tuple[str, Path], ...]  # (name, forecast file) pairs
    ensemble: Path | None = None  # ensemble.nc, scored for reliability with the first forecast
    dates: tuple[str, ...] | None = None  # score only these forecast dates (YYYY-MM-DD); None: all

    @property
    def cube(self) -> str:
        """Name in reports: the file stem, or the tile for a working directory's <TILE>/cube.nc."""
        if self.target.name == "cube.nc" and self.target.parent.name:
            return self.target.parent.name
        return self.target.stem


@dataclass(frozen=True)
class RunOptions:
    """How a batch is evaluated."""

    baseline: str | None = "persistence"  # reference forecast made from each cube, or None
    settings: EvaluationSettings = EvaluationSettings()  # context window, quality rule, seed
    plots: bool = True  # draw figures
    workers: int = 1  # processes scoring cubes in parallel


@dataclass
class CubeOutcome:
    """What one worker sends back."""

    cube: str
    scores: dict[str, Scores] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    project: str | None = None  # QGIS project of the cube's maps, relative to the output folder
    skipped: NoValidDataError | None = None


@dataclass
class Report:
    """Pooled and per-cube scores of a batch, and where they were written."""

    forecasts: dict[str, Scores]  # name -> scores pooled over cubes (baselines included under their name)
    per_cube: dict[str, dict[str, Scores]]  # cube -> name -> scores
    skipped: dict[str, str]  # cube -> reason
    options: RunOptions
    files: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        settings = self.options.settings
        return {
            "cubes": sorted(self.per_cube), "skipped": [{"cube": c, "reason": r} for c, r in self.skipped.items()],
            "baseline": self.options.baseline, "context_frames": settings.context_frames,
            "quality_rule": asdict(settings.quality),
            "forecasts": {name: s.to_dict() for name, s in self.forecasts.items()},
            "per_cube": {cube: {name: s.to_dict() for name, s in by_name.items()} for cube, by_name in self.per_cube.items()},
            "files": self.files,
        }


def evaluate_job(job: CubeJob, options: RunOptions, figures: Path | None) -> CubeOutcome:
    """Score one cube (runs in a worker process); a cube with nothing to score comes back as skipped."""
    target = open_cube(job.target)
    forecasts = {name: _dates(read_forecast(path), job.dates) for name, path in job.forecasts}
    ensembles = ({job.forecasts[0][0]: _dates(read_ensemble(job.ensemble), job.dates)}
                 if job.ensemble is not None else None)
    try:
        scores, maps, baselines = score_cube(target, forecasts, cube=job.cube, baseline=options.baseline,
                                             ensembles=ensembles, settings=options.settings)
    except NoValidDataError as error:
        return CubeOutcome(job.cube, skipped=error)
    outcome = CubeOutcome(job.cube, scores)
    if figures is not None:
        drawn = cube_figures(target, {**forecasts, **baselines}, maps, figures, cube=job.cube)
        outcome.figures = [p.name for p in drawn]
        project = write_cube_maps(target, forecasts, maps, figures.parent / QGIS / safe_name(job.cube), cube=job.cube)
        outcome.project = project.relative_to(figures.parent).as_posix() if project else None
    return outcome


def _dates(ds, dates: tuple[str, ...] | None):
    """`ds` restricted to `dates` (the forecast dates already observed), or unchanged."""
    if dates is None:
        return ds
    import pandas as pd

    keep = pd.DatetimeIndex(ds["time"].values).normalize().isin(pd.DatetimeIndex(dates))
    return ds.isel(time=keep.nonzero()[0])


def _run_all(jobs: Sequence[CubeJob], options: RunOptions, figures: Path | None,
             progress: ProgressFactory) -> list[CubeOutcome]:
    workers = max(1, min(options.workers, len(jobs), os.cpu_count() or 1))
    if workers == 1:
        outcomes = []
        with progress(len(jobs), "Scoring cubes") as bar:
            for job in jobs:
                outcomes.append(evaluate_job(job, options, figures))
                bar.update(1)
        return outcomes
    # fork where the platform has it: spawned workers would re-import the whole CLI (torch
    # included, seconds each). Workers are forked before any progress-bar thread starts and
    # open their own files, so no HDF5 handle is shared with the parent.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
        futures = [pool.submit(evaluate_job, job, options, figures) for job in jobs]
        try:
            with progress(len(jobs), "Scoring cubes") as bar:
                outcomes = []
                for future in futures:
                    outcomes.append(future.result())
                    bar.update(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return outcomes


def _pool(outcomes: list[CubeOutcome]) -> dict[str, Scores]:
    """Merge each forecast's and each baseline's per-cube scores over cubes."""
    by_name: dict[str, list[Scores]] = {}
    baselines: dict[tuple[str, str], Scores] = {}
    for outcome in outcomes:
        for name, scores in outcome.scores.items():
            by_name.setdefault(name, []).append(scores)
            if scores.baseline is not None:
                baselines[(outcome.cube, scores.baseline.forecast)] = scores.baseline
    for (_, label), scores in baselines.items():
        by_name.setdefault(label, []).append(scores)
    return {name: merge_scores(parts) for name, parts in by_name.items()}


def evaluate_jobs(jobs: Sequence[CubeJob], output: Path, *, options: RunOptions = RunOptions(),
                  progress: ProgressFactory = no_progress) -> Report:
    """Score every job and write scores.json, scores.csv and figures/ into `output` (atomically)."""
    if not jobs:
        raise UsageError("no cube to evaluate", fix="pass `input` CUBE or `tile` TILE")
    if output.exists() and not output.is_dir():
        raise UsageError(f"`output` {output} is a file; evaluate writes a folder (scores.json, scores.csv, figures/)",
                         fix="pass a folder name as `output`")
    with output_lock(output, what="evaluated"), atomic_dir(output) as tmp:
        figures = tmp / "figures" if options.plots else None
        outcomes = _run_all(jobs, options, figures, progress)
        skipped = {o.cube: str(o.skipped) for o in outcomes if o.skipped is not None}
        scored = [o for o in outcomes if o.skipped is None]
        if not scored:
            first = next(o.skipped for o in outcomes if o.skipped is not None)
            if len(outcomes) == 1:
                raise first
            raise NoValidDataError(f"none of the {len(outcomes)} cubes has a pixel to score (first: {first.problem})",
                                   fix=first.fix or "pick cubes with clear target observations")
        for cube, reason in skipped.items():
            log.warning("skipped %s: %s", cube, reason)
        report = Report(_pool(scored), {o.cube: o.scores for o in scored}, skipped, options)
        names = [n for o in scored for n in o.figures]
        if figures is not None:
            names += [p.name for p in _pooled_figures(report, figures)]
        report.files = {"json": str(output / "scores.json"), "csv": str(output / "scores.csv"),
                        "figures": [str(output / "figures" / n) for n in sorted(names)],
                        "qgis": [str(output / o.project) for o in scored if o.project]}
        (tmp / "scores.json").write_text(json.dumps(json_ready(report.to_dict()), indent=2, allow_nan=False) + "\n")
        write_table(report, tmp / "scores.csv")
    return report


def _pooled_figures(report: Report, folder: Path) -> list[Path]:
    written = []
    for name, scores in report.forecasts.items():
        summary = scores.probabilistic
        if not summary:
            continue
        if summary.get("rank_histogram"):
            written.append(plots.rank_histogram(summary["rank_histogram"], folder / f"{safe_name(name)}_rank_histogram.png",
                                                title=f"{name}: rank histogram over {len(scores.cubes)} cube(s)"))
        if summary.get("reliability"):
            written.append(plots.reliability_diagram(summary["reliability"], folder / f"{safe_name(name)}_reliability.png",
                                                     title=f"{name}: reliability of event probabilities"))
    return written


def json_ready(value: object) -> object:
    """Plain JSON: numpy scalars to Python, NaN and infinities (undefined scores) to null."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def table_rows(report: Report) -> list[dict]:
    """Tidy rows: one per (scope, forecast, land cover, metric); scope is a cube name or 'all'."""
    rows: list[dict] = []

    def add(scope: str, scores: Scores) -> None:
        headline = scores.headline
        for metric, value in headline.items():
            if metric not in ("n_pixels", "n_groups"):
                rows.append({"scope": scope, "forecast": scores.forecast, "landcover": "all", "metric": metric,
                             "value": value, "n_pixels": headline["n_pixels"]})
        for lc, values in scores.per_class.items():
            for metric, value in values.items():
                if metric not in ("n_pixels", "n_cubes"):
                    rows.append({"scope": scope, "forecast": scores.forecast, "landcover": lc, "metric": metric,
                                 "value": value, "n_pixels": values["n_pixels"]})
        summary = scores.probabilistic or {}
        for metric in ("crps", "spread", "rmse_ensemble_mean", "spread_skill_ratio"):
            if summary.get(metric) is not None:
                rows.append({"scope": scope, "forecast": scores.forecast, "landcover": "all", "metric": metric,
                             "value": summary[metric], "n_pixels": ""})
        for event, curve in (summary.get("reliability") or {}).items():
            if curve.get("brier") is not None:
                rows.append({"scope": scope, "forecast": scores.forecast, "landcover": "all",
                             "metric": f"brier_{event}", "value": curve["brier"], "n_pixels": ""})
        for metric, value in (scores.outperformance or {}).items():
            if metric != "n_groups":
                rows.append({"scope": scope, "forecast": scores.forecast, "landcover": "all",
                             "metric": f"{metric}_vs_{scores.baseline.forecast}", "value": value, "n_pixels": ""})

    for scores in report.forecasts.values():
        add("all", scores)
    for cube, by_name in sorted(report.per_cube.items()):
        for scores in by_name.values():
            add(cube, scores)
            if scores.baseline is not None and not any(r["scope"] == cube and r["forecast"] == scores.baseline.forecast
                                                       for r in rows):
                add(cube, scores.baseline)
    return rows


def write_table(report: Report, path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["scope", "forecast", "landcover", "metric", "value", "n_pixels"])
        writer.writeheader()
        writer.writerows(table_rows(report))
