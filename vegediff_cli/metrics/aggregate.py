"""GreenEarthNet's aggregation: pixel scores -> (cube, land cover) means -> one macro-averaged figure.

The official scorer (``summarize_scores`` in github.com/vitusbenson/greenearthnet ``eval.py``)
groups the high-quality pixels by their *exact* ``esawc_lc`` value, averages each score per
(cube, group), then over cubes per group, then over groups. NSE is averaged as the normalised
NSE and mapped back: NSE = 2 - 1 / mean(1 / (2 - NSE)). R2 is the mean of r^2 and the bias
is averaged as |bias|. Resampling artefacts (25, 35, ...) therefore form small groups of their
own that weigh as much as a real class in the headline figure; per-class figures for 10, 20,
30, 40 are reported beside it.

Outperformance against a baseline follows the same scorer: per (cube, group), the forecast
outperforms when at least three of four gains clear their margins: RMSE lower by > 0.01, NSE
higher by > 0.05, R2 higher by > 0.05, |bias| lower by > 0.01.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

# Mean pixel scores kept per (cube, group). "nse_mean" is the plain mean of per-pixel NSE,
# used only for NSE gains (mean of differences == difference of means on a shared pixel set).
GROUP_SCORES: tuple[str, ...] = ("rmse", "nnse", "nse_mean", "r2", "abs_bias", "direction")
HEADLINE: tuple[str, ...] = ("rmse", "nse", "r2", "abs_bias")
CLASS_NAMES: dict[int, str] = {10: "forest", 20: "shrub", 30: "grass", 40: "crop"}
# (gain column, margin it must exceed): the official "outperformance" criteria.
GAIN_MARGINS: dict[str, float] = {"gain_rmse": 0.01, "gain_nse": 0.05, "gain_r2": 0.05, "gain_abs_bias": 0.01}


class GroupSums:
    """Running per-group sums and counts of pixel scores (one cube, one forecast), fed block by block."""

    def __init__(self) -> None:
        self._sums: pd.DataFrame | None = None
        self._counts: pd.DataFrame | None = None
        self._pixels: pd.Series | None = None

    def add(self, scores: Mapping[str, np.ndarray], groups: np.ndarray, keep: np.ndarray) -> None:
        """Add the pixels where `keep` is true; `groups` holds each pixel's land-cover value."""
        keep = np.asarray(keep, dtype=bool)
        if not keep.any():
            return
        names = {"nse": "nse_mean", **{n: n for n in scores if n in GROUP_SCORES or n.startswith("rmse_")}}
        frame = pd.DataFrame({alias: np.asarray(scores[name], dtype="float64")[keep] for name, alias in names.items()})
        frame["group"] = np.asarray(groups, dtype="float64")[keep]
        grouped = frame.groupby("group")
        sums, counts, pixels = grouped.sum(min_count=0), grouped.count(), grouped.size()
        if self._sums is None:
            self._sums, self._counts, self._pixels = sums, counts, pixels
        else:
            self._sums = self._sums.add(sums, fill_value=0.0)
            self._counts = self._counts.add(counts, fill_value=0)
            self._pixels = self._pixels.add(pixels, fill_value=0)

    def table(self, *, cube: str, forecast: str) -> pd.DataFrame:
        """One row per group: cube, forecast, landcover, n_pixels and the mean of every score."""
        if self._sums is None:
            return pd.DataFrame(columns=["cube", "forecast", "landcover", "n_pixels"])
        with np.errstate(invalid="ignore", divide="ignore"):
            means = self._sums / self._counts.replace(0, np.nan)
        means.insert(0, "n_pixels", self._pixels.astype("int64"))
        if "direction" in self._counts:  # pixels with a scored direction: the headline pools them
            means["direction_n"] = self._counts["direction"].astype("int64")
        means = means.reset_index().rename(columns={"group": "landcover"})
        means.insert(0, "forecast", forecast)
        means.insert(0, "cube", cube)
        return means


