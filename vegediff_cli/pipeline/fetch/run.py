"""fetch: STAC search -> Sentinel-2 frames on the tile grid -> the raw cube ``s2_raw.nc``.

    plan_fetch   search, drop duplicate processings, group granules by day (metadata only)
    fetch_cube   plan, then read every date not already done into a verified part file
                 (dates in parallel, window reads in parallel), then assemble the parts into
                 the output in one atomic write

Nothing here prints or parses arguments. A failed or interrupted run leaves no output file,
only finished parts, and the next run resumes from them (see parts.py).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dask
import rasterio
import xarray as xr

from ...config import BANDS, SCL, VALID
from ...cube import provenance
from ...cube.netcdf import chunk_cache, write_netcdf
from ...cube.readers import open_netcdf
from ...cube.schema import finalise, grid_coords
from ...errors import CorruptInputError, NoValidDataError, UsageError
from ...progress import ProgressFactory, no_progress
from ...redact import redact
from ...sources.area import FetchArea, bbox_area
from ...sources.cogs import RetryingDriver
from ...sources.hrefs import DEFAULT_SCHEMES
from ...sources.http import RetryPolicy
from ...sources.sentinel2 import BOA_ADD_OFFSET, DEFAULT_CHUNK, dn_offset, load_acquisition
from ...sources.signing import SasSigner
from ...sources.stac import Acquisition, Provider, SceneItem, drop_duplicates, group_acquisitions, search_scenes
from .parts import PartStore

log = logging.getLogger("vegediff.fetch")
SENTINEL2_START = date(2015, 6, 23)  # launch of Sentinel-2A
GDAL_CACHE_MB = 64  # GDAL block cache during a fetch (blocks are written strip by strip)
NETCDF_CACHE_BYTES = 8 << 20  # HDF5 chunk cache per variable while writing (default 64 MB each)
HARMONISATION = (f"reflectance = (DN - {BOA_ADD_OFFSET}) / 10000 for processing baseline >= 04.00 "
                 "(unless the provider already removed the offset), DN / 10000 before")


@dataclass(frozen=True)
class FetchRequest:
    """What to fetch."""

    area: FetchArea  # output grid and search footprint
    start: date  # first acquisition day (inclusive)
    end: date  # last acquisition day (inclusive)
    provider: Provider  # STAC API profile (URL, collection, tile query, signing)
    max_cloud: float | None = None  # drop items with more scene cloud cover (percent); None keeps all


@dataclass(frozen=True)
class FetchSettings:
    """How to fetch it."""

    workers: int = 8  # parallel window reads; also how many dates are read at once
    chunk: int = DEFAULT_CHUNK  # pixels per side of one read/write block (bounds memory)
    policy: RetryPolicy = field(default_factory=RetryPolicy)  # retries, back-off, timeouts
    sas_url: str | None = None  # Planetary Computer token endpoint (None: default or $VEGEDIFF_PC_SAS_URL)
    page_size: int = 100  # STAC search page size
    href_schemes: tuple[str, ...] = DEFAULT_SCHEMES  # URL schemes asset hrefs may use (sources/hrefs.py)


@dataclass
class FetchPlan:
    request: FetchRequest
    found: list[SceneItem]  # every item the search returned
    dropped: list[SceneItem]  # older processings of an acquisition that is kept
    acquisitions: list[Acquisition]  # one per day, in date order

    def summary(self) -> dict[str, Any]:
        req = self.request
        return {
            "provider": req.provider.name, "stac_url": req.provider.url, "collection": req.provider.collection,
            "tile": req.area.tile, "grid": req.area.summary(),
            "start": req.start.isoformat(), "end": req.end.isoformat(), "max_cloud": req.max_cloud,
            "items_found": len(self.found), "items_used": sum(len(a.items) for a in self.acquisitions),
            "duplicates_dropped": [s.id for s in self.dropped],
            "acquisitions": [
                {"date": a.key, "items": [s.summary() | {"dn_offset": dn_offset(s)} for s in a.items]}
                for a in self.acquisitions
            ],
        }


def check_dates(start: date, end: date, *, today: date | None = None) -> None:
    """UsageError for a date range that cannot hold Sentinel-2 data."""
    today = today or datetime.now(UTC).date()
    if start > today:
        raise UsageError(f"`start` {start} is in the future (today is {today})", fix="pick dates up to today")
    if end > today:
        raise UsageError(f"`end` {end} is in the future (today is {today})",
                         fix=f"use `end` {today} or earlier; a later run picks up new acquisitions")
    if end < start:
        raise UsageError(f"`end` {end} is before `start` {start}", fix="swap them or fix the dates")
    if end < SENTINEL2_START:
        raise UsageError(f"`end` {end} is before Sentinel-2 started ({SENTINEL2_START})", fix="pick 2015-06-23 or later")


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Area (square degrees) shared by two lon/lat boxes."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def native_area(area: FetchArea, scenes: list[SceneItem]) -> FetchArea:
    """`--bbox` alone: the grid and name of the tile whose granules cover the bbox most, so they are
    read on their own grid (as odc-stac does), not resampled onto the grid of the UTM zone that
    happens to hold the bbox's centre; the output is then named after that tile."""
    if area.query_tile:
        return area
    box = area.search_bbox
    cover: dict[str, float] = {}
    for scene in scenes:
        if scene.tile:
            cover[scene.tile] = cover.get(scene.tile, 0.0) + _overlap(scene.bbox, box)
    if not cover:
        return area
    best = max(cover, key=lambda tile: (cover[tile], tile == area.tile, tile))
    return area if best == area.tile else bbox_area(box, best)


