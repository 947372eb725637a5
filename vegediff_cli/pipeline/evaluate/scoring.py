"""Score NDVI forecasts against a target cube: GreenEarthNet's metrics, member scores, baselines.

Library entry point (what a benchmark script calls)::

    from vegediff_cli.cube.readers import open_cube
    from vegediff_cli.cube.predictions import read_forecast
    from vegediff_cli.pipeline.evaluate.scoring import score, merge_scores

    target = open_cube("JAS2021_minicube_0_29SND_39.29_-8.56.nc")
    forecast = read_forecast("contextformer/JAS2021_minicube_0_29SND_39.29_-8.56.nc")
    scores = score(target, forecast, baseline="persistence", cube="JAS2021_0_29SND", name="contextformer")
    scores.headline            # {"rmse": 0.208, "nse": -0.461, "r2": 0.423, "abs_bias": ..., "rmse_0_5": ...}
    scores.per_class[40]       # the same for crop (ESA WorldCover 40); 10 forest, 20 shrub, 30 grass
    scores.baseline.headline   # persistence scored on the same pixels
    scores.outperformance      # share of (cube, land cover) groups that beat the baseline, and the gains
    scores.probabilistic       # fair CRPS, spread-skill, rank histogram, reliability (member forecasts)
    merge_scores([...])        # pool many cubes the way GreenEarthNet does

- ``target``: a cube (cube/schema.py): clear-sky NDVI from ``s2_B8A`` and ``s2_B04`` where
  ``valid_mask`` is set, land-cover groups from ``esawc_lc``.
- ``forecast``: ``ndvi_pred (time, y, x)`` (or GreenEarthNet's ``(time, lat, lon)``) and optional
  ``ndvi_member (member, time, y, x)`` on the cube's grid; its dates are the target frames and
  the context is the ``context_frames`` frames before the first of them.
- ``ensemble``: optional ensemble.nc dataset whose ``prob_ndvi_below`` / ``prob_ndvi_drop`` are
  scored for reliability (docs/cube-format.md).
- baselines (persistence, context-mean, climatology) come from pipeline/evaluate/baselines.py and are
  scored by the same code; pass ``baseline=None`` to skip.

Cubes are processed window by window (pipeline/evaluate/windows.py), so tile-sized cubes never sit in
memory whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import xarray as xr

from ...config import CONTEXT_FRAMES
from ...cube.predictions import MEMBER, check_alignment, frame_indices, normalise_forecast
from ...errors import NoValidDataError, UsageError
from ...metrics import aggregate
from ...metrics.deterministic import GREENEARTHNET, QualityRule, high_quality
from ...metrics.probabilistic import EnsembleSums
from ..observed import context_indices, observed_ndvi
from .baselines import baseline_forecast
from .windows import PixelMaps, score_forecast

__all__ = ["EvaluationSettings", "PixelMaps", "Scores", "merge_scores", "score", "score_cube", "spread_and_error"]


@dataclass(frozen=True)
class EvaluationSettings:
    """How forecasts are scored."""

    context_frames: int = CONTEXT_FRAMES  # frames before the first forecast date: baselines, quality rule's context
    quality: QualityRule = GREENEARTHNET  # which pixels count (metrics/deterministic.py)
    seed: int = 0  # random tie-breaking in rank histograms, fixed so reruns agree
    read_values: int = 16_000_000  # float64 values alive while a chunk-aligned window is read (about 128 MB)
    compute_values: int = 16_000_000  # float64 values alive in the arithmetic per row slice (about 128 MB)


@dataclass(frozen=True)
class Scores:
    """Scores of one forecast over one or more cubes; everything else is derived from these sums."""

    forecast: str  # forecast name
    groups: pd.DataFrame  # one row per (cube, landcover): n_pixels and mean pixel scores
    ensemble: EnsembleSums | None = None  # pooled member / probability scores; None for a single forecast
    baseline: Scores | None = None  # the reference forecast scored on the same pixels
    notes: tuple[str, ...] = ()  # caveats a reader must know (no land cover, ...)

    @property
    def cubes(self) -> list[str]:
        return sorted(self.groups["cube"].unique().tolist()) if not self.groups.empty else []

    @property
    def headline(self) -> dict[str, float]:
        """GreenEarthNet's macro average over land-cover groups: rmse, nse, r2, abs_bias, rmse per block."""
        return aggregate.headline(self.groups)

    @property
    def per_class(self) -> dict[int, dict[str, float]]:
        """The same scores per exact esawc_lc value (10 forest, 20 shrub, 30 grass, 40 crop, artefacts)."""
        return aggregate.class_figures(self.groups)

    @property
    def probabilistic(self) -> dict | None:
        return self.ensemble.summary() if self.ensemble is not None else None

    @property
    def outperformance(self) -> dict[str, float] | None:
        if self.baseline is None:
            return None
        return aggregate.outperformance(self.groups, self.baseline.groups)

    def to_dict(self) -> dict:
        """JSON-ready summary (see docs/evaluate.md for every key)."""
        classes = {
            str(lc): {"name": aggregate.CLASS_NAMES.get(lc, "other"), **values} for lc, values in self.per_class.items()
        }
        out = {
            "forecast": self.forecast, "cubes": self.cubes, "headline": self.headline, "classes": classes,
            "probabilistic": self.probabilistic, "baseline": None, "outperformance": None, "notes": list(self.notes),
        }
        if self.baseline is not None:
            out["baseline"] = self.baseline.forecast
            out["outperformance"] = self.outperformance
        return out


