"""Commands announced in --help whose implementation has not landed yet."""

from __future__ import annotations

from ..errors import UsageError


def not_available(command: str, issue: int) -> UsageError:
    return UsageError(
        f"`vegediff {command}` is not available in this release yet (tracked as issue {issue})",
        fix="see README.md for the commands that work now",
    )