def native_request(request: FetchRequest, found: list[SceneItem]) -> FetchRequest:
    area = native_area(request.area, found)
    if area is not request.area:
        log.info("`bbox`: the items are on tile %s; fetching on its grid (not %s's)", area.tile, request.area.tile)
    return request if area is request.area else replace(request, area=area)


def plan_fetch(request: FetchRequest, *, settings: FetchSettings = FetchSettings(),
               stop: threading.Event | None = None) -> FetchPlan:
    """Search the STAC API and decide which items make which frame; reads no pixels.

    With `--bbox` alone the plan's request carries the items' native tile and grid (native_area).
    """
    check_dates(request.start, request.end)
    found = search_scenes(request.provider, request.area, start=request.start, end=request.end,
                          max_cloud=request.max_cloud, policy=settings.policy, stop=stop,
                          page_size=settings.page_size, href_schemes=settings.href_schemes)
    request = native_request(request, found)
    if not found:
        where = f"tile {request.area.tile}" if request.area.query_tile else f"bbox {request.area.search_bbox}"
        cloud = f" with at most {request.max_cloud:g} % cloud cover" if request.max_cloud is not None else ""
        raise NoValidDataError(
            f"no Sentinel-2 L2A items for {where} from {request.start} to {request.end}{cloud} "
            f"in '{request.provider.collection}' at {request.provider.url}",
            fix="widen `start`/`end`, raise `max_cloud`, or check `tile`/`bbox`",
        )
    kept, dropped = drop_duplicates(found)
    for scene in dropped:
        log.info("dropping %s: a newer processing of the same acquisition is used", scene.id)
    native = request.area.tile
    # Granules of the native tile first: per pixel, the first granule with data is used (no resampling there).
    acquisitions = [Acquisition(a.day, tuple(sorted(a.items, key=lambda s: (s.tile != native, s.id))))
                    for a in group_acquisitions(kept)]
    return FetchPlan(request=request, found=found, dropped=dropped, acquisitions=acquisitions)


def _identity(acquisition: Acquisition, area: FetchArea) -> dict[str, Any]:
    """What a part of this date must have been made from to be reused."""
    g = area.grid
    return {"items": acquisition.item_ids, "offsets": [dn_offset(s) for s in acquisition.items],
            "grid": [g.crs, *list(g.transform)[:6], g.width, g.height]}


