"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Everything is written under a temporary name in the destination folder (same file system,
so ``os.replace`` is atomic) and renamed on success. On any exception, Ctrl-C included,
the temporary is removed and the previous output, if any, is left untouched.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

PARTIAL_MARK = ".partial-"


def _prepare_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder {path.parent} ({exc.strerror})", fix="choose a writable --output") from exc


def temp_sibling(path: Path) -> Path:
    """A hidden temporary name next to `path` that keeps its suffix (GDAL picks drivers by it)."""
    return path.with_name(f".{path.stem}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}{path.suffix}")


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces `path` in one rename."""
    final = Path(path)
    _prepare_parent(final)
    tmp = temp_sibling(final)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"nothing was written for {final}")
        os.replace(tmp, final)
    except OSError as exc:
        raise OutputError(f"cannot write {final} ({exc})", fix="check free space and permissions") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces folder `path` as a whole."""
    final = Path(path)
    _prepare_parent(final)
    tmp = final.with_name(f".{final.name}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    old = None
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
        os.replace(tmp, final)
    except OSError as exc:
        if old is not None and not final.exists():
            os.replace(old, final)
        raise OutputError(f"cannot write {final} ({exc})", fix="check free space and permissions") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)


def remove_partials(folder: str | os.PathLike) -> int:
    """Delete temporaries left by a killed process (SIGKILL skips `finally`); returns the count."""
    count = 0
    root = Path(folder)
    if not root.is_dir():
        return 0
    for entry in root.iterdir():
        if entry.name.startswith(".") and (PARTIAL_MARK in entry.name or ".old-" in entry.name):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            count += 1
    return count
