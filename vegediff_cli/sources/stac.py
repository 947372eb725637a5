"""Sentinel-2 L2A item search on a STAC API: provider profiles, asset keys, duplicates, acquisitions.

Metadata only: which items exist, which asset of each holds B02, B03, B04, B8A and SCL,
which processing of an acquisition to keep, and which granules belong to one day. Pixels
are read in ``sentinel2.py``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import pystac
import requests
from pystac import Link
from pystac_client import Client
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO

from ..errors import CorruptInputError, MissingVariableError, RemoteError, UsageError, VegediffError
from ..geo import normalise_tile
from ..redact import redact
from .area import FetchArea
from .hrefs import DEFAULT_SCHEMES, check_href
from .http import RetryPolicy, new_session, request_with_retries, retry_call

log = logging.getLogger("vegediff.fetch")

# Canonical band name -> asset keys used by the providers: Earth Search v1 names its assets by
# common name, the Planetary Computer and Earth Search v0 by band (first key present wins).
ASSET_KEYS: dict[str, tuple[str, ...]] = {
    "B02": ("blue", "B02", "b02"),
    "B03": ("green", "B03", "b03"),
    "B04": ("red", "B04", "b04"),
    "B8A": ("nir08", "B8A", "b8a", "nir narrow"),
    "SCL": ("scl", "SCL"),
}
REFLECTANCE_ASSETS: tuple[str, ...] = ("B02", "B03", "B04", "B8A")


@dataclass(frozen=True)
class Provider:
    """A STAC API and how to ask it for Sentinel-2 L2A."""

    name: str  # "earth-search", "planetary-computer" or "custom"
    url: str  # STAC API root
    collection: str = "sentinel-2-l2a"
    tile_property: str | None = None  # item property queried for the MGRS tile (server-side `query`)
    tile_format: str = "{tile}"  # its value for a tile, e.g. "MGRS-{tile}" for grid:code
    query_extension: bool = True  # the API supports the STAC `query` extension (cloud cover, tile)
    signed: bool = False  # asset hrefs need Planetary Computer SAS signing


PROVIDERS: dict[str, Provider] = {
    "earth-search": Provider(
        name="earth-search", url="https://earth-search.aws.element84.com/v1",
        tile_property="grid:code", tile_format="MGRS-{tile}",
    ),
    "planetary-computer": Provider(
        name="planetary-computer", url="https://planetarycomputer.microsoft.com/api/stac/v1",
        tile_property="s2:mgrs_tile", signed=True,
    ),
}


def signs_assets(url: str) -> bool:
    """Whether the STAC API at `url` serves asset hrefs that need SAS signing (the Planetary Computer's)."""
    hosts = {urlparse(p.url).hostname for p in PROVIDERS.values() if p.signed}
    return urlparse(url).hostname in hosts


def resolve_provider(name: str | None, *, url: str | None = None, collection: str | None = None) -> Provider:
    """The profile for --provider/--stac-url: a named one (optionally at another URL) or "custom"."""
    if name is None:
        name = "custom" if url else "earth-search"
    if name == "custom":
        if not url:
            raise UsageError("`provider` custom needs `stac_url`", fix="pass the STAC API root, e.g. `stac_url` https://host/stac")
        base = Provider(name="custom", url=url, query_extension=False)
    elif name in PROVIDERS:
        base = PROVIDERS[name]
    else:
        raise UsageError(f"unknown `provider` '{name}'", fix=f"use one of {', '.join([*PROVIDERS, 'custom'])}")
    changes: dict[str, Any] = {}
    if url:
        if not re.match(r"^https?://", url):
            raise UsageError(f"`stac_url` '{url}' is not an http(s) URL", fix="pass the STAC API root, e.g. https://host/stac/v1")
        changes["url"] = url.rstrip("/")
    if collection:
        changes["collection"] = collection
    return Provider(**{**base.__dict__, **changes})


@dataclass(frozen=True)
class SceneItem:
    """One Sentinel-2 L2A item, reduced to what fetch needs."""

    id: str
    datetime: datetime  # acquisition (sensing) time, UTC
    tile: str | None  # MGRS tile, e.g. "29SND"
    platform: str  # "sentinel-2a", "sentinel-2b", ...
    baseline: str  # processing baseline, e.g. "04.00"
    processed: datetime  # when this processing was made (ranks duplicates)
    cloud_cover: float | None  # percent, from eo:cloud_cover
    hrefs: dict[str, str]  # canonical band ("B02".."SCL") -> asset href
    boa_offset_applied: bool  # the provider already removed the 04.00 offset from the DN
    bbox: tuple[float, float, float, float]  # lon/lat
    geometry: dict[str, Any]

    @property
    def solar_day(self) -> date:
        """The local day of the acquisition (longitude / 15 h from UTC), as odc-stac groups them."""
        lon = (self.bbox[0] + self.bbox[2]) / 2
        return (self.datetime + timedelta(hours=lon / 15.0)).date()

    @property
    def baseline_version(self) -> tuple[int, int]:
        return baseline_version(self.baseline)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "datetime": self.datetime.isoformat(), "tile": self.tile,
                "processing_baseline": self.baseline, "cloud_cover": self.cloud_cover}