@dataclass
class FetchResult:
    output: Path
    plan: FetchPlan
    fetched: list[str] = field(default_factory=list)  # dates read from the network in this run
    resumed: list[str] = field(default_factory=list)  # dates taken from verified parts of an earlier run
    reused: list[str] = field(default_factory=list)  # dates taken from the existing output
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"output": str(self.output), **self.plan.summary(), "dates_fetched": self.fetched,
                "dates_resumed": self.resumed, "dates_reused": self.reused,
                "up_to_date": len(self.reused) == len(self.plan.acquisitions),
                "seconds": round(self.seconds, 3)}


def fetch_cube(
    request: FetchRequest,
    output: str | Path,
    *,
    settings: FetchSettings = FetchSettings(),
    force: bool = False,
    progress: ProgressFactory = no_progress,
    stop: threading.Event | None = None,
) -> FetchResult:
    """Fetch the raw cube of `request` into `output` (NetCDF, atomic); resumes an interrupted run."""
    began = time.monotonic()
    output = Path(output)
    stop = stop or threading.Event()
    store = PartStore(output)
    with store.lock():
        result = _fetch_locked(request, output, store, settings=settings, force=force, progress=progress, stop=stop)
    result.seconds = time.monotonic() - began
    return result


def _fetch_locked(request: FetchRequest, output: Path, store: PartStore, *, settings: FetchSettings, force: bool,
                  progress: ProgressFactory, stop: threading.Event) -> FetchResult:
    plan = plan_fetch(request, settings=settings, stop=stop)
    request = plan.request  # with --bbox alone: on the items' native tile grid
    result = FetchResult(output=output, plan=plan)
    if force:
        store.remove()
    store.clean_partials()
    identities = {a.key: _identity(a, request.area) for a in plan.acquisitions}
    reusable, old_dates = ({}, 0) if force else _reusable_dates(output, identities)
    todo = [a for a in plan.acquisitions if a.key not in reusable]
    result.reused = [a.key for a in plan.acquisitions if a.key in reusable]
    result.resumed = [a.key for a in todo if store.is_complete(a.key, identities[a.key])]
    pending = [a for a in todo if a.key not in result.resumed]
    if result.resumed:
        log.info("resuming: %d of %d dates already fetched", len(result.resumed), len(plan.acquisitions))
    if not todo and old_dates == len(plan.acquisitions):
        log.info("%s is up to date (%d dates)", output, old_dates)
        store.remove()
        return result

    signer = SasSigner(settings.sas_url, policy=settings.policy, stop=stop) if request.provider.signed else None
    driver = RetryingDriver(policy=settings.policy, sign=signer, stop=stop,
                            invalidate=signer.invalidate if signer is not None else None)
    # GDAL's block cache defaults to 5 % of RAM and would keep every block written or read.
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        with ThreadPoolExecutor(settings.workers, thread_name_prefix="vegediff-read") as reads, \
                dask.config.set(scheduler="threads", pool=reads):
            result.fetched = sorted(_fetch_dates(pending, request, store, identities, driver, settings, progress,
                                                 stop))
        # Assembly is local decoding and compression: more threads than cores only add memory.
        with dask.config.set(scheduler="threads", num_workers=min(settings.workers, os.cpu_count() or 1)), \
                chunk_cache(NETCDF_CACHE_BYTES):
            _assemble(plan, output, store, reusable, settings)
    store.remove()
    return result


def _fetch_dates(pending: list[Acquisition], request: FetchRequest, store: PartStore, identities: dict[str, Any],
                 driver: RetryingDriver, settings: FetchSettings, progress: ProgressFactory,
                 stop: threading.Event) -> list[str]:
    """Read each pending date into its part, several at once; returns the dates done."""
    done: list[str] = []

    def one(acquisition: Acquisition) -> str:
        frame = load_acquisition(acquisition, request.area.grid, driver=driver, chunk=settings.chunk)
        store.write(acquisition.key, frame, identities[acquisition.key], grid=request.area.grid, rows=settings.chunk)
        return acquisition.key

    if not pending:
        return done
    tile = request.area.tile
    with progress(len(pending), f"fetch {tile}") as bar, \
            ThreadPoolExecutor(min(settings.workers, len(pending)), thread_name_prefix="vegediff-date") as dates:
        futures: dict[Future, Acquisition] = {dates.submit(one, a): a for a in pending}
        try:
            remaining = set(futures)
            while remaining:
                finished, remaining = wait(remaining, timeout=0.5, return_when=FIRST_EXCEPTION)
                for future in finished:
                    error = future.exception()
                    if error is not None:
                        for other in remaining:  # let running dates finish their parts; start no more
                            other.cancel()
                        wait(remaining)
                        raise error
                    done.append(future.result())
                    bar.update(1)
        except KeyboardInterrupt:
            stop.set()  # workers give up at their next read; their temporaries are removed
            for future in futures:
                future.cancel()
            raise
    log.info("fetched %d dates", len(done))
    return done


