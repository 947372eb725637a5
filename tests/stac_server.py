"""A loopback STAC API and COG file server with fault injection, for fetch tests and benchmarks.

Real HTTP on 127.0.0.1 (stdlib ``http.server`` in a thread): the fetch code talks to it
exactly as it talks to Earth Search or the Planetary Computer.

- ``GET /``, ``/conformance``, ``/collections``, ``/collections/{id}``,
  ``/collections/{id}/items``, ``/collections/{id}/items/{item}``;
- ``GET`` and ``POST /search`` with ``collections``, ``ids``, ``bbox``, ``intersects``
  (by its bounding box), ``datetime``, ``query`` (eq, neq, lt, lte, gt, gte, in), ``limit``
  and ``next`` links (a ``token`` query parameter for GET, a POST body for POST);
- ``GET``/``HEAD /files/{path}``: static files with byte ``Range`` requests (206);
- ``GET /api/sas/v1/token/{account}/{container}``: Planetary-Computer-style SAS tokens, and
  ``/{account}/{container}/{path}`` path-style blob URLs (as the Azurite emulator serves
  them) that answer 403 without a ``sig=`` query parameter;
- :class:`Fault` rules: an HTTP status (500, 429 with ``Retry-After``...), a stall, a body
  cut short, a body dripped one byte at a time, a flood (a 1 GiB body), or a redirect to the same
  URL, for the first ``times`` requests whose path matches a regex;
- ``next_loop``: search pages whose ``next`` link leads back to the same page, for ever.

Every request is logged (method, path, status, body bytes sent) for assertions.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/collections",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass
class Fault:
    """Misbehave on requests whose path (with query) matches `path`, `times` times (None: always)."""

    path: str  # regular expression searched in the request path, e.g. r"/search" or r"B04\.tif"
    kind: str = "status"  # "status" (answer `status`), "stall" (wait `seconds`), "truncate" (cut body),
    # "drip" (one byte every `seconds`), "flood" (a 1 GiB body of zeros), "redirect" (302 to the same URL)
    status: int = 500
    retry_after: float | None = None  # seconds, sent as Retry-After with a status fault
    seconds: float = 30.0  # how long a stall lasts (the server gives up when stopped)
    times: int | None = 1
    method: str | None = None  # only this HTTP method, e.g. "POST"
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        return re.search(self.path, path) is not None


@dataclass
class Logged:
    method: str
    path: str
    status: int
    sent: int  # body bytes written
    range: str | None = None
    at: float = field(default_factory=time.monotonic)  # when the answer was sent


@dataclass
class Catalogue:
    """What the server serves: collections, items (dicts) and the folder behind /files/."""

    collections: list[dict[str, Any]]
    items: list[dict[str, Any]]
    files: Path | None = None
    blobs: dict[tuple[str, str], Path] = field(default_factory=dict)  # (account, container) -> folder


def _parse_dt(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _item_bbox(item: dict[str, Any]) -> list[float]:
    if "bbox" in item:
        return item["bbox"]
    return _geometry_bbox(item["geometry"])


def _geometry_bbox(geometry: dict[str, Any]) -> list[float]:
    points: list[list[float]] = []

    def walk(coords: Any) -> None:
        if coords and isinstance(coords[0], (int, float)):
            points.append(coords)
        else:
            for c in coords:
                walk(c)

    walk(geometry["coordinates"])
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return [min(xs), min(ys), max(xs), max(ys)]


def _compare(value: Any, op: str, ref: Any) -> bool:
    if value is None:
        return False
    if op == "eq":
        return value == ref
    if op == "neq":
        return value != ref
    if op == "in":
        return value in ref
    if op in ("lt", "lte", "gt", "gte"):
        return {"lt": value < ref, "lte": value <= ref, "gt": value > ref, "gte": value >= ref}[op]
    raise ValueError(f"unsupported query operator {op}")


def search_items(items: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
    """Filter `items` like a STAC API item search (the parameters this server supports)."""
    out = []
    collections = params.get("collections")
    ids = params.get("ids")
    bbox = params.get("bbox")
    if bbox is None and params.get("intersects"):
        bbox = _geometry_bbox(params["intersects"])
    start = end = None
    if params.get("datetime"):
        parts = str(params["datetime"]).split("/")
        start = None if parts[0] in ("", "..") else _parse_dt(parts[0])
        end = None if len(parts) < 2 or parts[1] in ("", "..") else _parse_dt(parts[1])
        if len(parts) == 1:
            end = start
    for item in items:
        if collections and item.get("collection") not in collections:
            continue
        if ids and item["id"] not in ids:
            continue
        if bbox is not None:
            w, s, e, n = _item_bbox(item)
            if w > bbox[2] or e < bbox[0] or s > bbox[3] or n < bbox[1]:
                continue
        try:
            when = _parse_dt(item["properties"]["datetime"])
        except (TypeError, ValueError, AttributeError):  # a broken item: served as it is, unfiltered
            when = None
        if when is not None and ((start is not None and when < start) or (end is not None and when > end)):
            continue
        query = params.get("query") or {}
        if not all(_compare(item["properties"].get(k), op, ref) for k, ops in query.items() for op, ref in ops.items()):
            continue
        out.append(item)
    return sorted(out, key=lambda it: (str(it["properties"]["datetime"]), it["id"]), reverse=True)


class FaultLog:
    """What a loopback test server shares: injectable faults and a log of the requests it answered."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.log: list[Logged] = []
        self._lock = threading.Lock()

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def requests(self, pattern: str = "", method: str | None = None) -> list[Logged]:
        with self._lock:
            return [r for r in self.log if re.search(pattern, r.path) and (method is None or r.method == method)]

    def bytes_sent(self, pattern: str = "") -> int:
        return sum(r.sent for r in self.requests(pattern))

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()

    def send(self, handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str,
             headers: dict[str, str] | None = None, *, truncate: bool = False, chunk_size: int = 1 << 16) -> None:
        """Answer `handler`'s request: status, headers, then the body in chunks (half of it and a closed
        connection when `truncate`). Logged before the body goes out: a client that has its answer finds
        it in the log."""
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        if truncate:
            handler.send_header("Connection", "close")
        handler.end_headers()
        payload = b"" if handler.command == "HEAD" else body[: len(body) // 2] if truncate else body
        self._record(Logged(handler.command, handler.path, status, len(payload), handler.headers.get("Range")))
        try:
            for start in range(0, len(payload), chunk_size):
                handler.wfile.write(payload[start : start + chunk_size])
        except (BrokenPipeError, ConnectionResetError):
            pass
        if truncate:
            handler.close_connection = True

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _record(self, entry: Logged) -> None:
        with self._lock:
            self.log.append(entry)


class StacServer(FaultLog):
    """Serve a :class:`Catalogue` on a free loopback port; use as a context manager."""

    def __init__(self, catalogue: Catalogue | None = None, *, page_size: int = 100, chunk_size: int = 65536) -> None:
        super().__init__()
        self.catalogue = catalogue or Catalogue(collections=[], items=[])
        self.default_limit = page_size
        self.chunk_size = chunk_size
        self.latency = 0.0  # seconds added before every answer: a distant server, for benchmarks
        self.tokens_issued = 0
        self.next_loop = False  # search pages link "next" to themselves
        self._stopping = threading.Event()
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="stac-server", daemon=True)

    # --- lifecycle ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StacServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> StacServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-answer (a cancelled read) is normal here: no traceback on stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None