@dataclass(frozen=True)
class Acquisition:
    """The granules of one (solar) day, fused into one frame of the cube."""

    day: date
    items: tuple[SceneItem, ...]

    @property
    def key(self) -> str:
        return self.day.isoformat()

    @property
    def item_ids(self) -> list[str]:
        return [item.id for item in self.items]


def baseline_version(text: str) -> tuple[int, int]:
    match = re.match(r"^\s*(\d+)\.(\d+)", text or "")
    if match is None:
        raise ValueError(f"processing baseline '{text}'")
    return int(match.group(1)), int(match.group(2))


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _item_tile(item: pystac.Item) -> str | None:
    props = item.properties
    candidates = [props.get("grid:code"), props.get("s2:mgrs_tile"), props.get("mgrs:tile")]
    if {"mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square"} <= props.keys():
        candidates.append(f"{props['mgrs:utm_zone']}{props['mgrs:latitude_band']}{props['mgrs:grid_square']}")
    match = re.search(r"_T?(\d{2}[C-X][A-Z]{2})_", item.id)
    candidates.append(match.group(1) if match else None)
    for value in candidates:
        if value:
            try:
                return normalise_tile(str(value))
            except UsageError:
                continue
    return None


def _item_baseline(item: pystac.Item) -> str:
    """s2:processing_baseline, else the N0400 part of the product name; never guessed from the date."""
    props = item.properties
    value = props.get("s2:processing_baseline") or props.get("processing:version")
    if value:
        try:
            baseline_version(str(value))
            return str(value)
        except ValueError:
            pass
    for name in (props.get("s2:product_uri"), props.get("s2:granule_id"), props.get("s2:datatake_id"), item.id):
        match = re.search(r"_N(\d{2})\.?(\d{2})(?:_|\.|$)", str(name or ""))
        if match:
            return f"{match.group(1)}.{match.group(2)}"
    raise MissingVariableError(
        f"STAC item {item.id} has no s2:processing_baseline (needed to remove the 04.00 reflectance offset)",
        fix="use a STAC API whose Sentinel-2 L2A items carry it (Earth Search v1, Planetary Computer)",
    )


def _asset_href(item: pystac.Item, band: str, schemes: Sequence[str] = DEFAULT_SCHEMES) -> str:
    """The href of `band`, checked against the allowed schemes (sources/hrefs.py) before anything reads it."""
    base = item.get_self_href()
    for key in ASSET_KEYS[band]:
        if key in item.assets:
            return check_href(item.assets[key].href, schemes=schemes, base=base,
                              what=f"STAC item {item.id} asset {key}")
    for key, asset in item.assets.items():  # fall back to eo:bands names
        names = {str(b.get(k, "")).upper() for b in asset.extra_fields.get("eo:bands", []) or [] for k in ("name", "common_name")}
        if band in names and "jp2" not in (asset.media_type or ""):
            return check_href(asset.href, schemes=schemes, base=base, what=f"STAC item {item.id} asset {key}")
    raise MissingVariableError(
        f"STAC item {item.id} has no asset for {band} (looked for {', '.join(ASSET_KEYS[band])}; "
        f"it has {', '.join(sorted(item.assets))})",
        fix="use `provider` earth-search or planetary-computer, or a collection of Sentinel-2 L2A COGs",
    )


