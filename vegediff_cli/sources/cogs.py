"""COG window reads for odc-stac: GDAL HTTP settings, a retry loop around every read, signing.

odc-stac plans the reads (which COG windows cover which output chunk, overviews, warping);
its rasterio reader does them. :class:`RetryingDriver` is that reader driver with

- GDAL configured by the :class:`RetryPolicy` on every worker thread (timeouts, stall detection);
- each window read retried with back-off, bypassing GDAL's cache of the failed URL;
- hrefs signed at read time (Planetary Computer tokens expire during long runs);
- the final failure turned into RemoteError (the server did not deliver: HTTP status, timeout,
  connection cut) or CorruptInputError (the bytes arrived but are not a readable COG, e.g. a
  truncated file), decided by probing the URL once more.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
from odc.geo.geobox import GeoBox
from odc.loader import RasterLoadParams, RasterSource, RioDriver, RioReader

from ..errors import CorruptInputError, RemoteError, RunInterrupted, VegediffError
from ..redact import redact
from .http import GDAL_NO_CACHE, RetryPolicy, no_network_error, probe, retry_call

_HTTP_STATUS = re.compile(r"HTTP response code: (\d{3})")
_NO_HOST = re.compile(r"Could not resolve host", re.IGNORECASE)  # curl's words for a DNS failure
Signer = Callable[[str], str]


class RetryingDriver(RioDriver):
    """odc-loader ReaderDriver: rasterio reads with the fetch retry policy."""

    def __init__(
        self,
        *,
        policy: RetryPolicy = RetryPolicy(),
        sign: Signer | None = None,
        invalidate: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.sign = sign
        self.invalidate = invalidate
        self.stop = stop
        self.on_read = on_read  # called with the pixel count of each completed read

    def capture_env(self) -> dict[str, Any]:
        # Passed to every worker thread by odc-loader, which opens a rasterio.Env with it.
        return self.policy.gdal_options()

    def open(self, src: RasterSource, ctx: Any) -> RetryingReader:
        return RetryingReader(src, ctx, self)


class RetryingReader:
    """Reads one asset for odc-loader; see the module docstring."""

    def __init__(self, src: RasterSource, ctx: Any, driver: RetryingDriver) -> None:
        self._src = src
        self._ctx = ctx
        self._driver = driver

    def read(
        self,
        cfg: RasterLoadParams,
        dst_geobox: GeoBox,
        *,
        dst: np.ndarray | None = None,
        selection: Any | None = None,
    ) -> tuple[tuple[slice, slice], np.ndarray]:
        driver = self._driver
        href = self._src.uri

        def attempt(n: int) -> tuple[tuple[slice, slice], np.ndarray]:
            src = self._src if driver.sign is None else self._src.patch(uri=driver.sign(href))
            try:
                with rasterio.Env(**GDAL_NO_CACHE) if n > 1 else nullcontext():
                    return RioReader(src, self._ctx).read(cfg, dst_geobox, dst=dst, selection=selection)
            except rasterio.errors.RasterioError as exc:
                if driver.invalidate is not None and _status(exc) == 403:
                    driver.invalidate(href)  # a revoked or expired token: sign afresh next time
                raise

        try:
            roi, pixels = retry_call(attempt, policy=driver.policy, what=f"reading {redact(href)}", stop=driver.stop,
                                     retryable=lambda exc: _retryable(exc, signed=driver.invalidate is not None))
        except (VegediffError, RunInterrupted):
            raise
        except rasterio.errors.RasterioError as exc:
            raise _final_error(href, exc, driver) from exc
        if driver.on_read is not None:
            driver.on_read(int(pixels.size))
        return roi, pixels


def _retryable(exc: BaseException, *, signed: bool) -> bool:
    """Not worth another try: a bad request, a missing file, a host that does not resolve, or a
    refusal no new token can fix."""
    if _unresolved(exc):
        return False
    status = _status(exc)
    if status in (401, 403):
        return signed
    return status not in (400, 404, 410)


def _status(exc: BaseException) -> int | None:
    for err in (exc, exc.__cause__):
        match = _HTTP_STATUS.search(str(err or ""))
        if match:
            return int(match.group(1))
    return None


def _unresolved(exc: BaseException) -> bool:
    return any(_NO_HOST.search(str(err or "")) for err in (exc, exc.__cause__))


def _reason(exc: BaseException) -> str:
    """GDAL's own words: rasterio keeps the detailed message in the exception's cause."""
    text = str(exc.__cause__ or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _final_error(href: str, exc: BaseException, driver: RetryingDriver) -> VegediffError:
    attempts = driver.policy.attempts
    if _unresolved(exc):
        return no_network_error(href, f"reading {redact(href)}")
    status = _status(exc)
    signed = driver.sign(href) if driver.sign is not None else href
    problem = f"HTTP {status}" if status is not None else probe(signed, policy=driver.policy)
    if problem is not None:
        return RemoteError(
            f"cannot read {redact(href)}: {problem} after {attempts} tries",
            fix="the server failed or is rate-limiting: rerun later (finished dates are kept and the "
                "run resumes), or raise `retries`/`timeout`",
        )
    return CorruptInputError(
        f"{redact(href)} is not a readable COG ({redact(_reason(exc))})",
        fix="the file on the server is truncated or corrupt: rerun later (finished dates are kept) "
            "or report it to the data provider",
    )