def merge_scores(scores: Sequence[Scores]) -> Scores:
    """Pool one forecast's scores over many cubes (group tables stack; ensemble sums add)."""
    if not scores:
        raise ValueError("nothing to merge")
    names = {s.forecast for s in scores}
    if len(names) > 1:
        raise ValueError(f"cannot merge scores of different forecasts {sorted(names)}")
    groups = pd.concat([s.groups for s in scores if not s.groups.empty], ignore_index=True)
    ensembles = [s.ensemble for s in scores if s.ensemble is not None]
    ensemble = None
    for part in ensembles:
        ensemble = part if ensemble is None else ensemble.merge(part)
    baselines = [s.baseline for s in scores if s.baseline is not None]
    baseline = merge_scores(baselines) if len(baselines) == len(scores) else None
    notes = tuple(dict.fromkeys(n for s in scores for n in s.notes))
    return Scores(scores[0].forecast, groups, ensemble, baseline, notes)


def _check_ensemble_members(forecast: xr.Dataset, ensemble: xr.Dataset, *, source: str) -> None:
    declared = ensemble.attrs.get("members")
    if MEMBER in forecast and declared is not None and int(declared) != forecast.sizes["member"]:
        raise UsageError(
            f"{source} summarises {int(declared)} members but the forecast holds {forecast.sizes['member']}",
            fix="pass the ensemble.nc made from this forecast (or re-run `vegediff ensemble`)")


def _score_one(target: xr.Dataset, forecast: xr.Dataset, *, name: str, cube: str, settings: EvaluationSettings,
               ensemble: xr.Dataset | None = None) -> tuple[Scores, PixelMaps]:
    part = score_forecast(target, forecast, cube=cube, name=name, rule=settings.quality,
                          context_frames=settings.context_frames, seed=settings.seed, ensemble=ensemble,
                          read_values=settings.read_values, compute_values=settings.compute_values)
    return Scores(name, part.groups, part.ensemble, None, part.notes), part.maps


def _prepare(forecast: xr.Dataset, target: xr.Dataset, *, source: str) -> xr.Dataset:
    forecast = normalise_forecast(forecast, source=source)
    check_alignment(forecast, target, source=source)
    return forecast


def _require_scored(scores: Scores, *, cube: str, rule: QualityRule) -> None:
    if scores.groups.empty:
        rule_text = "GreenEarthNet's quality rule" if rule == GREENEARTHNET else "the quality rule"
        raise NoValidDataError(
            f"{cube}: no pixel passes {rule_text} (clear target observations on at least half the forecast "
            "dates, 3 clear context frames, vegetation land cover, NDVI > 0, target std > 0.1)",
            fix="the target is too cloudy or bare to score; pick another cube, or score every clear pixel with "
                "`pixels` all-valid")


