"""Working-directory layout: the steps find each other's files by MGRS tile name.

``<workdir>/<TILE>/`` holds, in pipeline order::

    s2_raw.nc          fetch    -> raw Sentinel-2 cube (reflectance, SCL)
    cube.nc            prepare  -> analysis-ready cube (+ meteorology, static layers, mask)
    forecast.nc        forecast -> ndvi_pred, predicted bands, members
    forecast_cogs/     forecast -> one NDVI COG per forecast step
    ensemble.nc        ensemble -> mean, spread, quantiles, probabilities
    ensemble_cogs/     ensemble -> one COG per statistic and step
    evaluation/        evaluate -> scores.json, scores.csv, figures
    history/<start>/   forecast -> earlier forecast.nc (+ its ensemble.nc), for evaluate --tile

The workdir is ``--workdir``, else ``$VEGEDIFF_WORKDIR``, else ``./vegediff-work``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputNotFoundError, UsageError
from .geo import normalise_tile

FILE_NAMES = {"raw": "s2_raw.nc", "cube": "cube.nc", "forecast": "forecast.nc", "ensemble": "ensemble.nc"}
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")

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

    @property
    def history(self) -> Path:
        """Earlier forecasts (history/<start>/forecast.nc, ensemble.nc), kept for `evaluate --tile`."""
        return self.root / "history"


def resolve_input(explicit: Path | None, tile: str | None, workdir: Path, step: str, *, made_by: str) -> Path:
    """The input of a step: `explicit` if given, else the tile's file from the previous step."""
    if explicit is not None:
        check_encodable(explicit, role="input")
        return explicit
    if tile is None:
        raise UsageError("no input given", fix="pass `tile` TILE (uses the working directory) or `input` PATH")
    path = getattr(TileFiles.of(workdir, tile), step)
    if not path.exists():
        raise InputNotFoundError(
            f"{path} does not exist",
            fix=f"run `vegediff {made_by} --tile {normalise_tile(tile)}` first, or pass `input` PATH",
        )
    return path


def check_encodable(path: Path | None, *, role: str = "path") -> None:
    """UsageError for a file name that is not valid UTF-8: the NetCDF library cannot open or create it."""
    if path is None:
        return
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = str(path).encode("utf-8", "surrogateescape").decode("latin-1")
        raise UsageError(f"the {role} {shown!r} is not a valid UTF-8 file name, which NetCDF cannot open or create",
                         fix="use a UTF-8 name (rename the file or folder, e.g. with `mv` or `convmv`)") from None


def same_file(a: Path | None, b: Path | None) -> bool:
    """True when two paths name the same file (links and relative paths included)."""
    if a is None or b is None:
        return False
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output(path: Path, step: str, *, inputs: tuple[Path | None, ...] = ()) -> Path:
    """An explicit --output made safe: an existing folder gets the step's usual file name inside it;
    a name that is not NetCDF, or the step's own input, is refused (it would be overwritten)."""
    check_encodable(path, role="output")
    if path.is_dir():
        path = path / FILE_NAMES[step]
    elif path.suffix.lower() not in NETCDF_SUFFIXES:
        raise UsageError(f"`output` {path} is not a NetCDF file name (this step writes NetCDF)",
                         fix=f"use e.g. `output` {path.with_suffix('.nc')}, or an existing folder "
                             f"({FILE_NAMES[step]} is written inside it)")
    for source in inputs:
        if same_file(path, source):
            raise UsageError(f"`output` {path} is the step's input {source}: it would be overwritten",
                             fix="write the result to another file")
    return path


def resolve_output(explicit: Path | None, tile: str | None, workdir: Path, step: str, *,
                   inputs: tuple[Path | None, ...] = ()) -> Path:
    if explicit is not None:
        return check_output(explicit, step, inputs=inputs)
    if tile is None:
        raise UsageError("no output given", fix="pass `tile` TILE (uses the working directory) or `output` PATH")
    check_encodable(workdir, role="working directory")
    return getattr(TileFiles.of(workdir, tile), step)
