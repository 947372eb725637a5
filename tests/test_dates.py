"""vegediff_cli/dates.py: the one strict parser of user dates."""

from __future__ import annotations

from datetime import date

import pytest

from vegediff_cli.dates import parse_day
from vegediff_cli.errors import UsageError


def test_iso_days_parse_and_spaces_are_ignored():
    assert parse_day("2017-08-13", name="start") == date(2017, 8, 13)
    assert parse_day(" 2024-02-29 ", name="end") == date(2024, 2, 29)


@pytest.mark.parametrize("text", ["May 40th", "2021-13-01", "2023-02-29", "20240301", "2024-W10-1", "2024/03/01",
                                  "2024-03-01T00:00", "2024-3-1", ""])
def test_anything_else_is_a_usage_error_quoting_the_value(text: str):
    with pytest.raises(UsageError) as info:
        parse_day(text, name="anchor")
    assert info.value.problem == f"`anchor` '{text}' is not a date"
    assert "YYYY-MM-DD" in info.value.fix and info.value.exit_code == 2
