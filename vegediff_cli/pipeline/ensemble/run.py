"""`ensemble`: forecast.nc members -> ensemble.nc (+ COGs), streamed in bands of rows.

The statistics are pipeline/ensemble/statistics.py's; this module reads members block by block, writes
``ensemble.nc`` (docs/cube-format.md) with the same grid as the forecast, and exports one COG per
statistic and step, named ``{variable}_{YYYY-MM-DD}.tif`` and
``prob_ndvi_below_{threshold:.2f}_{YYYY-MM-DD}.tif`` / ``prob_ndvi_drop_{drop:.2f}_{...}.tif``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ... import __version__
from ...atomic import output_lock
from ...config import DEFAULT_BELOW, DEFAULT_DROP
from ...cube import provenance
from ...cube.cog import export_cogs
from ...cube.netcdf_stream import VariableSpec, float_var, grid_writer, open_grid, small_chunk_cache
from ...cube.readers import open_netcdf
from ...errors import CorruptInputError, MissingVariableError, UsageError
from ...progress import ProgressFactory, no_progress
from ...qgis.folder import run_title, write_folder_project
from ...resources import check_ensemble_memory
from ..forecast.outputs import default_cogs_folder, remove_stale_cogs
from ..forecast.run import LAST_CLEAR, MEMBER, PRED
from .statistics import QUANTILES, check_levels, member_statistics, prob_below, prob_drop

log = logging.getLogger("vegediff.ensemble")
STATISTICS = ("ndvi_mean", "ndvi_std", *QUANTILES)
BELOW, DROP = "prob_ndvi_below", "prob_ndvi_drop"
PROVENANCE = ("weights", "weights_sha256", "model", "sampler", "steps", "guidance_scale", "seed", "meteo_source",
              "meteo_source_per_step", "forecast_start", "context_dates", "input", "conditioned",
              "training_domain", "training_domain_note")


@dataclass(frozen=True)
class EnsembleSettings:
    below: tuple[float, ...] = DEFAULT_BELOW  # NDVI thresholds for P(NDVI < threshold)
    drop: tuple[float, ...] = DEFAULT_DROP  # NDVI losses for P(last clear NDVI - NDVI > drop)
    memory_mb: int = 512  # budget for one band of members and statistics


@dataclass
class EnsembleSummary:
    output: Path
    cogs: Path | None
    members: int
    below: tuple[float, ...]
    drop: tuple[float, ...]
    cog_files: int
    up_to_date: bool = False  # the existing output was made from the same forecast and levels: kept
    training_domain: str = "unknown"  # the forecast's: inside / outside / unknown (model/domain.py)

    def as_dict(self) -> dict:
        return {"output": str(self.output), "cogs": str(self.cogs) if self.cogs else None, "members": self.members,
                "below": list(self.below), "drop": list(self.drop), "cog_files": self.cog_files,
                "up_to_date": self.up_to_date, "training_domain": self.training_domain}


def forecast_members(path: str | os.PathLike) -> int:
    """Members held by a forecast file (1 when it has no ndvi_member); checks it is a forecast."""
    ds = open_netcdf(path)
    try:
        if PRED not in ds:
            raise MissingVariableError(f"{path} has no {PRED}: it is not a forecast",
                                       fix="pass a forecast.nc from `vegediff forecast`, or the cube with `members` N")
        return int(ds.sizes["member"]) if MEMBER in ds else 1
    finally:
        ds.close()


def output_variables(settings: EnsembleSettings, *, with_drop: bool) -> list[VariableSpec]:
    grid = ("time", "y", "x")
    names = {"ndvi_mean": "ensemble-mean NDVI", "ndvi_std": "ensemble standard deviation of NDVI (ddof 1)",
             **{name: f"{int(round(q * 100))}th percentile of the NDVI members" for name, q in QUANTILES.items()}}
    specs = [float_var(name, grid, names[name]) for name in STATISTICS]
    specs.append(float_var(BELOW, ("threshold", *grid), "probability that NDVI falls below the threshold"))
    if with_drop:
        specs.append(float_var(DROP, ("drop", *grid),
                               "probability that NDVI drops by more than `drop` below the last clear context NDVI"))
    return specs


def _rows_per_block(members: int, steps: int, width: int, levels: int, budget_mb: int) -> int:
    per_row = 4 * width * steps * (3 * members + len(STATISTICS) + levels)  # members, temporaries, outputs
    return max(1, int(budget_mb * 2**20 // max(1, per_row)))


def summarise_forecast(
    forecast: str | os.PathLike,
    output: str | os.PathLike,
    *,
    settings: EnsembleSettings = EnsembleSettings(),
    cogs: str | os.PathLike | None = None,
    progress: ProgressFactory = no_progress,
    force: bool = False,
) -> EnsembleSummary:
    """Statistics of every pixel's members, written to `output` (and COGs to `cogs`).

    Skipped when `output` was already made from this very forecast with the same levels (unless
    `force`); the output is locked against concurrent runs while it is written.
    """
    output, cogs = Path(output), Path(cogs) if cogs is not None else None
    with output_lock(output, *([cogs] if cogs is not None else []), what="summarised"):
        summary = _summarise(Path(forecast), output, settings=settings, cogs=cogs, progress=progress, force=force)
    if cogs is None:
        remove_stale_cogs(default_cogs_folder(output), output)
    return summary


def _summarise(forecast: Path, output: Path, *, settings: EnsembleSettings, cogs: Path | None,
               progress: ProgressFactory, force: bool) -> EnsembleSummary:
    try:
        below = check_levels(settings.below, option="`below`", low=-1.0, high=1.0)
        drop = check_levels(settings.drop, option="`drop`", low=0.0, high=2.0)
    except ValueError as exc:
        raise UsageError(str(exc), fix="NDVI thresholds lie in -1..1 and drops in 0..2") from exc
    members = forecast_members(forecast)
    made = provenance.record("ensemble", {"forecast": forecast}, {"below": list(below), "drop": list(drop)})
    if not force and provenance.up_to_date(output, made, cogs=cogs):
        log.info("%s is up to date (made from this forecast with the same levels); `force` redoes it", output)
        return EnsembleSummary(output, cogs, members, below, drop, len(list(cogs.glob("*.tif"))) if cogs else 0,
                               up_to_date=True, training_domain=_domain_status(output))
    if members < 2:
        raise UsageError(f"{forecast} holds {members} member; ensemble statistics need at least 2",
                         fix="re-run `vegediff forecast --members 16`, or pass the cube with `--members 16`")
    with small_chunk_cache():
        ds = open_grid(forecast)
    try:
        if set(ds[MEMBER].dims) != {"member", "time", "y", "x"}:
            raise CorruptInputError(f"{forecast}: {MEMBER} has dims {ds[MEMBER].dims}",
                                    fix="see docs/cube-format.md for the forecast format")
        if ds.attrs.get("training_domain") == "outside":
            log.warning("%s was made outside its weights' training domain (%s): its members were too narrow on "
                        "held-out sites like that, so read these probabilities as overconfident (weights/MODEL_CARD.md)",
                        Path(forecast).name, ds.attrs.get("training_domain_note", ""))
        with_drop = LAST_CLEAR in ds
        if not with_drop:
            log.warning("%s has no %s: %s is not computed", Path(forecast).name, LAST_CLEAR, DROP)
        height, width, steps = ds.sizes["y"], ds.sizes["x"], ds.sizes["time"]
        check_ensemble_memory(members=members, steps=steps, width=width, levels=len(below) + len(drop),
                              statistics=len(STATISTICS))
        rows = _rows_per_block(members, steps, width, len(below) + len(drop), settings.memory_mb)
        attrs = {
            "Conventions": "CF-1.8", "title": "vegediff NDVI ensemble statistics", "source": "ensemble",
            "vegediff_version": __version__, "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "forecast": Path(forecast).name, "members": members,
            "below_thresholds": " ".join(f"{v:g}" for v in below), "drops": " ".join(f"{v:g}" for v in drop),
            **{k: ds.attrs[k] for k in PROVENANCE if k in ds.attrs},
            **provenance.product_attrs(made),
        }
        coords = {"time": ds["time"].values, "threshold": np.asarray(below)}
        if with_drop:
            coords["drop"] = np.asarray(drop)
        member_da = ds[MEMBER].transpose("member", "time", "y", "x")
        with small_chunk_cache(), progress(height, "ensemble rows") as bar, grid_writer(
                output, like=ds, variables=output_variables(settings, with_drop=with_drop),
                coords=coords, attrs=attrs) as writer:
            for row0 in range(0, height, rows):
                r = slice(row0, min(height, row0 + rows))
                values = np.asarray(member_da.isel(y=r).values, dtype="float32")  # (M, T, r, W)
                everything = slice(None)
                for name, stat in member_statistics(values).items():
                    writer.write(name, r, everything, stat)
                writer.write(BELOW, r, everything, prob_below(values, below))
                if with_drop:
                    last_clear = np.asarray(ds[LAST_CLEAR].isel(y=r).values, dtype="float32")  # (r, W)
                    writer.write(DROP, r, everything, prob_drop(values, last_clear, drop))
                bar.update(r.stop - r.start)
    finally:
        ds.close()
    project = partial(write_folder_project, name="ensemble", title=run_title("ensemble", Path(output)))
    tags = {"TRAINING_DOMAIN": str(attrs.get("training_domain", "unknown"))}
    written = (export_cogs(output, cog_layers(below, drop if with_drop else ()), cogs, finish=project, extra_tags=tags)
               if cogs is not None else [])
    if cogs is not None:
        provenance.write_cog_marker(cogs, output, attrs)
    return EnsembleSummary(Path(output), Path(cogs) if cogs else None, members, below, drop if with_drop else (),
                           len(written), training_domain=str(attrs.get("training_domain", "unknown")))


def _domain_status(path: Path) -> str:
    with open_grid(path) as ds:
        return str(ds.attrs.get("training_domain", "unknown"))


def cog_layers(below: tuple[float, ...], drop: tuple[float, ...]) -> list[tuple[str, dict, str]]:
    layers: list[tuple[str, dict, str]] = [(name, {}, name) for name in STATISTICS]
    layers += [(BELOW, {"threshold": i}, f"{BELOW}_{level:.2f}") for i, level in enumerate(below)]
    layers += [(DROP, {"drop": i}, f"{DROP}_{level:.2f}") for i, level in enumerate(drop)]
    return layers
