"""Dates given by the user: one strict parser for every step (fetch periods, forecast start, frame anchor)."""

from __future__ import annotations

import re
from datetime import date

from .errors import UsageError

ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")  # YYYY-MM-DD only: no 20240301, 2024-W10-1, "May 40th" or times


def parse_day(text: str, *, name: str) -> date:
    """`text` as a calendar day, strictly ISO 8601 ``YYYY-MM-DD`` (surrounding spaces ignored).

    `name` is the parameter the value was given for; the UsageError quotes it and the bad value.
    Lenient parsers read "May 40th" as 2040-05-01 or "2021-13-01" as something else, so nothing
    else is accepted.
    """
    value = str(text).strip()
    try:
        if ISO_DAY.fullmatch(value) is None:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"`{name}` '{text}' is not a date", fix="write it as YYYY-MM-DD, e.g. 2024-03-01") from None