def scene_item(item: pystac.Item, *, href_schemes: Sequence[str] = DEFAULT_SCHEMES) -> SceneItem:
    """Reduce a pystac Item to a SceneItem; MissingVariableError if a band or the baseline is missing,
    CorruptInputError if an asset href is not one fetch may read (sources/hrefs.py)."""
    props = item.properties
    when = item.datetime or _parse_time(props.get("start_datetime"))
    if when is None:
        raise MissingVariableError(f"STAC item {item.id} has no datetime", fix="check the STAC API")
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    processed = (_parse_time(props.get("s2:generation_time")) or _parse_time(props.get("created"))
                 or _parse_time(props.get("updated")) or datetime.min.replace(tzinfo=UTC))
    bbox = item.bbox or _bbox_of(item.geometry)
    cloud = props.get("eo:cloud_cover")
    return SceneItem(
        id=item.id,
        datetime=when.astimezone(UTC),
        tile=_item_tile(item),
        platform=str(props.get("platform") or "").lower(),
        baseline=_item_baseline(item),
        processed=processed,
        cloud_cover=None if cloud is None else float(cloud),
        hrefs={band: _asset_href(item, band, href_schemes) for band in ASSET_KEYS},
        boa_offset_applied=bool(props.get("earthsearch:boa_offset_applied", False)),
        bbox=tuple(float(v) for v in bbox),  # type: ignore[arg-type]
        geometry=item.geometry,
    )


def _bbox_of(geometry: dict[str, Any] | None) -> list[float]:
    if not geometry:
        return [-180.0, -90.0, 180.0, 90.0]
    points: list[Sequence[float]] = []

    def walk(coords: Any) -> None:
        if coords and isinstance(coords[0], (int, float)):
            points.append(coords)
        else:
            for c in coords:
                walk(c)

    walk(geometry["coordinates"])
    return [min(p[0] for p in points), min(p[1] for p in points), max(p[0] for p in points), max(p[1] for p in points)]


def drop_duplicates(scenes: Iterable[SceneItem]) -> tuple[list[SceneItem], list[SceneItem]]:
    """Keep one item per acquisition (platform, tile, sensing second): the newest processing.

    Newest = highest processing baseline, then latest generation time (a reprocessing of the
    same baseline), then id. Returns (kept, dropped).
    """
    best: dict[tuple[str, str | None, datetime], SceneItem] = {}
    dropped: list[SceneItem] = []
    for scene in scenes:
        key = (scene.platform, scene.tile, scene.datetime.replace(microsecond=0))
        other = best.get(key)
        if other is None:
            best[key] = scene
            continue
        rank = (scene.baseline_version, scene.processed, scene.id)
        if rank > (other.baseline_version, other.processed, other.id):
            best[key], scene = scene, other
        dropped.append(scene)
    kept = sorted(best.values(), key=lambda s: (s.datetime, s.id))
    return kept, sorted(dropped, key=lambda s: (s.datetime, s.id))


def group_acquisitions(scenes: Iterable[SceneItem]) -> list[Acquisition]:
    """Granules of the same solar day form one acquisition (one cube frame), in date order."""
    days: dict[date, list[SceneItem]] = {}
    for scene in scenes:
        days.setdefault(scene.solar_day, []).append(scene)
    return [Acquisition(day, tuple(sorted(items, key=lambda s: s.id))) for day, items in sorted(days.items())]


# --- search ------------------------------------------------------------------------------
MAX_PAGES = 1000  # pages of one search (100 items each: 100 000 items, ~500 tile-years of Sentinel-2)
MAX_ITEMS = 50_000  # items of one search
SEARCH_SECONDS = 3600.0  # wall time of one whole search, every page and retry included


