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
from pathlib import Path

import netCDF4

from ..errors import InputNotFoundError, UsageError
from ..workdir import TileFiles
from .evaluate_run import CubeJob

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
            raise InputNotFoundError(f"{path} does not exist", fix="check the --input path")
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
        raise UsageError("no forecast given", fix="pass --forecast FILE (or a folder of predictions named like the cubes)")
    parsed = [parse_forecast(text) for text in forecasts]
    named: list[tuple[str, Path]] = []
    for name, path in parsed:
        if not path.exists():
            raise InputNotFoundError(f"forecast {path} does not exist",
                                     fix="run `vegediff forecast` first, or check the --forecast path")
        if path.is_file() and len(targets) > 1:
            raise UsageError(f"--forecast {path} is one file but {len(targets)} cubes are evaluated",
                             fix="pass a folder of predictions named like the cube files")
        named.append((name or _default_name(path, targets), path))
    labels = [n for n, _ in named]
    for label in labels:
        if labels.count(label) > 1 or label == baseline:
            clash = "the baseline" if label == baseline else "another forecast"
            raise UsageError(f"forecast name '{label}' is also the name of {clash}",
                             fix="name each forecast with --forecast NAME=PATH")
    if ensemble is not None:
        if not ensemble.is_file():
            raise InputNotFoundError(f"ensemble {ensemble} does not exist", fix="run `vegediff ensemble` first")
        if len(targets) != 1:
            raise UsageError("--ensemble works with one cube", fix="evaluate the cube with its ensemble.nc on its own")
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


def tile_job(workdir: Path, tile: str, forecasts: Sequence[str], *, ensemble: Path | None,
             baseline: str | None) -> tuple[CubeJob, Path]:
    """`--tile`: cube.nc against forecast.nc (or the given forecasts), ensemble.nc when present; output evaluation/."""
    files = TileFiles.of(workdir, tile)
    if not files.cube.exists():
        raise InputNotFoundError(f"{files.cube} does not exist", fix=f"run `vegediff prepare --tile {tile}` first")
    explicit = bool(forecasts)
    if not explicit:
        if not files.forecast.exists():
            raise InputNotFoundError(f"{files.forecast} does not exist",
                                     fix=f"run `vegediff forecast --tile {tile}` first, or pass --forecast FILE")
        forecasts = [f"forecast={files.forecast}"]
    if ensemble is None and not explicit and files.ensemble.exists():  # ensemble.nc belongs to forecast.nc
        ensemble = files.ensemble
    job = plan_jobs([files.cube], forecasts, ensemble=ensemble, baseline=baseline)[0]
    return job, files.evaluation
