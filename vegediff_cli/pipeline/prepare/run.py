"""The whole `prepare` step for one output: lock, skip when up to date, build, write, COGs, provenance.

    from vegediff_cli.pipeline.prepare.run import run_prepare
    result = run_prepare(PrepareInputs(source=Path("s2_raw.nc")), Path("cube.nc"))
    result.up_to_date   # True when cube.nc was already made from the same inputs and settings

The cube records what it was made from (cube/provenance.py); a rerun with the same inputs and
settings does nothing ("up to date") unless `force`. A cube and its NDVI COG folder are written
under one lock, the COGs marked with the cube they belong to.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...atomic import output_lock
from ...cube import provenance
from ...cube.cog import write_time_series_cogs
from ...cube.readers import open_cube
from ...progress import ProgressFactory, no_progress
from .build import PrepareInputs, PrepareSettings, build_cube, check_settings
from .compute import DaskProgress, lazy_ndvi, write_prepared

log = logging.getLogger("vegediff.prepare")


@dataclass
class PrepareResult:
    output: Path
    cogs: Path | None
    up_to_date: bool
    summary: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"output": str(self.output), "cogs": str(self.cogs) if self.cogs else None,
                "up_to_date": self.up_to_date, **self.summary}


def prepare_record(inputs: PrepareInputs, settings: PrepareSettings) -> dict[str, Any]:
    """What a cube is made from: every input's identity, and the settings that change its content."""
    values = {f.name: getattr(inputs, f.name) for f in dataclasses.fields(inputs)}
    values["static_stac_url"] = provenance.redacted_url(inputs.static_stac_url)
    chosen = {"clear_classes": list(settings.clear_classes), "meteo_layout": settings.meteo_layout,
              "anchor": f"{settings.anchor:%Y-%m-%d}" if settings.anchor is not None else None,
              "max_meteo_distance_km": settings.max_meteo_distance_km}
    return provenance.record("prepare", values, chosen)


def run_prepare(
    inputs: PrepareInputs,
    output: Path,
    *,
    settings: PrepareSettings = PrepareSettings(),
    cogs: Path | None = None,
    force: bool = False,
    progress: ProgressFactory = no_progress,
) -> PrepareResult:
    """Build and write the cube of `inputs` to `output` (and NDVI COGs to `cogs`), unless it is up to date."""
    check_settings(settings)
    made = prepare_record(inputs, settings)
    never_skip = inputs.era5_download is not None  # a download's content is unknown until it is made
    locked = [output, *([cogs] if cogs is not None else [])]
    with output_lock(*locked, what="prepared"):
        if not force and not never_skip and provenance.up_to_date(output, made, cogs=cogs):
            log.info("%s is up to date (same inputs and settings); `force` rebuilds it", output)
            return PrepareResult(output, cogs, True)
        prepared = build_cube(inputs, settings=settings, progress=progress)
        attrs = provenance.product_attrs(made)
        prepared.cube.attrs.update(attrs)
        write_prepared(prepared.cube, output, progress=progress)
        if cogs is not None:  # from the written cube: cheap reads instead of recomputing the frames
            written = open_cube(output).chunk({"time": 1, "y": settings.chunk_px, "x": settings.chunk_px})
            with DaskProgress(progress, "writing NDVI COGs"):
                write_time_series_cogs(lazy_ndvi(written), cogs, prefix="ndvi")
            written.close()
            provenance.write_cog_marker(cogs, output, attrs)
    return PrepareResult(output, cogs, False, prepared.summary())