class RetryingStacIO(StacApiIO):
    """pystac-client IO with the fetch retry policy (429/5xx/timeouts/cut bodies, Retry-After) and bounds.

    A broken or hostile API cannot keep a search going forever: ``next`` links that lead back to a
    page already read, more than MAX_PAGES pages or MAX_ITEMS items, or a search longer than
    SEARCH_SECONDS end it with a RemoteError; only http(s) links are followed (pystac would read
    a local file named by a link).
    """

    def __init__(self, policy: RetryPolicy, stop: threading.Event | None = None, *, max_pages: int = MAX_PAGES,
                 max_items: int = MAX_ITEMS, search_seconds: float = SEARCH_SECONDS,
                 request_modifier: Callable[[requests.Request], requests.Request | None] | None = None) -> None:
        super().__init__(max_retries=None, timeout=(policy.connect_timeout, policy.timeout),
                         request_modifier=request_modifier)
        self.request_modifier = request_modifier  # ours: pystac-client keeps its copy in a private attribute
        self.session = new_session()
        self.policy = policy
        self.stop = stop
        self.max_pages = max_pages
        self.max_items = max_items
        self.search_seconds = search_seconds

    def update(self, headers: dict[str, str] | None = None, parameters: dict[str, Any] | None = None,
               request_modifier: Callable[[requests.Request], requests.Request | None] | None = None,
               timeout: Any = None) -> None:
        """pystac-client's public update (Client.open(request_modifier=...) calls it); keeps our modifier in step."""
        super().update(headers=headers, parameters=parameters, request_modifier=request_modifier, timeout=timeout)
        if request_modifier is not None:
            self.request_modifier = request_modifier

    def request(self, href: str, method: str | None = None, headers: dict[str, str] | None = None,
                parameters: dict[str, Any] | None = None) -> str:
        method = (method or "GET").upper()
        if method in ("POST", "PUT", "PATCH"):
            request = requests.Request(method, href, headers=headers, json=parameters)
        else:
            request = requests.Request(method, href, headers=headers, params=parameters or {})
        if self.request_modifier is not None:
            request = self.request_modifier(request) or request
        response = request_with_retries(self.session, request, policy=self.policy, stop=self.stop)
        try:
            return response.content.decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteError(f"STAC API {redact(href)} answered with bytes that are not UTF-8 JSON",
                              fix="check `stac_url`; it must be a STAC API root") from None

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        href = source.href if hasattr(source, "href") else str(source)
        if not re.match(r"^https?://", str(href), re.IGNORECASE):
            raise RemoteError(f"the STAC API links to {redact(href)}, which is not an http(s) URL",
                              fix="check `stac_url`; only http(s) links are followed")
        return super().read_text(source, *args, **kwargs)

    def get_pages(self, url: str, method: str | None = None,
                  parameters: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """pystac-client's paging loop, bounded (see the class docstring)."""
        began = time.monotonic()
        seen: set[str] = set()
        pages = items = 0
        request: Any = url
        link_parameters = parameters
        while True:
            key = _page_key(request, method, link_parameters)
            if key in seen:
                raise RemoteError(f"the STAC API's next link leads back to a page already read ({redact(_href(request))})",
                                  fix="the server's paging loops: report it to its operator, or narrow the search")
            seen.add(key)
            if time.monotonic() - began > self.search_seconds:
                raise RemoteError(f"the STAC search took more than {self.search_seconds:g} s ({pages} pages)",
                                  fix="narrow the search (`start`/`end`, `bbox`) or retry later")
            if isinstance(request, str):
                page = self.read_json(request, method=method, parameters=parameters)
            else:
                page = self.read_json(request, parameters=parameters)
            if not isinstance(page, dict) or not (page.get("features") or page.get("collections")):
                return
            pages += 1
            items += len(page.get("features") or page.get("collections") or [])
            if pages > self.max_pages or items > self.max_items:
                raise RemoteError(f"the STAC search returned more than {self.max_pages} pages or {self.max_items} items",
                                  fix="narrow the search (`start`/`end`, `bbox`, `max_cloud`)")
            yield page
            link = next((lk for lk in page.get("links", []) or [] if isinstance(lk, dict) and lk.get("rel") == "next"),
                        None)
            if link is None:
                return
            request = Link.from_dict(link)
            link_parameters = link.get("body")


def _href(request: Any) -> str:
    return request.href if hasattr(request, "href") else str(request)


def _page_key(request: Any, method: str | None, parameters: Any) -> str:
    """What identifies a page request: URL, method and body (POST paging puts the token in the body)."""
    if hasattr(request, "to_dict"):
        link = request.to_dict()
        return json.dumps([link.get("href"), link.get("method", "GET"), link.get("body")], sort_keys=True, default=str)
    return json.dumps([str(request), method or "GET", parameters], sort_keys=True, default=str)


def search_scenes(
    provider: Provider,
    area: FetchArea,
    *,
    start: date,
    end: date,
    max_cloud: float | None = None,
    policy: RetryPolicy = RetryPolicy(),
    stop: threading.Event | None = None,
    page_size: int = 100,
    method: str = "POST",
    href_schemes: Sequence[str] = DEFAULT_SCHEMES,
) -> list[SceneItem]:
    """All L2A items over `area` between `start` and `end` (inclusive days), every page.

    Searches with POST (as pystac-client does), falling back to GET for APIs that answer 405.
    """
    params: dict[str, Any] = {
        "collections": [provider.collection],
        "datetime": f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59.999Z",
        "limit": page_size,
    }
    query: dict[str, Any] = {}
    if area.query_tile and area.tile and provider.tile_property and provider.query_extension:
        query[provider.tile_property] = {"eq": provider.tile_format.format(tile=area.tile)}
    else:
        params["bbox"] = list(area.search_bbox)
    if max_cloud is not None and provider.query_extension:
        query["eo:cloud_cover"] = {"lte": max_cloud}
    if query:
        params["query"] = query

    items = search_items(provider.url, params, policy=policy, stop=stop, method=method,
                         check=lambda client: _check_collection(client, provider))
    scenes = [scene_item(item, href_schemes=href_schemes) for item in items]
    return [s for s in scenes if _wanted(s, area, start, end, max_cloud)]


def search_items(url: str, params: dict[str, Any], *, policy: RetryPolicy = RetryPolicy(),
                 stop: threading.Event | None = None, method: str = "POST",
                 check: Callable[[Client], None] | None = None) -> list[pystac.Item]:
    """Every item of one STAC search (`params`: collections, bbox, datetime, query, limit, max_items), every page.

    The one search path (fetch's scenes, prepare's static layers): RetryingStacIO's retries and bounds,
    POST falling back to GET for APIs that answer 405, a page cut short restarting the search, items
    parsed (malformed ones are CorruptInputError). `check` runs on the opened client first.
    """

    def attempt(_: int) -> list[pystac.Item]:
        client = _open(url, policy, stop)
        if check is not None:
            check(client)
        try:
            found = list(client.search(method=method, **params).items_as_dicts())
        except RemoteError as exc:
            if method != "POST" or "HTTP 405" not in str(exc):
                raise
            found = list(client.search(method="GET", **params).items_as_dicts())
        return [_parse_item(doc) for doc in found]

    # A page cut short mid-search restarts the search; each request retries on its own first.
    try:
        return retry_call(attempt, policy=policy, what=f"STAC search at {url}", stop=stop,
                          retryable=lambda exc: not isinstance(exc, VegediffError))
    except APIError as exc:
        raise RemoteError(f"STAC API {url} answered nonsense ({_short(exc)})",
                          fix="check `stac_url`; it must be a STAC API root") from exc


def _parse_item(doc: Any) -> pystac.Item:
    """A search result as a pystac Item; CorruptInputError naming the item when it is malformed."""
    name = doc.get("id", "?") if isinstance(doc, dict) else "?"
    try:
        item = pystac.Item.from_dict(doc, preserve_dict=False)
        if item.datetime is None and _parse_time(item.properties.get("start_datetime")) is None:
            raise ValueError("no datetime")
        return item
    except Exception as exc:  # noqa: BLE001 - pystac raises many types for malformed documents
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CorruptInputError(f"STAC item {name} is malformed ({reason})",
                                fix="the STAC API answered a broken item: report it to its operator, or fetch "
                                    "other dates (`start`/`end`)") from None


def _open(url: str, policy: RetryPolicy, stop: threading.Event | None) -> Client:
    try:
        return Client.open(url, stac_io=RetryingStacIO(policy, stop))
    except (VegediffError, requests.RequestException):
        raise
    except Exception as exc:  # pystac raises assorted errors for documents that are not STAC
        raise RemoteError(f"{url} is not a STAC API ({_short(exc)})",
                          fix="pass the API root, e.g. https://earth-search.aws.element84.com/v1") from exc


def _check_collection(client: Client, provider: Provider) -> None:
    try:
        client.get_collection(provider.collection)
    except RemoteError as exc:
        if "HTTP 404" not in str(exc):
            raise
        raise UsageError(
            f"STAC API {provider.url} has no collection '{provider.collection}'",
            fix="pass `collection` with the API's Sentinel-2 L2A collection (usually sentinel-2-l2a)",
        ) from exc


def _wanted(scene: SceneItem, area: FetchArea, start: date, end: date, max_cloud: float | None) -> bool:
    """Client-side filters: APIs without the query extension return more than asked for."""
    if area.query_tile and area.tile and scene.tile and scene.tile != area.tile:
        return False
    if max_cloud is not None and scene.cloud_cover is not None and scene.cloud_cover > max_cloud:
        return False
    return start <= scene.datetime.date() <= end


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