def _reusable_dates(output: Path, identities: dict[str, Any]) -> tuple[dict[str, int], int]:
    """Dates of an existing output made from the same items on the same grid (-> time index),
    and how many dates it has: a cron rerun then reads only the new acquisitions."""
    if not output.is_file():
        return {}, 0
    try:
        with open_netcdf(output) as old:
            records = json.loads(old.attrs.get("fetch_acquisitions", "[]"))
            if len(records) != old.sizes.get("time", -1):
                raise ValueError("record count does not match the time axis")
    except (CorruptInputError, ValueError, TypeError):
        log.warning("%s exists but was not made by this version of fetch; it will be replaced", output)
        return {}, 0
    reusable = {r["date"]: i for i, r in enumerate(records)
                if r.get("date") in identities and r.get("identity") == identities[r["date"]]}
    return reusable, len(records)


def _assemble(plan: FetchPlan, output: Path, store: PartStore, reusable: dict[str, int],
              settings: FetchSettings) -> None:
    """Concatenate the parts (and reused dates of the old output) into `output`, atomically.

    The only NetCDF write of a fetch: one writer, while dask reads the parts in parallel.
    """
    grid = plan.request.area.grid
    y, x = grid_coords(grid)
    frames = []
    old = None
    for acquisition in plan.acquisitions:
        if acquisition.key in reusable:
            if old is None:
                old = xr.open_dataset(output, engine="netcdf4", chunks={"y": settings.chunk, "x": settings.chunk})
            frame = old[[*BANDS, SCL, VALID]].isel(time=[reusable[acquisition.key]]).assign_coords(y=y, x=x)
            for variable in frame.variables.values():
                variable.encoding = {}
            frames.append(frame)
        else:
            frames.append(store.read(acquisition.key, grid, chunk=settings.chunk))
    try:
        cube = xr.concat(frames, dim="time", data_vars="all", coords="minimal", compat="override", join="override")
        cube = finalise(cube, crs=grid.crs, source="fetch", attrs=_provenance(plan))
        write_netcdf(cube, output)
    finally:
        if old is not None:
            old.close()


def _provenance(plan: FetchPlan) -> dict[str, Any]:
    req = plan.request
    records = [{"date": a.key, "identity": _identity(a, req.area),
                "baselines": [s.baseline for s in a.items]} for a in plan.acquisitions]
    return {
        "title": f"Sentinel-2 L2A B02 B03 B04 B8A SCL at 20 m, tile {req.area.tile}",
        "tile": req.area.tile,
        "stac_url": redact(req.provider.url),  # files are shared: no credentials in them
        "stac_provider": req.provider.name,
        "collection": req.provider.collection,
        "query_start": req.start.isoformat(),
        "query_end": req.end.isoformat(),
        "query_max_cloud": "none" if req.max_cloud is None else f"{req.max_cloud:g}",
        "item_ids": " ".join("+".join(a.item_ids) for a in plan.acquisitions),
        "processing_baselines": " ".join("+".join(s.baseline for s in a.items) for a in plan.acquisitions),
        "duplicates_dropped": " ".join(s.id for s in plan.dropped),
        "harmonisation": HARMONISATION,
        "fetch_acquisitions": json.dumps(records),
        "history": f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} vegediff fetch",
        **provenance.product_attrs(provenance.record(
            "fetch", {"stac_url": redact(req.provider.url), "collection": req.provider.collection},
            {"tile": req.area.tile, "grid": req.area.summary(), "acquisitions": [r["identity"] for r in records]})),
    }
