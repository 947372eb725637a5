"""Credentials never reach a terminal, a log or a JSON summary: one helper masks them in any text.

Masked (the value becomes ``REDACTED``, the rest of the text stays readable):

- the user-info of URLs: ``https://user:password@host/`` -> ``https://REDACTED@host/``;
- the values of query parameters that carry secrets: Azure SAS tokens (``sig``, ``se``, ``st``,
  ``sp``, ``sv``, ``sr``, ``skoid``...), S3 / GCS presigned URLs (``X-Amz-*``, ``X-Goog-*``,
  ``Signature``, ``Policy``, ``Key-Pair-Id``, ``AWSAccessKeyId``), and ``token``, ``api_key``,
  ``access_token``, ``password``, ``secret``, ``key``..., in URLs and in bare query strings
  (a SAS token printed on its own);
- the values of secret environment variables (``PC_SDK_SUBSCRIPTION_KEY``,
  ``AWS_SECRET_ACCESS_KEY``...) wherever they appear.

Every place that prints goes through :func:`redact`: the CLI's error line and ``--debug``
traceback (cli/app.py), every log record (:class:`RedactingFormatter`, installed by
cli/options.py), ``--json`` output (:func:`redact_json`) and the provenance attributes written
into output files.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

MASK = "REDACTED"

# Query parameters whose value is a credential or part of one (compared in lower case). Strong names
# are masked wherever "name=value" appears; weak ones (short or common words) only inside a query
# string (after "?" or "&"), so that "se=0.1" in a message stays readable.
STRONG_PARAMS = frozenset({
    "sig", "signature", "token", "access_token", "id_token", "refresh_token", "api_key", "apikey", "api-key",
    "subscription-key", "subscription_key", "password", "passwd", "pwd", "secret", "client_secret",
    "awsaccesskeyid", "googleaccessid", "key-pair-id", "credential", "credentials", "skoid", "sktid", "sks",
})
WEAK_PARAMS = frozenset({
    # the other fields of Azure shared access signatures (Planetary Computer tokens)
    "se", "st", "sp", "sv", "sr", "spr", "srt", "ss", "sip", "si", "sdd", "skt", "ske", "skv", "saoid", "suoid",
    "scid",
    # CloudFront / generic
    "policy", "expires", "key", "code", "auth", "authorization", "session", "sessionid",
})
SECRET_PREFIXES = ("x-amz-", "x-goog-", "x-ms-")
SECRET_ENV = ("PC_SDK_SUBSCRIPTION_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID",
              "GS_SECRET_ACCESS_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_ACCESS_KEY", "CDSAPI_KEY",
              "VEGEDIFF_SECRET")

# scheme://user:password@  (user-info ends at the first @ before the host; no '/' inside)
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@'\"<>]+)@")
# name=value inside a query string or a bare token ("st=...&sig=..."): name, then the value up to a delimiter
_PARAM = re.compile(r"(?P<lead>[?&;\s'\"(,]|^)(?P<name>[A-Za-z][A-Za-z0-9_.-]*)=(?P<value>[^&\s'\"<>;,)#]*)")


def _is_secret(name: str, lead: str) -> bool:
    lower = name.lower()
    if lower in STRONG_PARAMS or lower.startswith(SECRET_PREFIXES):
        return True
    return lower in WEAK_PARAMS and lead in ("?", "&")


def _param(match: re.Match[str]) -> str:
    if not _is_secret(match["name"], match["lead"]) or not match["value"] or match["value"] == MASK:
        return match[0]
    return f"{match['lead']}{match['name']}={MASK}"


def redact(text: object) -> str:
    """`text` with every credential masked (see the module docstring)."""
    out = str(text)
    if not out:
        return out
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", out)
    if "=" in out:
        out = _PARAM.sub(_param, out)
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 6 and value in out:
            out = out.replace(value, MASK)
    return out


def redact_json(value: Any) -> Any:
    """Every string of a JSON-ready structure (dict keys included) redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redact_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_json(v) for v in value]
    return value


class RedactingFormatter(logging.Formatter):
    """A logging formatter whose output (message, arguments and traceback) is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
