"""Planetary Computer URL signing: SAS tokens from the documented token endpoint, cached until expiry.

The Planetary Computer serves its COGs from Azure Blob Storage, readable with a shared access
signature (SAS) token appended as a query string. A token for one storage account and
container comes from ``GET {sas_url}/{account}/{container}`` (JSON ``token``,
``msft:expiry``), the call the official ``planetary-computer`` package makes. It is written
out here (a few lines) so that it follows the fetch retry policy, refreshes a token that
expires during a long run, and can be tested against a loopback server: besides
``https://{account}.blob.core.windows.net/{container}/...`` it understands path-style blob
URLs ``http://127.0.0.1:{port}/{account}/{container}/...`` on loopback hosts, as the Azurite
storage emulator serves them.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

from ..errors import RemoteError
from .http import RetryPolicy, get_json, new_session

DEFAULT_SAS_URL = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
ENV_SAS_URL = "VEGEDIFF_PC_SAS_URL"  # also read: PC_SDK_SAS_URL, as the official SDK does
ENV_SUBSCRIPTION_KEY = "PC_SDK_SUBSCRIPTION_KEY"  # optional; raises the PC rate limits
BLOB_DOMAIN = ".blob.core.windows.net"
REFRESH_MARGIN = timedelta(minutes=5)  # renew a token this long before it expires


def default_sas_url() -> str:
    return os.environ.get(ENV_SAS_URL) or os.environ.get("PC_SDK_SAS_URL") or DEFAULT_SAS_URL


@dataclass(frozen=True)
class _Token:
    query: str  # "st=...&se=...&sig=..."
    expires: datetime


def blob_container(href: str) -> tuple[str, str] | None:
    """(account, container) of an Azure blob URL, or None for any other URL."""
    parsed = urlparse(href)
    host = parsed.hostname or ""
    parts = [p for p in parsed.path.split("/") if p]
    if host.endswith(BLOB_DOMAIN) and len(parts) >= 2:
        return host[: -len(BLOB_DOMAIN)], parts[0]
    if _is_local(host) and len(parts) >= 3:  # path-style: /{account}/{container}/{blob}
        return parts[0], parts[1]
    return None


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SasSigner:
    """Signs blob hrefs with cached SAS tokens; thread-safe, one token per (account, container)."""

    def __init__(self, sas_url: str | None = None, *, policy: RetryPolicy = RetryPolicy(),
                 stop: threading.Event | None = None) -> None:
        self.sas_url = (sas_url or default_sas_url()).rstrip("/")
        self.policy = policy
        self.stop = stop
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._lock = threading.Lock()
        self._session = new_session()
        key = os.environ.get(ENV_SUBSCRIPTION_KEY)
        if key:
            self._session.headers["Ocp-Apim-Subscription-Key"] = key

    def __call__(self, href: str) -> str:
        """`href` with a valid SAS token appended; other URLs and signed ones are returned as they are."""
        target = blob_container(href)
        if target is None or "sig=" in (urlparse(href).query or ""):
            return href
        token = self._token(target)
        separator = "&" if urlparse(href).query else "?"
        return f"{href}{separator}{token.query}"

    def invalidate(self, href: str) -> None:
        """Forget the token of `href`'s container (after a 403: it was revoked or expired early)."""
        target = blob_container(href)
        with self._lock:
            self._tokens.pop(target, None)  # type: ignore[arg-type]

    def _token(self, target: tuple[str, str]) -> _Token:
        with self._lock:
            token = self._tokens.get(target)
            if token is not None and token.expires - REFRESH_MARGIN > datetime.now(UTC):
                return token
            url = f"{self.sas_url}/{target[0]}/{target[1]}"
            doc = get_json(url, policy=self.policy, what="SAS token endpoint", session=self._session, stop=self.stop)
            try:
                token = _Token(query=str(doc["token"]).lstrip("?"), expires=_parse_expiry(doc["msft:expiry"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise RemoteError(
                    f"SAS token endpoint {url} answered without 'token' and 'msft:expiry'",
                    fix="check `sas_url` (default: the Planetary Computer token API)",
                ) from exc
            self._tokens[target] = token
            return token


def _parse_expiry(text: str) -> datetime:
    when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)