def _handler(server: StacServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real object stores and GDAL's curl use
        disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms ACK stalls

        def log_message(self, format: str, *args: Any) -> None:  # silence stderr
            return None

        # --- plumbing -------------------------------------------------------------------
        def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None,
                  *, truncate: bool = False) -> None:
            server.send(self, status, body, content_type, headers, truncate=truncate, chunk_size=server.chunk_size)

        def _json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(doc).encode(), "application/json", headers)

        def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            self._json(status, {"code": str(status), "description": message}, headers)

        def _apply_fault(self) -> Fault | None:
            """Answer with the fault if one matches; returns a pending "truncate" fault."""
            if server.latency:
                time.sleep(server.latency)
            fault = server._fault_for(self.command, self.path)
            if fault is None:
                return None
            if fault.kind == "status":
                headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
                self._error(fault.status, "injected fault", headers)
                return fault
            if fault.kind == "stall":
                server._record(Logged(self.command, self.path, 0, 0, self.headers.get("Range")))
                server._stopping.wait(fault.seconds)
                self.close_connection = True
                return fault
            if fault.kind in ("drip", "flood"):
                self._stream(fault)
                return fault
            if fault.kind == "redirect":
                server._record(Logged(self.command, self.path, 302, 0))
                self.send_response(302)
                self.send_header("Location", self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return fault
            return fault  # "truncate": handled by the file/JSON writer

        def _stream(self, fault: Fault) -> None:
            """A body that never ends in time: one byte every `fault.seconds` (drip) or 1 GiB (flood)."""
            size = 1 << 30 if fault.kind == "flood" else 100_000
            server._record(Logged(self.command, self.path, 200, 0))  # before the client can see an answer
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            block = b" " * (1 << 16) if fault.kind == "flood" else b" "
            sent = 0
            try:
                while sent < size and not server._stopping.is_set():
                    self.wfile.write(block)
                    self.wfile.flush()
                    sent += len(block)
                    if fault.kind == "drip":
                        server._stopping.wait(fault.seconds)
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
            self.close_connection = True

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}") if length else {}

        # --- verbs ----------------------------------------------------------------------
        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            fault = self._apply_fault()
            if fault is not None and fault.kind != "truncate":
                return
            self._route(truncate=fault is not None)

        def do_POST(self) -> None:
            body = self._body()
            fault = self._apply_fault()
            if fault is not None and fault.kind != "truncate":
                return
            path = urlparse(self.path).path.rstrip("/")
            if path == "/search":
                self._search(body, method="POST")
            else:
                self._error(405, f"POST not allowed on {path}")

        # --- routes ---------------------------------------------------------------------
        def _route(self, *, truncate: bool) -> None:
            parsed = urlparse(self.path)
            path = parsed.path.rstrip("/") or "/"
            query = parse_qs(parsed.query)
            cat = server.catalogue
            base = server.url
            if path == "/":
                self._json(200, _landing(base, cat))
            elif path == "/conformance":
                self._json(200, {"conformsTo": CONFORMANCE})
            elif path == "/collections":
                self._json(200, {"collections": [_with_links(c, base) for c in cat.collections],
                                 "links": [{"rel": "self", "href": f"{base}/collections"}]})
            elif path == "/search":
                self._search(_get_params(query), method="GET")
            elif m := re.fullmatch(r"/collections/([^/]+)", path):
                coll = next((c for c in cat.collections if c["id"] == m.group(1)), None)
                if coll is None:
                    self._error(404, f"collection {m.group(1)} not found")
                else:
                    self._json(200, _with_links(coll, base))
            elif m := re.fullmatch(r"/collections/([^/]+)/items", path):
                self._search({**_get_params(query), "collections": [m.group(1)]}, method="GET",
                             self_path=f"/collections/{m.group(1)}/items")
            elif m := re.fullmatch(r"/collections/([^/]+)/items/([^/]+)", path):
                item = next((i for i in cat.items if i["id"] == m.group(2) and i.get("collection") == m.group(1)), None)
                if item is None:
                    self._error(404, f"item {m.group(2)} not found")
                else:
                    self._json(200, item)
            elif m := re.fullmatch(r"/api/sas/v1/token/([^/]+)/([^/]+)", path):
                server.tokens_issued += 1
                expiry = (datetime.now(UTC) + timedelta(minutes=45)).strftime("%Y-%m-%dT%H:%M:%SZ")
                token = f"st={m.group(1)}&se={expiry}&sp=rl&sv=2021-06-08&sr=c&sig=loopback{server.tokens_issued}"
                self._json(200, {"msft:expiry": expiry, "token": token})
            elif path.startswith("/files/") and cat.files is not None:
                self._file(cat.files, path[len("/files/"):], truncate=truncate)
            elif (m := re.fullmatch(r"/([^/]+)/([^/]+)/(.+)", path)) and (m.group(1), m.group(2)) in cat.blobs:
                if not any(v.startswith("loopback") for v in query.get("sig", [])):
                    self._error(403, "Server failed to authenticate the request (no SAS token)")
                    return
                self._file(cat.blobs[(m.group(1), m.group(2))], m.group(3), truncate=truncate)
            else:
                self._error(404, f"{path} not found")

        def _search(self, params: dict[str, Any], *, method: str, self_path: str = "/search") -> None:
            limit = int(params.get("limit") or server.default_limit)
            token = int(params.get("token") or 0)
            matched = search_items(server.catalogue.items, params)
            page = matched[token : token + limit]
            links = [{"rel": "root", "href": f"{server.url}/"}]
            if server.next_loop:  # a broken API: "next" is this very page
                if method == "POST":
                    links.append({"rel": "next", "href": f"{server.url}{self_path}", "method": "POST",
                                  "type": "application/geo+json", "body": {**params, "token": str(token)}})
                else:
                    query = {k: v for k, v in params.items() if v is not None}
                    links.append({"rel": "next", "href": f"{server.url}{self_path}?{_encode_get(query)}",
                                  "method": "GET", "type": "application/geo+json"})
            elif token + limit < len(matched):
                nxt = token + limit
                if method == "POST":
                    links.append({"rel": "next", "href": f"{server.url}{self_path}", "method": "POST",
                                  "type": "application/geo+json", "body": {**params, "token": str(nxt)}})
                else:
                    query = {k: v for k, v in params.items() if v is not None}
                    query["token"] = str(nxt)
                    links.append({"rel": "next", "href": f"{server.url}{self_path}?{_encode_get(query)}",
                                  "method": "GET", "type": "application/geo+json"})
            self._json(200, {"type": "FeatureCollection", "features": page, "links": links,
                             "numberMatched": len(matched), "numberReturned": len(page)})

        def _file(self, root: Path, relative: str, *, truncate: bool) -> None:
            target = (root / relative).resolve()
            if root.resolve() not in target.parents or not target.is_file():
                self._error(404, f"{relative} not found")
                return
            data = target.read_bytes()
            header = self.headers.get("Range")
            ctype = "image/tiff" if target.suffix.lower() in (".tif", ".tiff") else "application/octet-stream"
            if header:
                m = _RANGE.match(header.strip())
                if m is None:
                    self._error(416, f"unsupported range {header}")
                    return
                first = int(m.group(1)) if m.group(1) else max(0, len(data) - int(m.group(2)))
                last = int(m.group(2)) if m.group(1) and m.group(2) else len(data) - 1
                if first >= len(data):
                    self._send(416, b"", ctype, {"Content-Range": f"bytes */{len(data)}"})
                    return
                last = min(last, len(data) - 1)
                self._send(206, data[first : last + 1], ctype,
                           {"Content-Range": f"bytes {first}-{last}/{len(data)}", "Accept-Ranges": "bytes"},
                           truncate=truncate)
            else:
                self._send(200, data, ctype, {"Accept-Ranges": "bytes"}, truncate=truncate)

    return Handler


