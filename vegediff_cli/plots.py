"""Figures for `vegediff evaluate`: arrays in, PNG out (matplotlib Agg, no pyplot state).

Every figure is a ``matplotlib.figure.Figure`` drawn on its own Agg canvas, so nothing leaks
between calls, threads or worker processes. Maps use the cube's coordinates on their axes,
dates are written YYYY-MM-DD, colour bars carry their quantity and unit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)  # no display needed; a no-op when a backend is already chosen

import matplotlib.dates as mdates  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

NDVI_RANGE = (0.0, 1.0)  # vegetation NDVI; lower values are drawn in the colour of 0
NDVI_CMAP = "RdYlGn"
ERROR_CMAP = "magma_r"
NO_DATA_COLOUR = "0.85"  # light grey: cloud, no clear observation, or pixel not scored
DPI = 110


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    FigureCanvasAgg(fig)
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    return path


def _cmap(name: str):
    return matplotlib.colormaps[name].with_extremes(bad=NO_DATA_COLOUR)


def _axis_labels(geographic: bool, crs: str | None) -> tuple[str, str]:
    if geographic:
        return "longitude (°E)", "latitude (°N)"
    unit = f"m, {crs}" if crs else "m"
    return f"x ({unit})", f"y ({unit})"


def _extent(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """imshow extent from pixel-centre coordinates (y descending)."""
    dx = (x[-1] - x[0]) / max(1, x.size - 1) if x.size > 1 else 1.0
    dy = (y[0] - y[-1]) / max(1, y.size - 1) if y.size > 1 else 1.0
    return (x[0] - dx / 2, x[-1] + dx / 2, y[-1] - dy / 2, y[0] + dy / 2)


def _style_map_axes(ax, y: np.ndarray, geographic: bool) -> None:
    """Few ticks; on geographic grids, stretch latitude so pixels look square on the ground."""
    ax.xaxis.set_major_locator(MaxNLocator(3))
    ax.yaxis.set_major_locator(MaxNLocator(4))
    if geographic:
        ax.set_aspect(1.0 / max(0.05, math.cos(math.radians(float(np.mean(y))))))


@dataclass(frozen=True)
class MapGrid:
    """Where map panels sit: pixel-centre coordinates and how to label them."""

    x: np.ndarray  # (W,) pixel-centre x, ascending
    y: np.ndarray  # (H,) pixel-centre y, descending
    geographic: bool = False  # degrees (lon/lat) rather than metres
    crs: str | None = None  # named in the axis labels of projected grids


def ndvi_maps(
    observed: np.ndarray,
    predicted: np.ndarray,
    dates: Sequence[pd.Timestamp],
    path: str | os.PathLike,
    *,
    grid: MapGrid,
    title: str,
    columns: int = 5,
) -> Path:
    """Observed above predicted NDVI for every forecast step; observed and predicted are (T, H, W)."""
    steps = observed.shape[0]
    blocks = math.ceil(steps / columns)
    height = 4.4 * blocks + 1.0
    fig = Figure(figsize=(2.3 * columns + 1.4, height))  # no layout engine: 40 panels would take seconds
    panels = fig.subplots(2 * blocks, columns, squeeze=False, sharex=True, sharey=True)
    fig.subplots_adjust(left=0.09, right=0.86, top=1 - 1.2 / height, bottom=0.5 / height, hspace=0.4, wspace=0.12)
    extent = _extent(grid.x, grid.y)
    xlabel, ylabel = _axis_labels(grid.geographic, grid.crs)
    image = None
    for block in range(blocks):
        for col in range(columns):
            step = block * columns + col
            for row, (kind, values) in enumerate((("observed", observed), ("predicted", predicted))):
                ax = panels[2 * block + row, col]
                if step >= steps:
                    ax.set_visible(False)
                    continue
                image = ax.imshow(np.ma.masked_invalid(values[step]), cmap=_cmap(NDVI_CMAP), vmin=NDVI_RANGE[0],
                                  vmax=NDVI_RANGE[1], extent=extent, interpolation="nearest")
                ax.set_title(f"{kind} {pd.Timestamp(dates[step]):%Y-%m-%d}", fontsize=8)
                _style_map_axes(ax, grid.y, grid.geographic)
                ax.tick_params(labelsize=6)
                if col == 0:
                    ax.set_ylabel(ylabel, fontsize=7)
                if 2 * block + row == 2 * blocks - 1:
                    ax.set_xlabel(xlabel, fontsize=7)
    if image is not None:
        fig.colorbar(image, cax=fig.add_axes((0.89, 0.35, 0.02, 0.3)), extend="min", label="NDVI")
    fig.suptitle(f"{title}\nobserved (grey: no clear observation) and predicted NDVI per forecast step", y=1 - 0.15 / height,
                 va="top")
    return _save(fig, path)


def rmse_maps(
    rmse: Mapping[str, np.ndarray],
    scored: np.ndarray,
    path: str | os.PathLike,
    *,
    grid: MapGrid,
    title: str,
) -> Path:
    """Per-pixel RMSE over the forecast steps, one panel per forecast, one colour scale."""
    names = list(rmse)
    shown = {name: np.where(scored, rmse[name], np.nan) for name in names}
    finite = np.concatenate([v[np.isfinite(v)] for v in shown.values()]) if names else np.array([])
    top = float(np.percentile(finite, 98)) if finite.size else 0.3
    fig = Figure(figsize=(4.4 * len(names) + 1.0, 4.6), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False, sharex=True, sharey=True)[0]
    xlabel, ylabel = _axis_labels(grid.geographic, grid.crs)
    image = None
    for ax, name in zip(axes, names, strict=True):
        values = shown[name]
        mean = np.nanmean(values) if np.isfinite(values).any() else float("nan")
        image = ax.imshow(np.ma.masked_invalid(values), cmap=_cmap(ERROR_CMAP), vmin=0.0, vmax=max(top, 1e-3),
                          extent=_extent(grid.x, grid.y), interpolation="nearest")
        ax.set_title(f"{name}: mean pixel RMSE {mean:.3f}", fontsize=9)
        _style_map_axes(ax, grid.y, grid.geographic)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(ylabel, fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.85, extend="max", label="RMSE (NDVI)")
    fig.suptitle(f"{title}\nper-pixel RMSE over the forecast steps (grey: not scored by the quality rule)", fontsize=10)
    return _save(fig, path)


def time_series(
    observed_dates: Sequence[pd.Timestamp],
    observed: np.ndarray,
    forecast_dates: Sequence[pd.Timestamp],
    forecasts: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    labels: Sequence[str],
    first_forecast: pd.Timestamp,
    band: np.ndarray | None = None,
    band_label: str = "ensemble 10-90 %",
    title: str,
) -> Path:
    """NDVI at sample pixels: observed (P, T_obs) dots, each forecast (P, T) a line, band (P, T, 2) shaded."""
    pixels = observed.shape[0]
    fig = Figure(figsize=(10, 2.4 * pixels + 0.8), layout="constrained")
    axes = fig.subplots(pixels, 1, squeeze=False, sharex=True)[:, 0]
    obs_dates = pd.DatetimeIndex(observed_dates)
    fc_dates = pd.DatetimeIndex(forecast_dates)
    for p, ax in enumerate(axes):
        if band is not None:
            ax.fill_between(fc_dates, band[p, :, 0], band[p, :, 1], color="tab:blue", alpha=0.25, label=band_label)
        for i, (name, values) in enumerate(forecasts.items()):
            style = "-" if i == 0 else "--"
            ax.plot(fc_dates, values[p], style, lw=1.6 if i == 0 else 1.2, label=name)
        ax.plot(obs_dates, observed[p], "o", color="black", ms=4, label="observed (clear)")
        ax.axvline(first_forecast, color="0.5", lw=0.8, ls=":")
        ax.set_ylabel("NDVI")
        ax.set_ylim(-0.1, 1.0)
        ax.set_title(labels[p], fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncols=4, loc="lower left")
    axes[-1].set_xlabel("date (dotted line: first forecast date)")
    for label in axes[-1].get_xticklabels():
        label.set_rotation(30)
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    fig.suptitle(title)
    return _save(fig, path)


def rank_histogram(counts: Sequence[int], path: str | os.PathLike, *, title: str) -> Path:
    """Relative frequency of the observation's rank among M members (M + 1 bins), flat line = calibrated."""
    counts = np.asarray(counts, dtype="float64")
    freq = counts / counts.sum() if counts.sum() else counts
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    ax.bar(np.arange(counts.size), freq, color="tab:blue", edgecolor="black", lw=0.5)
    ax.axhline(1.0 / counts.size, color="tab:red", ls="--", label="calibrated (uniform)")
    ax.set_xlabel(f"rank of the observation among {counts.size - 1} members")
    ax.set_ylabel("relative frequency")
    ax.set_xticks(np.arange(counts.size))
    ax.legend(fontsize=8)
    ax.set_title(f"{title}\n{int(counts.sum())} clear (pixel, date) pairs", fontsize=10)
    return _save(fig, path)


def reliability_diagram(curves: Mapping[str, dict], path: str | os.PathLike, *, title: str) -> Path:
    """Observed frequency against forecast probability per event (summaries from ReliabilityCounts)."""
    fig = Figure(figsize=(6.0, 5.4), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", label="perfect reliability")
    for name, curve in curves.items():
        bins = curve.get("bins", [])
        if not bins:
            continue
        brier = curve.get("brier")
        ax.plot([b["mean_probability"] for b in bins], [b["observed_frequency"] for b in bins], "o-", ms=4,
                label=f"{name} (Brier {brier:.3f})" if brier is not None else name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("forecast probability")
    ax.set_ylabel("observed frequency")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
