"""Retries, back-off and timeouts for every network call of `fetch`: STAC API requests and COG reads.

One :class:`RetryPolicy` drives both paths:

- STAC API requests (pystac-client, SAS tokens) go through :func:`request_with_retries`: HTTP
  429 and 5xx, connection errors, stalls and bodies cut short are retried with exponential
  back-off; a server's ``Retry-After`` is honoured (capped at ``max_wait``).
- COG reads go through GDAL, which has no timeout by default: :meth:`RetryPolicy.gdal_options`
  sets connect and stall timeouts and GDAL's own quick retries, and the reader in
  ``sources/cogs.py`` wraps each window read in :func:`retry_call` for everything else.

"Timeout" means seconds without progress (a stalled connection). On top of it, every request
has bounds a hostile or broken server cannot stretch: the whole answer must arrive within
``request_seconds`` (5 x the timeout: a 1 byte/s drip never counts as a stall, but it does run
out of time), a body may not exceed ``max_body_bytes`` (64 MiB; a STAC page is well under 1 MiB),
and a name that does not resolve fails at once with "no network / cannot resolve HOST".
"""

from __future__ import annotations

import email.utils
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import urllib3

from .. import __version__
from ..errors import RemoteError, RunInterrupted
from ..redact import redact

log = logging.getLogger("vegediff.fetch")
T = TypeVar("T")