def _get_params(query: dict[str, list[str]]) -> dict[str, Any]:
    """GET /search parameters -> the POST body form."""
    params: dict[str, Any] = {}
    for key, values in query.items():
        value = values[-1]
        if key in ("collections", "ids"):
            params[key] = value.split(",")
        elif key == "bbox":
            params[key] = [float(v) for v in value.split(",")]
        elif key in ("query", "intersects"):
            params[key] = json.loads(value)
        else:
            params[key] = value
    return params


def _encode_get(params: dict[str, Any]) -> str:
    flat = {}
    for key, value in params.items():
        if isinstance(value, list):
            flat[key] = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            flat[key] = json.dumps(value)
        else:
            flat[key] = value
    return urlencode(flat)


def _landing(base: str, cat: Catalogue) -> dict[str, Any]:
    return {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": "loopback",
        "title": "vegediff loopback STAC API",
        "description": "test server",
        "conformsTo": CONFORMANCE,
        "links": [
            {"rel": "self", "href": f"{base}/", "type": "application/json"},
            {"rel": "root", "href": f"{base}/", "type": "application/json"},
            {"rel": "conformance", "href": f"{base}/conformance", "type": "application/json"},
            {"rel": "data", "href": f"{base}/collections", "type": "application/json"},
            {"rel": "search", "href": f"{base}/search", "type": "application/geo+json", "method": "GET"},
            {"rel": "search", "href": f"{base}/search", "type": "application/geo+json", "method": "POST"},
            *({"rel": "child", "href": f"{base}/collections/{c['id']}", "type": "application/json"}
              for c in cat.collections),
        ],
    }


def _with_links(collection: dict[str, Any], base: str) -> dict[str, Any]:
    out = dict(collection)
    out["links"] = [
        {"rel": "self", "href": f"{base}/collections/{collection['id']}", "type": "application/json"},
        {"rel": "root", "href": f"{base}/", "type": "application/json"},
        {"rel": "items", "href": f"{base}/collections/{collection['id']}/items", "type": "application/geo+json"},
    ]
    return out


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll `predicate` until true or `timeout` seconds passed (for subprocess tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
