"""Retries, back-off and timeouts for every network call of `fetch`: STAC API requests and COG reads.

One :class:`RetryPolicy` drives both paths:

- STAC API requests (pystac-client, SAS tokens) go through :func:`request_with_retries`: HTTP
  429 and 5xx, connection errors, stalls and bodies cut short are retried with exponential
  back-off; a server's ``Retry-After`` is honoured (capped at ``max_wait``).
- COG reads go through GDAL, which has no timeout by default: :meth:`RetryPolicy.gdal_options`
  sets connect and stall timeouts and GDAL's own quick retries, and the reader in
  ``sources/cogs.py`` wraps each window read in :func:`retry_call` for everything else.

"Timeout" means seconds without progress (a stalled connection), not a limit on a whole
download: a slow but steady network still finishes a large read.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests

from .. import __version__
from ..errors import RemoteError, RunInterrupted

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
    retried like any other transient failure.
    """
    prepared = session.prepare_request(request)
    url = prepared.url or request.url
    last = ""
    for n in range(1, policy.attempts + 1):
        if stop is not None and stop.is_set():
            raise RunInterrupted(f"stopped before requesting {url}")
        retry_after = None
        try:
            response = session.send(prepared, timeout=(policy.connect_timeout, policy.timeout))
            _ = response.content  # read the whole body now: truncation and stalls surface here
        except requests.exceptions.Timeout:
            last = f"no answer within {policy.timeout:g} s"
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            last = f"connection failed ({_one_line(exc)})"
        else:
            if response.status_code < 400:
                return response
            last = f"HTTP {response.status_code}"
            if response.status_code not in RETRY_STATUS:
                raise RemoteError(
                    f"{what} {prepared.method} {url} answered {last}: {_one_line(response.text)[:200]}",
                    fix=_fix_for(response.status_code),
                )
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if n == policy.attempts:
            break
        delay = policy.wait(n, retry_after)
        log.warning("%s %s: %s; try %d of %d in %.1f s", what, url, last, n + 1, policy.attempts, delay)
        pause(delay, stop)
    raise RemoteError(
        f"{what} {prepared.method} {url} failed after {policy.attempts} tries (last: {last})",
        fix="the server may be down or rate-limiting: retry later (a rerun resumes), or raise --retries/--timeout",
    )


def _fix_for(status: int) -> str:
    if status in (401, 403):
        return "the server refused access: check the URL, credentials or signing (--provider planetary-computer)"
    if status == 404:
        return "check --stac-url and --collection"
    return "check the request options (dates, --bbox, --collection) and --stac-url"


def get_json(url: str, *, policy: RetryPolicy, what: str, session: requests.Session | None = None,
             headers: dict[str, str] | None = None, stop: threading.Event | None = None) -> Any:
    """GET a JSON document with retries; RemoteError if it is not JSON."""
    session = session or new_session()
    response = request_with_retries(session, requests.Request("GET", url, headers=headers), policy=policy,
                                    what=what, stop=stop)
    try:
        return response.json()
    except ValueError as exc:
        raise RemoteError(f"{what} {url} did not answer with JSON", fix="check the URL") from exc


def probe(url: str, *, policy: RetryPolicy) -> str | None:
    """Why `url` cannot be read ("HTTP 500", "no answer..."), or None when its first byte arrives."""
    try:
        response = new_session().get(url, headers={"Range": "bytes=0-0"},
                                     timeout=(policy.connect_timeout, policy.timeout))
    except requests.exceptions.Timeout:
        return f"no answer within {policy.timeout:g} s"
    except requests.exceptions.RequestException as exc:
        return f"connection failed ({_one_line(exc)})"
    return None if response.status_code < 400 else f"HTTP {response.status_code}"


def new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    return session


def _one_line(exc: object) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
