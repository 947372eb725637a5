"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Everything is written under a temporary name in the destination folder (same file system,
so ``os.replace`` is atomic) and renamed on success. On any exception, Ctrl-C included,
the temporary is removed and the previous output, if any, is left untouched.

:func:`output_lock` gives one run at a time the use of an output: an flock on a hidden
``.<name>.lock`` next to it (the kernel releases it however the process ends, so a killed run
never leaves a stale lock). Under the lock, temporaries a killed run left (SIGKILL skips every
``finally``) are removed; the lock file itself, and folders the run created and left empty, go
when the run ends.

:func:`write_failure` tells a full disk or a read-only folder (exit 10) from a damaged input
(exit 4) when a NetCDF write fails with HDF5's bare "HDF error" (vegediff_cli/io_errors.py).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError, VegediffError
from .io_errors import classify_io_error

PARTIAL_MARK = ".partial-"


def _prepare_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder {path.parent} ({exc.strerror})", fix="choose a writable `output`") from exc


def temp_sibling(path: Path) -> Path:
    """A hidden temporary name next to `path` that keeps its suffix (GDAL picks drivers by it)."""
    return path.with_name(f".{path.stem}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}{path.suffix}")


@contextmanager
def _output_errors(final: Path) -> Iterator[None]:
    """A full disk or read-only folder is exit 10 whatever library noticed it (io_errors.write_failure)."""
    try:
        yield
    except Exception as exc:
        error = write_failure(exc, final)
        if error is not None:
            raise error from exc
        raise


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces `path` in one rename."""
    final = Path(path)
    if final.is_dir():
        raise OutputError(f"{final} is a folder, not a file", fix="pass a file name as `output`")
    _prepare_parent(final)
    tmp = temp_sibling(final)
    try:
        with _output_errors(final):
            yield tmp
            if not tmp.exists():
                raise OutputError(f"nothing was written for {final}")
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces folder `path` as a whole."""
    final = Path(path)
    _prepare_parent(final)
    tmp = final.with_name(f".{final.name}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}")
    old = None
    try:
        with _output_errors(final):
            try:
                tmp.mkdir()
                yield tmp
                if final.exists():
                    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
                    os.replace(final, old)
                os.replace(tmp, final)
            except Exception:
                if old is not None and not final.exists():
                    os.replace(old, final)
                raise
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


def remove_stale_partials(path: str | os.PathLike) -> int:
    """Temporaries of output `path` a killed run left: ``.<stem>.partial-*<suffix>``, ``.<name>.partial-*``
    and ``.<name>.old-*`` next to it. Call it holding :func:`output_lock` (a live run's temporaries
    would otherwise go too)."""
    final = Path(path)
    if not final.parent.is_dir():
        return 0
    count = 0
    patterns = (f".{final.stem}{PARTIAL_MARK}*{final.suffix}", f".{final.name}{PARTIAL_MARK}*", f".{final.name}.old-*")
    for pattern in patterns:
        for entry in final.parent.glob(pattern):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            count += 1
    return count


def _created_folders(folder: Path) -> list[Path]:
    """The folders of `folder`'s chain that do not exist yet (deepest first)."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


@contextmanager
def output_lock(*paths: str | os.PathLike, what: str = "written") -> Iterator[None]:
    """Exclusive use of the outputs `paths` (one lock, named after the first) for this run.

    A second run on the same output fails at once with an OutputError naming the holder. Inside,
    temporaries killed runs left next to each output are removed first.
    """
    first = Path(paths[0])
    lock = first.parent / f".{first.name}.lock"
    created = _created_folders(first.parent)
    try:
        first.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder {first.parent} ({exc.strerror})",
                          fix="choose a writable `output` or `workdir`") from exc
    handle = None
    try:
        for _ in range(5):  # the lock file can be removed by the run that held it: lock the file at the path
            try:
                handle = open(lock, "a+")
            except OSError as exc:
                raise OutputError(f"cannot write next to {first} ({exc.strerror})",
                                  fix="choose a writable `output` or `workdir`") from exc
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                handle = None
                raise OutputError(f"{first} is being {what} by another vegediff run ({holder})",
                                  fix="wait for it to finish, or pass another `output`") from None
            try:
                same = os.fstat(handle.fileno()).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
            handle = None
        if handle is None:
            raise OutputError(f"cannot lock {first}", fix="retry; another run keeps replacing its lock file")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        for path in paths:
            remove_stale_partials(path)
        yield
    finally:
        if handle is not None:
            try:
                lock.unlink(missing_ok=True)  # while still holding it: a waiting run re-checks the inode
            except OSError:
                pass
            handle.close()
        for folder in created:  # a failed first run leaves no empty <workdir>/<TILE>/
            try:
                folder.rmdir()
            except OSError:
                break


def write_failure(exc: BaseException, output: str | os.PathLike) -> VegediffError | None:
    """The user-facing error for `exc` raised while writing `output` (see vegediff_cli/io_errors.py)."""
    return classify_io_error(exc, output=Path(output))
