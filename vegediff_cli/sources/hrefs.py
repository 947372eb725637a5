"""Which asset hrefs of a STAC item may be read: http(s) URLs only, unless the user opts in.

A STAC API decides what GDAL opens: an item's asset href goes straight to ``rasterio.open``.
Without a check, an item whose href is ``file:///home/me/.ssh/id_rsa``, ``/etc/shadow``,
``../../secret.tif`` or ``/vsizip//data/x.zip/y.tif`` makes `fetch` read local files into the
cube. So every href is checked before anything is read:

- ``http`` and ``https`` URLs with a host are read (the default ``--href-schemes https,http``);
- other schemes (``s3``, ``gs``, ``az``, ``ftp``...) only when listed in ``--href-schemes``;
- local files (``file://`` URLs, absolute or relative paths) only with ``file`` listed;
- GDAL virtual file system paths (``/vsi...``) never: they bypass every rule above;
- a relative href is resolved against the item's own http(s) URL (its ``self`` link), as the
  STAC spec says; without one it counts as a local path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urljoin, urlsplit

from ..errors import CorruptInputError, UsageError
from ..redact import redact

DEFAULT_SCHEMES: tuple[str, ...] = ("https", "http")
LOCAL = "file"
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")


def parse_schemes(text: str | None) -> tuple[str, ...]:
    """``--href-schemes`` ("https,http,file") -> ("https", "http", "file")."""
    if text is None:
        return DEFAULT_SCHEMES
    schemes = tuple(dict.fromkeys(s.strip().lower().removesuffix("://") for s in text.split(",") if s.strip()))
    bad = [s for s in schemes if not _SCHEME.match(s) or s.startswith("vsi")]
    if not schemes or bad:
        raise UsageError(f"`href_schemes` '{text}' is not a list of URL schemes",
                         fix="e.g. `href_schemes` https,http (add file to read local paths, s3 for s3:// hrefs)")
    return schemes


def _kind(href: str) -> str:
    """The scheme an href would be read with: 'file' for local paths."""
    parts = urlsplit(href)
    scheme = parts.scheme.lower()
    if not scheme or len(scheme) == 1:  # a path, or a Windows drive letter
        return LOCAL
    return scheme


def check_href(href: str, *, schemes: Iterable[str] = DEFAULT_SCHEMES, base: str | None = None, what: str) -> str:
    """The href to read (relative ones resolved against `base`); CorruptInputError when not allowed.

    `what` names the asset in the message, e.g. "STAC item S2A_... asset B04".
    """
    allowed = tuple(schemes)
    text = str(href or "").strip()
    fix = "if you trust this STAC API, allow it with `href_schemes` " + ",".join(allowed)
    if not text or any(ord(c) < 32 for c in text):
        raise CorruptInputError(f"{what} has an empty or malformed href", fix="check the STAC API")
    kind = _kind(text)
    local_path = urlsplit(text).path if urlsplit(text).scheme.lower() == LOCAL else text
    if kind == LOCAL and local_path.lower().startswith("/vsi"):
        raise CorruptInputError(f"{what} points to the GDAL virtual file system path {redact(text)}",
                                fix="such hrefs are never read: use a STAC API whose assets are http(s) URLs")
    if kind == LOCAL and base and _kind(base) in ("http", "https") and not urlsplit(text).scheme:
        text = urljoin(base, text)  # relative to the item's own URL (STAC spec): a URL again
        kind = _kind(text)
    if kind not in allowed:
        where = "a local file" if kind == LOCAL else f"a {kind}:// URL"
        raise CorruptInputError(f"{what} points to {where} ({redact(text)}); only {', '.join(allowed)} hrefs are read",
                                fix=f"{fix},{kind}")
    if kind in ("http", "https") and not urlsplit(text).hostname:
        raise CorruptInputError(f"{what} has the URL {redact(text)} without a host", fix="check the STAC API")
    return text
