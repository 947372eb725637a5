"""`vegediff fetch`: download Sentinel-2 L2A (B02, B03, B04, B8A, SCL at 20 m) from a STAC API by MGRS tile or bounding box."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from datetime import UTC, datetime
from typing import Annotated

import typer

from ..dates import parse_day
from ..errors import RunInterrupted, UsageError
from ..redact import redact
from ..workdir import resolve_output
from .options import JsonOpt, OutputOpt, QuietOpt, TileOpt, WorkdirOpt, emit_json, finite, setup, workdir_of

log = logging.getLogger("vegediff.fetch")


def parse_window(text: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.replace(" ", ",").split(",") if v)
    except ValueError:
        values = ()
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0 or min(values) < 0:
        raise UsageError(f"--window '{text}' is not four pixel counts",
                         fix="write it as COL,ROW,WIDTH,HEIGHT on the tile's 20 m grid, e.g. 1833,2481,175,147")
    return values  # type: ignore[return-value]


def fetch(
    tile: TileOpt = None,
    bbox: Annotated[str | None, typer.Option(help="Area as MINLON,MINLAT,MAXLON,MAXLAT (degrees); with --tile, a part of the tile.")] = None,
    window: Annotated[str | None, typer.Option(help="Part of the tile as COL,ROW,WIDTH,HEIGHT pixels of its 20 m grid.")] = None,
    start: Annotated[str, typer.Option(help="First acquisition day, YYYY-MM-DD.")] = ...,  # type: ignore[assignment]
    end: Annotated[str | None, typer.Option(help="Last acquisition day, YYYY-MM-DD.", show_default="today")] = None,
    max_cloud: Annotated[float | None, typer.Option(help="Skip items with more scene cloud cover (percent).", min=0, max=100)] = None,
    provider: Annotated[str | None, typer.Option(help="STAC API profile: earth-search, planetary-computer or custom.", show_default="earth-search, or custom with --stac-url")] = None,
    stac_url: Annotated[str | None, typer.Option(help="STAC API root URL (any standard STAC API).")] = None,
    collection: Annotated[str | None, typer.Option(help="Collection id.", show_default="sentinel-2-l2a")] = None,
    sas_url: Annotated[str | None, typer.Option(help="Planetary Computer SAS token endpoint.", envvar="VEGEDIFF_PC_SAS_URL", show_default="the Planetary Computer's")] = None,
    output: OutputOpt = None,
    workdir: WorkdirOpt = None,
    workers: Annotated[int, typer.Option(help="Parallel COG reads.", min=1, max=64)] = 8,
    chunk: Annotated[int, typer.Option(help="Pixels per side of one read/write block (memory per read).", min=256, max=8192)] = 1024,
    retries: Annotated[int, typer.Option(help="Tries per request or read before giving up (exit 8).", min=1, max=20)] = 5,
    timeout: Annotated[float, typer.Option(help="Seconds without data before a request counts as stalled.", min=0.1)] = 60.0,
    backoff: Annotated[float, typer.Option(help="Seconds before the first retry; doubles each time.", min=0.0)] = 1.0,
    href_schemes: Annotated[str, typer.Option(
        help="URL schemes the items' asset hrefs may use. Add file to read local paths an item names, "
             "s3 for s3:// hrefs; only for STAC APIs you trust.")] = "https,http",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the matching items and dates; download nothing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Ignore finished parts and the existing output; fetch everything again.")] = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Download Sentinel-2 L2A (B02, B03, B04, B8A, SCL at 20 m) from a STAC API by MGRS tile or bounding box.

    Writes the raw cube <workdir>/<TILE>/s2_raw.nc (or --output). A rerun resumes an
    interrupted fetch and, on an existing output, reads only new acquisitions.
    """
    from rasterio.errors import NotGeoreferencedWarning

    from ..pipeline.fetch.run import FetchRequest, FetchSettings, fetch_cube, plan_fetch
    from ..sources.area import fetch_area
    from ..sources.hrefs import parse_schemes
    from ..sources.http import RetryPolicy
    from ..sources.stac import resolve_provider

    progress = setup(quiet)
    for value, option in ((timeout, "--timeout"), (backoff, "--backoff"), (max_cloud, "--max-cloud")):
        finite(value, option)
    # GDAL reports every failed HTTP try through rasterio's loggers; fetch retries and reports
    # failures itself, in one line, so that chatter stays behind --debug.
    if os.environ.get("VEGEDIFF_DEBUG") != "1":
        for name in ("rasterio", "odc"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        # odc-stac reprojects into plain arrays, which rasterio reports as "not georeferenced".
        warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module="rasterio.warp")
    area = fetch_area(tile=tile, bbox=bbox, window=parse_window(window) if window else None)
    first = parse_day(start, name="start")
    last = parse_day(end, name="end") if end else datetime.now(UTC).date()
    request = FetchRequest(area=area, start=first, end=last, max_cloud=max_cloud,
                           provider=resolve_provider(provider, url=stac_url, collection=collection))
    settings = FetchSettings(workers=workers, chunk=chunk, sas_url=sas_url, href_schemes=parse_schemes(href_schemes),
                             policy=RetryPolicy(attempts=retries, timeout=timeout, backoff=backoff,
                                                connect_timeout=min(timeout, 15.0)))
    if dry_run:
        plan = plan_fetch(request, settings=settings)
        summary = {"dry_run": True, **plan.summary()}
        if json_out:
            emit_json(summary)
        else:
            _print_plan(summary)
        return
    if output is None and not area.query_tile:  # --bbox alone: the folder is named after the items' own tile
        request = plan_fetch(request, settings=settings).request
    target = resolve_output(output, request.area.tile, workdir_of(workdir), "raw")
    try:
        result = fetch_cube(request, target, settings=settings, force=force, progress=progress)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (cli/app.py turns it into KeyboardInterrupt)
        raise RunInterrupted(
            f"fetch of {target} was interrupted; no output was written",
            fix="run the same command again: it resumes from the dates already fetched",
        ) from None
    summary = result.summary()
    log.info("%s: %d dates (%d fetched, %d resumed, %d kept from the previous output) in %.1f s",
             target, len(result.plan.acquisitions), len(result.fetched), len(result.resumed), len(result.reused),
             result.seconds)
    if json_out:
        emit_json({"dry_run": False, **summary})


def _print_plan(summary: dict) -> None:
    """The dry run's answer on stdout: one line per item, grouped by acquisition date."""
    out = sys.stdout
    out.write(f"{summary['items_found']} items at {redact(summary['stac_url'])} ({summary['collection']}), "
              f"{len(summary['acquisitions'])} dates, {len(summary['duplicates_dropped'])} duplicates dropped\n")
    for acquisition in summary["acquisitions"]:
        for item in acquisition["items"]:
            cloud = "" if item["cloud_cover"] is None else f"{item['cloud_cover']:6.2f} %"
            out.write(f"{acquisition['date']}  {item['id']}  baseline {item['processing_baseline']}  "
                      f"offset {item['dn_offset']}  {cloud}\n")
    for dropped in summary["duplicates_dropped"]:
        out.write(f"(dropped)   {dropped}\n")


def register(app: typer.Typer) -> None:
    app.command("fetch")(fetch)
