"""Progress reporting that library code can call without knowing about terminals.

Library functions take ``progress: ProgressFactory = no_progress``; the CLI passes
:func:`tqdm_progress`, which draws on stderr only when it is a TTY and ``--quiet`` is off.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol


class ProgressBar(Protocol):
    def update(self, n: int = 1) -> object: ...


class _Silent:
    def update(self, n: int = 1) -> None:
        return None


ProgressFactory = Callable[[int, str], AbstractContextManager[ProgressBar]]


def no_progress(total: int, desc: str) -> AbstractContextManager[ProgressBar]:
    return nullcontext(_Silent())


def tqdm_progress(*, quiet: bool = False) -> ProgressFactory:
    """A factory of tqdm bars on stderr; silent when quiet or when stderr is not a terminal."""
    from tqdm import tqdm

    enabled = not quiet and sys.stderr.isatty()

    def factory(total: int, desc: str) -> AbstractContextManager[ProgressBar]:
        if not enabled:
            return nullcontext(_Silent())
        return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)

    return factory
