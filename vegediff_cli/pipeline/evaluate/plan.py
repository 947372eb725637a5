"""Pair target cubes with forecast files before anything is read (paths only, fails fast).

- ``--input`` is a cube file or a folder of cubes (``*.nc`` and ``*.npz``, searched recursively);
- ``--forecast [NAME=]PATH`` is a forecast file (only with a single cube) or a folder of prediction
  files named like the cube files, in any subfolder (GreenEarthNet's layout:
  ``preds/<region>/<cube file name>``). Without NAME, a folder is named after itself and a file
  after its stem, or after its folder when the stem is the cube's (a GreenEarthNet prediction).
- ``--ensemble PATH`` (one cube only) goes with the first forecast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import netCDF4
import pandas as pd
import xarray as xr

from ...cube import provenance
from ...errors import CorruptInputError, InputNotFoundError, StaleInputError, UsageError
from ...geo import normalise_tile
from ...workdir import TileFiles
from .run import CubeJob

CUBE_SUFFIXES = (".nc", ".npz")


def parse_forecast(text: str) -> tuple[str | None, Path]:
    """'NAME=PATH' -> (NAME, PATH); 'PATH' -> (None, PATH)."""
    name, sep, path = text.partition("=")
    if sep and name and "/" not in name and not Path(text).exists():
        return name, Path(path)
    return None, Path(text)


def _holds_bands(path: Path) -> bool:
    """False for NetCDF files without reflectance (predictions, ensembles) found in a folder of cubes."""
    if path.suffix != ".nc":
        return True
    try:
        with netCDF4.Dataset(path) as handle:  # the header only
            return "s2_B04" in handle.variables
    except OSError:
        return True  # unreadable: open_cube reports it with the right exit code


def find_targets(inputs: Sequence[Path]) -> list[Path]:
    """Every cube named by --input, folders expanded (recursively), in a stable order.

    Inside folders, NetCDF files without reflectance bands (prediction and ensemble files) are
    skipped, so ``--input greenearthnet/ --forecast greenearthnet/reference_predictions/contextformer/``
    works as one expects.
    """
    targets: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in CUBE_SUFFIXES and p.is_file()
                           and not p.name.startswith(".") and _holds_bands(p))
            # EarthNet2021 samples come as context/ + target/ pairs: the context file stands for the sample
            found = [p for p in found if not (p.suffix == ".npz" and p.parent.name == "target")]
            if not found:
                raise InputNotFoundError(f"{path} holds no cube (*.nc with s2_B04, *.npz)",
                                         fix="pass the folder of target cubes")
            targets.extend(found)
        elif path.exists():
            targets.append(path)
        else:
            raise InputNotFoundError(f"{path} does not exist", fix="check the `input` path")
    names = [t.stem for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"two target cubes share the name {duplicates[0]}",
                         fix="evaluate them in separate runs; results are keyed by cube file name")
    return targets


def _default_name(path: Path, targets: Sequence[Path]) -> str:
    if path.is_dir():
        return path.name
    if len(targets) == 1 and path.stem == targets[0].stem:
        return path.parent.name or path.stem
    return path.stem


def _match(folder: Path, target: Path) -> Path | None:
    direct = folder / target.name
    if direct.is_file():
        return direct
    candidates = sorted(folder.rglob(target.name)) or sorted(folder.rglob(f"{target.stem}.nc"))
    return candidates[0] if candidates else None


def plan_jobs(
    targets: Sequence[Path],
    forecasts: Sequence[str],
    *,
    ensemble: Path | None = None,
    baseline: str | None = None,
) -> list[CubeJob]:
    """One CubeJob per target with its forecast file per named forecast."""
    if not forecasts:
        raise UsageError("no forecast given", fix="pass `forecast` FILE (or a folder of predictions named like the cubes)")
    parsed = [parse_forecast(text) for text in forecasts]
    named: list[tuple[str, Path]] = []
    for name, path in parsed:
        if not path.exists():
            raise InputNotFoundError(f"forecast {path} does not exist",
                                     fix="run `vegediff forecast` first, or check the `forecast` path")
        if path.is_file() and len(targets) > 1:
            raise UsageError(f"`forecast` {path} is one file but {len(targets)} cubes are evaluated",
                             fix="pass a folder of predictions named like the cube files")
        named.append((name or _default_name(path, targets), path))
    labels = [n for n, _ in named]
    for label in labels:
        if labels.count(label) > 1 or label == baseline:
            clash = "the baseline" if label == baseline else "another forecast"
            raise UsageError(f"forecast name '{label}' is also the name of {clash}",
                             fix="name each forecast with `forecast` NAME=PATH")
    if ensemble is not None:
        if not ensemble.is_file():
            raise InputNotFoundError(f"ensemble {ensemble} does not exist", fix="run `vegediff ensemble` first")
        if len(targets) != 1:
            raise UsageError("`ensemble` works with one cube", fix="evaluate the cube with its ensemble.nc on its own")
    jobs = []
    for target in targets:
        pairs = []
        for label, path in named:
            found = path if path.is_file() else _match(path, target)
            if found is None:
                missing = [t.name for t in targets if _match(path, t) is None]
                raise InputNotFoundError(
                    f"{label}: no prediction for {len(missing)} of {len(targets)} cubes in {path} (first: {missing[0]})",
                    fix="predictions must be named like the cube files; pass only the cubes you have predictions for")
            pairs.append((label, found))
        jobs.append(CubeJob(target, tuple(pairs), ensemble))
    return jobs


@dataclass
class TilePlan:
    """What `evaluate --tile` scores: a job, or why nothing can be scored yet."""

    job: CubeJob | None  # None: no forecast of the tile has an observed date yet
    output: Path  # <workdir>/<TILE>/evaluation
    status: dict = field(default_factory=dict)  # "scored"/"nothing_scorable", forecast file, dates scored/pending


def _frame_dates(path: Path) -> pd.DatetimeIndex:
    """The time axis of a NetCDF file, from its header and time variable only."""
    try:
        with xr.open_dataset(path, engine="netcdf4", decode_timedelta=False) as ds:
            return pd.DatetimeIndex(ds["time"].values).normalize()
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise CorruptInputError(f"{path} has no readable time axis ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})",
                                fix="re-run the step that made it") from exc


def tile_candidates(files: TileFiles) -> list[tuple[Path, Path]]:
    """(forecast.nc, ensemble.nc) of the tile, newest first: the current forecast, then history/<start>/."""
    found = [(files.forecast, files.ensemble)] if files.forecast.exists() else []
    if files.history.is_dir():
        for folder in sorted((p for p in files.history.iterdir() if p.is_dir()), reverse=True):
            if (folder / "forecast.nc").is_file():
                found.append((folder / "forecast.nc", folder / "ensemble.nc"))
    return found


def tile_job(workdir: Path, tile: str, forecasts: Sequence[str], *, ensemble: Path | None,
             baseline: str | None) -> TilePlan:
    """`--tile`: cube.nc against the latest forecast with observed dates (forecast.nc or history/<start>/),
    scored on those dates, with its ensemble.nc when present; output evaluation/.

    With explicit --forecast files, they are scored as given (every date must be a cube frame).
    """
    files = TileFiles.of(workdir, tile)
    if not files.cube.exists():
        raise InputNotFoundError(f"{files.cube} does not exist", fix=f"run `vegediff prepare --tile {tile}` first")
    if forecasts:
        job = plan_jobs([files.cube], forecasts, ensemble=ensemble, baseline=baseline)[0]
        return TilePlan(job, files.evaluation, {"status": "scored"})
    candidates = tile_candidates(files)
    if not candidates:
        raise InputNotFoundError(f"{files.forecast} does not exist",
                                 fix=f"run `vegediff forecast --tile {tile}` first, or pass `forecast` FILE")
    frames = _frame_dates(files.cube)
    for forecast, own_ensemble in candidates:
        dates = _frame_dates(forecast)
        observed = dates[dates.isin(frames)]
        if len(observed) == 0:
            continue
        chosen = ensemble if ensemble is not None else own_ensemble if own_ensemble.is_file() else None
        if chosen is not None and provenance.stale_input(chosen, "forecast", forecast):
            raise StaleInputError(f"{chosen} was made from another forecast than {forecast}",
                                  fix=f"run `vegediff ensemble --tile {tile}` first (or pass `ensemble` FILE)")
        job = plan_jobs([files.cube], [f"forecast={forecast}"], ensemble=chosen, baseline=baseline)[0]
        pending = dates[~dates.isin(frames)]
        job = CubeJob(job.target, job.forecasts, job.ensemble,
                      tuple(f"{d:%Y-%m-%d}" for d in observed) if len(pending) else None)
        return TilePlan(job, files.evaluation, {
            "status": "scored", "forecast_file": str(forecast), "ensemble_file": str(chosen) if chosen else None,
            "dates_scored": [f"{d:%Y-%m-%d}" for d in observed], "dates_pending": [f"{d:%Y-%m-%d}" for d in pending]})
    first = _frame_dates(candidates[0][0])
    reason = (f"no forecast of tile {normalise_tile(tile)} has an observed date yet: {candidates[0][0].name} covers "
              f"{first[0]:%Y-%m-%d} .. {first[-1]:%Y-%m-%d} and the cube ends {frames[-1]:%Y-%m-%d}")
    return TilePlan(None, files.evaluation, {
        "status": "nothing_scorable", "reason": reason, "forecast_file": str(candidates[0][0]),
        "forecast_dates": [f"{d:%Y-%m-%d}" for d in first], "cube_last_date": f"{frames[-1]:%Y-%m-%d}"})