def score_columns(groups: pd.DataFrame) -> list[str]:
    """The averaged score columns of a group table (fixed ones, then the per-block RMSEs in order)."""
    blocks = sorted((c for c in groups.columns if c.startswith("rmse_")), key=lambda c: int(c.split("_")[1]))
    return [c for c in GROUP_SCORES if c in groups.columns] + blocks


def per_class(groups: pd.DataFrame) -> pd.DataFrame:
    """Mean over cubes of each (cube, group) mean: one row per land-cover value, NSE restored."""
    columns = score_columns(groups)
    table = groups.groupby("landcover")[columns].mean()
    table["nse"] = 2.0 - 1.0 / table["nnse"]
    table["n_pixels"] = groups.groupby("landcover")["n_pixels"].sum()
    table["n_cubes"] = groups.groupby("landcover")["cube"].nunique()
    return table


def headline(groups: pd.DataFrame) -> dict[str, float]:
    """GreenEarthNet's figure: the mean over land-cover groups of `per_class`, NSE via nnse."""
    if groups.empty:
        return {}
    table = per_class(groups)
    columns = score_columns(groups)
    means = table[columns].mean()
    out = {"rmse": means["rmse"], "nse": 2.0 - 1.0 / means["nnse"], "r2": means["r2"], "abs_bias": means["abs_bias"]}
    out.update({c: means[c] for c in columns if c.startswith("rmse_")})
    out["n_pixels"] = int(table["n_pixels"].sum())
    out["n_groups"] = len(table)
    if "direction_n" in groups and groups["direction_n"].sum() > 0:  # a share of pixels, pooled, not macro-averaged
        scored = groups["direction_n"].fillna(0)
        out["direction"] = float((groups["direction"].fillna(0) * scored).sum() / scored.sum())
        out["direction_pixels"] = int(scored.sum())
    return {k: float(v) if k not in ("n_pixels", "n_groups", "direction_pixels") else v for k, v in out.items()}


def class_figures(groups: pd.DataFrame) -> dict[int, dict[str, float]]:
    """Per-class figures for every land-cover value present (10 forest ... 40 crop, artefacts too)."""
    if groups.empty:
        return {}
    table = per_class(groups)
    keys = ["rmse", "nse", "r2", "abs_bias", *[c for c in score_columns(groups) if c.startswith("rmse_")]]
    return {
        int(lc): {**{k: float(row[k]) for k in keys}, "n_pixels": int(row["n_pixels"]), "n_cubes": int(row["n_cubes"])}
        for lc, row in table.iterrows()
    }


def gains(model: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """Per (cube, group) gains of `model` over `baseline` (positive = model better) and the verdict."""
    keys = ["cube", "landcover"]
    joined = model.merge(baseline, on=keys, suffixes=("", "_base"), how="inner")
    out = joined[keys].copy()
    out["gain_rmse"] = joined["rmse_base"] - joined["rmse"]
    out["gain_nse"] = joined["nse_mean"] - joined["nse_mean_base"]
    out["gain_r2"] = joined["r2"] - joined["r2_base"]
    out["gain_abs_bias"] = joined["abs_bias_base"] - joined["abs_bias"]
    cleared = sum((out[name] > margin).astype(int) for name, margin in GAIN_MARGINS.items())
    out["outperforms"] = cleared > 2
    return out


def outperformance(model: pd.DataFrame, baseline: pd.DataFrame) -> dict[str, float]:
    """Share of (cube, group) pairs where the model outperforms, and gains macro-averaged like the scores."""
    table = gains(model, baseline)
    if table.empty:
        return {}
    by_class = table.groupby("landcover")[list(GAIN_MARGINS)].mean().mean()
    return {"outperformance": float(table["outperforms"].mean()), **{k: float(v) for k, v in by_class.items()},
            "n_groups": len(table)}