RETRY_STATUS = (408, 429, 500, 502, 503, 504)  # worth another try; other 4xx are the caller's mistake
USER_AGENT = f"vegediff/{__version__}"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before a network failure becomes an error (exit code 8)."""

    attempts: int = 5  # tries per request or window read, the first one included
    backoff: float = 1.0  # seconds before the second try; doubles after each failure (+/-20 % jitter)
    max_wait: float = 60.0  # cap on one wait, including a server's Retry-After
    timeout: float = 60.0  # seconds without a byte from the server before a try is abandoned (stall)
    connect_timeout: float = 15.0  # seconds to open a connection
    max_body_bytes: int = 64 << 20  # largest API answer read (JSON pages, tokens); more is refused

    @property
    def request_seconds(self) -> float:
        """Longest one API request may take from sending to the body's last byte (drips end here)."""
        return 5 * self.timeout + self.connect_timeout

    def wait(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the `failures`-th failed try (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_wait)
        delay = self.backoff * 2 ** (failures - 1)
        return min(delay * random.uniform(0.8, 1.2), self.max_wait)

    def gdal_options(self) -> dict[str, str]:
        """GDAL configuration for COG reads over HTTP (/vsicurl/) under this policy."""
        return {
            "GDAL_HTTP_CONNECTTIMEOUT": f"{self.connect_timeout:g}",
            # Stall detection: abort a transfer slower than 1 byte/s for `timeout` seconds.
            "GDAL_HTTP_LOW_SPEED_TIME": f"{max(1, round(self.timeout))}",
            "GDAL_HTTP_LOW_SPEED_LIMIT": "1",
            # A hard cap per request as well; one range request is at most a few MB.
            "GDAL_HTTP_TIMEOUT": f"{max(1, round(self.timeout * 5))}",
            # No retries inside GDAL: our loop retries every read, and between two tries it can
            # notice Ctrl-C; GDAL's own retries would multiply the time a stalled read takes.
            "GDAL_HTTP_MAX_RETRY": "0",
            # Cloud-native reads: no directory listing, no side-car probing, header in one request.
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff,.TIFF",
            "GDAL_INGESTED_BYTES_AT_OPEN": "32768",
            "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
            "GDAL_HTTP_MULTIPLEX": "YES",
            "GDAL_HTTP_USERAGENT": USER_AGENT,
            "VSI_CACHE": "TRUE",
        }


# GDAL caches a failed open or read of a URL for the life of the process; a retry must
# bypass that cache or it fails instantly. "/vsicurl/http" is a prefix of every http(s) URL.
GDAL_NO_CACHE = {"CPL_VSIL_CURL_NON_CACHED": "/vsicurl/http"}


def pause(seconds: float, stop: threading.Event | None) -> None:
    """Sleep, but wake up at once when the run is being stopped (Ctrl-C, SIGTERM)."""
    if stop is None:
        time.sleep(seconds)
    elif stop.wait(seconds):
        raise RunInterrupted("stopped while waiting to retry")


def retry_call(
    attempt: Callable[[int], T],
    *,
    policy: RetryPolicy,
    what: str,
    retryable: Callable[[Exception], bool] = lambda exc: True,
    stop: threading.Event | None = None,
) -> T:
    """Call ``attempt(n)`` for n = 1, 2, ... until it returns; re-raise the last failure."""
    for n in range(1, policy.attempts + 1):
        if stop is not None and stop.is_set():
            raise RunInterrupted(f"stopped before {what}")
        try:
            return attempt(n)
        except RunInterrupted:
            raise
        except Exception as exc:
            if stop is not None and stop.is_set():
                raise RunInterrupted(f"stopped during {what}") from exc
            if n == policy.attempts or not retryable(exc):
                raise
            delay = policy.wait(n)
            log.warning("%s failed (%s); try %d of %d in %.1f s", what, _one_line(exc), n + 1, policy.attempts, delay)
            pause(delay, stop)
    raise AssertionError("unreachable")


def retry_after_seconds(value: str | None) -> float | None:
    """The Retry-After header as seconds: either a number or an HTTP date."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Refused(Exception):
    """A failure no retry can fix (an answer beyond the size limit)."""


class _TooSlow(Exception):
    """The answer did not finish within `request_seconds` (a drip): retried like a stall."""


def resolution_failure(exc: BaseException) -> bool:
    """True when `exc` (or a cause) is a DNS failure: no network, or a host name that does not exist."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, socket.gaierror) or type(err).__name__ == "NameResolutionError":
            return True
        stack.extend([err.__cause__, err.__context__, *[a for a in getattr(err, "args", ()) if isinstance(a, BaseException)]])
        reason = getattr(err, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
    return False


def no_network_error(url: str, what: str) -> RemoteError:
    host = urlsplit(url).hostname or url
    return RemoteError(f"no network / cannot resolve {host} ({what})",
                       fix="check the network connection and the host name (`stac_url`, `sas_url`, `static_stac_url`)")


def _read_body(response: requests.Response, policy: RetryPolicy, deadline: float) -> bytes:
    """The whole body, within `max_body_bytes` and before `deadline`; raises on a drip or a flood."""
    limit = policy.max_body_bytes
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _Refused(f"its answer is {int(declared) / 2**20:.0f} MiB, more than the {limit / 2**20:.0f} MiB accepted")
    raw = response.raw
    read = getattr(raw, "read1", None) or (lambda amt, decode_content: raw.read(amt, decode_content=decode_content))
    body = bytearray()
    while True:
        if time.monotonic() > deadline:
            raise _TooSlow(f"the answer took more than {policy.request_seconds:g} s")
        chunk = read(65536, decode_content=True)  # read1: whatever has arrived, so a drip is noticed
        if not chunk:
            break
        body += chunk
        if len(body) > limit:
            raise _Refused(f"its answer is more than the {limit / 2**20:.0f} MiB accepted")
    response._content_consumed = True  # noqa: SLF001 - close() then returns the connection to the pool
    return bytes(body)


def request_with_retries(
    session: requests.Session,
    request: requests.Request,
    *,
    policy: RetryPolicy,
    what: str = "STAC API",
    stop: threading.Event | None = None,
) -> requests.Response:
    """Send `request`; retry transient failures; raise RemoteError naming the URL when out of tries.

    The body is read inside the loop, so a connection that stalls or closes mid-body is
    retried like any other transient failure; a body beyond the size limit, a redirect loop or
    an unresolvable host are not retried.
    """
    try:
        prepared = session.prepare_request(request)
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, ValueError) as exc:
        raise RemoteError(f"{what} URL {redact(request.url)} is not valid ({redact(_one_line(exc))})",
                          fix="check `stac_url`") from None
    url = prepared.url or request.url
    shown = redact(url)
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise RemoteError(f"{what} link {shown} is not an http(s) URL", fix="check `stac_url`; only http(s) is followed")
    last = ""
    for n in range(1, policy.attempts + 1):
        if stop is not None and stop.is_set():
            raise RunInterrupted(f"stopped before requesting {shown}")
        retry_after = None
        deadline = time.monotonic() + policy.request_seconds
        try:
            response = session.send(prepared, timeout=(policy.connect_timeout, policy.timeout), stream=True)
            try:
                response._content = _read_body(response, policy, deadline)  # noqa: SLF001 - requests' body cache
            finally:
                response.close()
        except _Refused as exc:
            raise RemoteError(f"{what} {prepared.method} {shown}: {exc}",
                              fix="check `stac_url`: it does not answer like a STAC API") from None
        except requests.exceptions.TooManyRedirects:
            raise RemoteError(f"{what} {prepared.method} {shown} redirects in a loop",
                              fix="check `stac_url` (the server's redirects never end)") from None
        except (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL) as exc:
            raise RemoteError(f"{what} {prepared.method} {shown} led to an invalid URL ({redact(_one_line(exc))})",
                              fix="check `stac_url`") from None
        except _TooSlow as exc:
            last = str(exc)
        except (requests.exceptions.Timeout, TimeoutError, urllib3.exceptions.ReadTimeoutError):
            last = f"no answer within {policy.timeout:g} s"
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError, OSError) as exc:
            if resolution_failure(exc):
                raise no_network_error(url, f"{what} {prepared.method} {shown}") from None
            last = f"connection failed ({redact(_one_line(exc))})"
        else:
            if response.status_code < 400:
                return response
            last = f"HTTP {response.status_code}"
            if response.status_code not in RETRY_STATUS:
                raise RemoteError(
                    f"{what} {prepared.method} {shown} answered {last}: {redact(_one_line(response.text))[:200]}",
                    fix=_fix_for(response.status_code),
                )
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if n == policy.attempts:
            break
        delay = policy.wait(n, retry_after)
        log.warning("%s %s: %s; try %d of %d in %.1f s", what, shown, last, n + 1, policy.attempts, delay)
        pause(delay, stop)
    raise RemoteError(
        f"{what} {prepared.method} {shown} failed after {policy.attempts} tries (last: {last})",
        fix="the server may be down or rate-limiting: retry later (a rerun resumes), or raise `retries`/`timeout`",
    )


