"""What a forecast was made from, when a rerun can be skipped, and how its outputs replace the old ones.

- record: the cube's, weights' and weather file's identities and every setting that changes the
  result (cube/provenance.py); written into forecast.nc.
- up to date: a forecast.nc made from the same record (and its COG folder, when wanted) is kept
  as it is unless --force.
- stale input: in a working directory, a cube.nc made from another s2_raw.nc than the one there now
  is refused (run `prepare` first).
- replaced together: when a tile's forecast.nc is replaced, the products made from the old one go
  with it: forecast_cogs/ is rewritten or removed, ensemble.nc and ensemble_cogs/ leave the tile
  folder. The old forecast.nc (and its matching ensemble.nc) is kept in ``history/<start>/`` for
  `evaluate --tile` (the latest forecast whose dates have been observed), at most ``keep_history``
  of them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from ...config import DEFAULT_KEEP_HISTORY  # noqa: F401  (re-exported)
from ...cube import provenance
from ...cube.netcdf_stream import open_grid
from ...errors import StaleInputError
from ...model.weights import file_digest
from ...workdir import TileFiles
from .plan import ForecastSettings

log = logging.getLogger("vegediff.forecast")
_OUR_COGS = re.compile(r"^(ndvi_pred|ndvi_mean|ndvi_std|ndvi_p\d+|prob_ndvi_\w+)_\d{4}-\d{2}-\d{2}\.tif$")


def forecast_record(cube: Path, weights: Path, weather: Path | None, settings: ForecastSettings) -> dict:
    """The made-from record of a forecast (settings resolved: precision is fp32 or bf16 here)."""
    sampler = settings.sampler
    chosen = {
        "horizon": settings.horizon, "members": settings.members, "seed": settings.seed,
        "start": f"{settings.start:%Y-%m-%d}" if settings.start is not None else None,
        "overlap": settings.overlap, "min_clear_context": settings.min_clear_context,
        "detail_transfer": settings.detail_transfer, "precision": settings.precision,
        "sampler": sampler.sampler, "steps": sampler.steps, "guidance_scale": sampler.guidance_scale,
        "context_mix": sampler.context_mix,
        # how overlapping chips' members are combined (blocks.Accumulator); releases before 2026-12-02
        # averaged them, which narrowed the members in overlaps
        "member_blend": "spread-preserving",
    }
    inputs = {"cube": cube, "weights": f"sha256:{file_digest(weights)}", "weather": weather}
    return provenance.record("forecast", inputs, chosen)


def check_cube_is_fresh(tile: TileFiles, cube: Path) -> None:
    """StaleInputError when the tile's cube.nc was made from an s2_raw.nc that has been fetched again since."""
    if provenance.stale_input(cube, "source", tile.raw):
        raise StaleInputError(
            f"{cube} was made from an older {tile.raw.name}: it was fetched again since",
            fix=f"run `vegediff prepare --tile {tile.root.name}` first (or pass `input` {cube} to use it as it is)")


def default_cogs_folder(output: Path) -> Path:
    return output.with_name(f"{output.stem}_cogs")


def remove_stale_cogs(folder: Path, product: Path) -> None:
    """Delete a COG folder that does not belong to `product` (only folders holding our own COG names)."""
    if not folder.is_dir() or provenance.cogs_match(folder, product):
        return
    names = [p.name for p in folder.iterdir()]
    if all(_OUR_COGS.match(n) for n in names):
        shutil.rmtree(folder, ignore_errors=True)
        provenance.marker_of(folder).unlink(missing_ok=True)
        log.info("removed %s: its COGs belonged to an earlier forecast", folder)
    else:
        log.warning("%s holds files of an earlier forecast and others; it was left as it is", folder)


def _start_of(path: Path) -> str | None:
    try:
        with open_grid(path) as ds:
            return str(ds.attrs.get("forecast_start") or "") or None
    except Exception:  # noqa: BLE001 - an unreadable old forecast is simply not archived
        return None


def retire_previous(tile: TileFiles, *, new_start: str, keep: int) -> None:
    """Before the tile's new forecast.nc replaces the old one: move the old one's products out of the way.

    The old forecast.nc is hard-linked (no copy) into history/<start>/ with the ensemble.nc made
    from it, when its start differs from the new one; ensemble.nc and the COG folders of the old
    forecast leave the tile folder either way.
    """
    old = tile.forecast
    if old.is_file():
        start = _start_of(old)
        if keep > 0 and start and start != new_start:
            folder = tile.history / start
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
            try:
                os.link(old, folder / old.name)
            except OSError:
                shutil.copy2(old, folder / old.name)
            if tile.ensemble.is_file() and not provenance.stale_input(tile.ensemble, "forecast", old):
                os.replace(tile.ensemble, folder / tile.ensemble.name)
            (folder / "README.txt").write_text(
                f"An earlier forecast of tile {tile.root.name} (start {start}), kept for `vegediff evaluate --tile`.\n")
            log.info("kept the previous forecast (start %s) in %s", start, folder)
            prune_history(tile, keep)
    if tile.ensemble.is_file():
        tile.ensemble.unlink()
        log.info("removed %s: it summarised the previous forecast", tile.ensemble)
    shutil.rmtree(tile.ensemble_cogs, ignore_errors=True)
    provenance.marker_of(tile.ensemble_cogs).unlink(missing_ok=True)


def prune_history(tile: TileFiles, keep: int) -> None:
    """Keep the `keep` latest forecasts in history/ (by start date)."""
    if not tile.history.is_dir():
        return
    folders = sorted(p for p in tile.history.iterdir() if p.is_dir() and re.match(r"^\d{4}-\d{2}-\d{2}$", p.name))
    for folder in folders[: max(0, len(folders) - keep)]:
        shutil.rmtree(folder, ignore_errors=True)


def existing_summary(output: Path) -> dict:
    """What a skipped (up to date) forecast reports: its dates and attributes, read from the file."""
    with open_grid(output) as ds:
        attrs = dict(ds.attrs)
        dates = [f"{d:%Y-%m-%d}" for d in ds.indexes["time"]]
    return {"dates": dates, "attrs": {k: v for k, v in attrs.items() if k != provenance.MADE_FROM},
            "members": int(attrs.get("members", 1)), "meteo_source": str(attrs.get("meteo_source", "")),
            "made_from": json.loads(attrs.get(provenance.MADE_FROM, "{}"))}