def score_cube(
    target: xr.Dataset,
    forecasts: dict[str, xr.Dataset],
    *,
    cube: str = "cube",
    baseline: str | None = "persistence",
    ensembles: dict[str, xr.Dataset] | None = None,
    settings: EvaluationSettings = EvaluationSettings(),
) -> tuple[dict[str, Scores], dict[str, PixelMaps], dict[str, xr.Dataset]]:
    """Score several forecasts of one cube and the baseline for their dates.

    Returns (scores by forecast name, each with ``.baseline`` attached; pixel maps by name,
    baseline included; the baseline forecasts by name, for figures).
    """
    if not forecasts:
        raise UsageError("no forecast to score", fix="pass `forecast` FILE")
    if baseline is not None and baseline in forecasts:
        raise UsageError(f"a forecast is named '{baseline}' like the baseline",
                         fix="name it differently with `forecast` NAME=PATH")
    prepared = {name: _prepare(ds, target, source=name) for name, ds in forecasts.items()}
    for name, ds in (ensembles or {}).items():
        check_alignment(ds, target, source=f"{name} ensemble")
        _check_ensemble_members(prepared[name], ds, source=f"{name} ensemble")
    results: dict[str, Scores] = {}
    maps: dict[str, PixelMaps] = {}
    baseline_runs: dict[tuple, tuple[str, Scores]] = {}
    baseline_data: dict[str, xr.Dataset] = {}
    for name, forecast in prepared.items():
        scores, maps[name] = _score_one(target, forecast, name=name, cube=cube, settings=settings,
                                        ensemble=(ensembles or {}).get(name))
        _require_scored(scores, cube=cube, rule=settings.quality)
        if baseline is not None:
            dates = tuple(pd.DatetimeIndex(forecast["time"].values))
            if dates not in baseline_runs:
                reference = baseline_forecast(baseline, target, pd.DatetimeIndex(dates),
                                              context_frames=settings.context_frames)
                label = baseline if not baseline_runs else f"{baseline}-{len(baseline_runs) + 1}"
                base_scores, maps[label] = _score_one(target, reference, name=label, cube=cube, settings=settings)
                baseline_runs[dates], baseline_data[label] = (label, base_scores), reference
            scores = replace(scores, baseline=baseline_runs[dates][1])
        results[name] = scores
    return results, maps, baseline_data


def score(
    target: xr.Dataset,
    forecast: xr.Dataset,
    *,
    baseline: str | None = "persistence",
    ensemble: xr.Dataset | None = None,
    cube: str = "cube",
    name: str = "forecast",
    settings: EvaluationSettings = EvaluationSettings(),
) -> Scores:
    """Score one forecast against its target cube (see the module docstring)."""
    results, _, _ = score_cube(target, {name: forecast}, cube=cube, baseline=baseline,
                               ensembles={name: ensemble} if ensemble is not None else None, settings=settings)
    return results[name]


def spread_and_error(target: xr.Dataset, forecast: xr.Dataset, *, context_frames: int,
                     rule: QualityRule = GREENEARTHNET) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per lead: RMSE of the ensemble mean, spread sqrt((M+1)/M mean var) and sample count, on high-quality pixels."""
    frames = frame_indices(forecast, target)
    context = context_indices(int(frames[0]), context_frames=context_frames)
    observed = observed_ndvi(target, frames)  # (T, H, W)
    landcover = np.asarray(target["esawc_lc"].values, dtype="float64") if "esawc_lc" in target else None
    keep = high_quality(observed, observed_ndvi(target, context), landcover, rule=rule)
    members = np.asarray(forecast[MEMBER].values, dtype="float64")  # (M, T, H, W)
    m = members.shape[0]
    mean, variance = members.mean(axis=0), members.var(axis=0, ddof=1)
    usable = keep[None] & np.isfinite(observed) & np.isfinite(mean)
    count = usable.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        rmse = np.sqrt(np.where(usable, (mean - observed) ** 2, 0.0).sum(axis=(1, 2)) / count)
        spread = np.sqrt((m + 1) / m * np.where(usable, variance, 0.0).sum(axis=(1, 2)) / count)
    return rmse, spread, count