def _fix_for(status: int) -> str:
    if status in (401, 403):
        return "the server refused access: check the URL, credentials or signing (`provider` planetary-computer)"
    if status == 404:
        return "check `stac_url` and `collection`"
    return "check the request options (dates, `bbox`, `collection`) and `stac_url`"


def get_json(url: str, *, policy: RetryPolicy, what: str, session: requests.Session | None = None,
             headers: dict[str, str] | None = None, stop: threading.Event | None = None) -> Any:
    """GET a JSON document with retries; RemoteError if it is not JSON."""
    session = session or new_session()
    response = request_with_retries(session, requests.Request("GET", url, headers=headers), policy=policy,
                                    what=what, stop=stop)
    try:
        return response.json()
    except ValueError as exc:
        raise RemoteError(f"{what} {redact(url)} did not answer with JSON", fix="check the URL") from exc


def probe(url: str, *, policy: RetryPolicy) -> str | None:
    """Why `url` cannot be read ("HTTP 500", "no answer..."), or None when its first byte arrives."""
    try:
        response = new_session().get(url, headers={"Range": "bytes=0-0"},
                                     timeout=(policy.connect_timeout, policy.timeout))
    except requests.exceptions.Timeout:
        return f"no answer within {policy.timeout:g} s"
    except requests.exceptions.RequestException as exc:
        if resolution_failure(exc):
            return f"no network / cannot resolve {urlsplit(url).hostname}"
        return f"connection failed ({redact(_one_line(exc))})"
    return None if response.status_code < 400 else f"HTTP {response.status_code}"


def new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    return session


def _one_line(exc: object) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
