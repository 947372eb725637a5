"""Working-directory layout: the steps find each other's files by MGRS tile name.

``<workdir>/<TILE>/`` holds, in pipeline order::

    s2_raw.nc          fetch    -> raw Sentinel-2 cube (reflectance, SCL)
    cube.nc            prepare  -> analysis-ready cube (+ meteorology, static layers, mask)
    forecast.nc        forecast -> ndvi_pred, predicted bands, members
    forecast_cogs/     forecast -> one NDVI COG per forecast step
    ensemble.nc        ensemble -> mean, spread, quantiles, probabilities
    ensemble_cogs/     ensemble -> one COG per statistic and step
    evaluation/        evaluate -> scores.json, scores.csv, figures

The workdir is ``--workdir``, else ``$VEGEDIFF_WORKDIR``, else ``./vegediff-work``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputNotFoundError, UsageError
from .geo import normalise_tile

ENV_WORKDIR = "VEGEDIFF_WORKDIR"
DEFAULT_WORKDIR = "vegediff-work"


def default_workdir() -> Path:
    return Path(os.environ.get(ENV_WORKDIR, DEFAULT_WORKDIR))


@dataclass(frozen=True)
class TileFiles:
    """Where each step of one tile reads and writes."""

    root: Path

    @classmethod
    def of(cls, workdir: Path, tile: str) -> TileFiles:
        return cls(Path(workdir) / normalise_tile(tile))

    @property
    def raw(self) -> Path:
        return self.root / "s2_raw.nc"

    @property
    def cube(self) -> Path:
        return self.root / "cube.nc"

    @property
    def forecast(self) -> Path:
        return self.root / "forecast.nc"

    @property
    def forecast_cogs(self) -> Path:
        return self.root / "forecast_cogs"

    @property
    def ensemble(self) -> Path:
        return self.root / "ensemble.nc"

    @property
    def ensemble_cogs(self) -> Path:
        return self.root / "ensemble_cogs"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"


def resolve_input(explicit: Path | None, tile: str | None, workdir: Path, step: str, *, made_by: str) -> Path:
    """The input of a step: `explicit` if given, else the tile's file from the previous step."""
    if explicit is not None:
        return explicit
    if tile is None:
        raise UsageError("no input given", fix="pass --tile TILE (uses the working directory) or --input PATH")
    path = getattr(TileFiles.of(workdir, tile), step)
    if not path.exists():
        raise InputNotFoundError(
            f"{path} does not exist",
            fix=f"run `vegediff {made_by} --tile {normalise_tile(tile)}` first, or pass --input PATH",
        )
    return path


def resolve_output(explicit: Path | None, tile: str | None, workdir: Path, step: str) -> Path:
    if explicit is not None:
        return explicit
    if tile is None:
        raise UsageError("no output given", fix="pass --tile TILE (uses the working directory) or --output PATH")
    return getattr(TileFiles.of(workdir, tile), step)
