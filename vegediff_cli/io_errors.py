"""Turn low-level I/O failures into the documented errors: a damaged input (exit 4) or an output that
cannot be written (exit 10), never an "internal error".

NetCDF reads are lazy: a corrupt chunk of an input surfaces wherever its values are first used
(a validation, a dask computation, a streamed write), as HDF5's bare ``RuntimeError("NetCDF: HDF
error")``, which a full disk or a file-size limit also raise while writing. The traceback tells
which side failed: xarray's NetCDF array wrapper ``_getitem`` (reading, and it knows the file) or
netCDF4's ``__setitem__`` / ``sync`` / ``close`` (writing). OSError numbers settle the rest.
"""

from __future__ import annotations

import errno
import shutil
import traceback
from pathlib import Path

from .errors import CorruptInputError, OutputError, VegediffError

_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
_HDF_WORDS = ("HDF", "NetCDF", "netcdf", "No space", "Errno", "errno", "Disk quota", "File too large")
_READ_FUNCTIONS = {"_getitem", "__getitem__", "get_duck_array", "_get", "getitem", "read", "_read"}
_WRITE_FUNCTIONS = {"__setitem__", "_put", "sync", "close", "store", "set_variable", "prepare_variable",
                    "createVariable", "to_netcdf", "write", "_write", "__exit__"}


def _read_source(exc: BaseException) -> str | None:
    """The file an xarray NetCDF read was reading when `exc` was raised (None: not a read)."""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_name == "_getitem" and "netCDF4_" in frame.f_code.co_filename:
            store = getattr(frame.f_locals.get("self"), "datastore", None)
            return str(getattr(store, "_filename", None) or "an input file")
    return None


def _last_side(exc: BaseException) -> str | None:
    """'read' or 'write': the innermost I/O function in the traceback."""
    names = [f.name for f in traceback.extract_tb(exc.__traceback__)]
    for name in reversed(names):
        if name in _READ_FUNCTIONS:
            return "read"
        if name in _WRITE_FUNCTIONS:
            return "write"
    return None


def classify_io_error(exc: BaseException, *, output: Path | None = None) -> VegediffError | None:
    """CorruptInputError for a failed read of an input, OutputError for a failed write of `output`,
    None for anything else (a bug stays a bug)."""
    if isinstance(exc, VegediffError | KeyboardInterrupt):
        return None
    if isinstance(exc, OSError) and getattr(exc, "errno", None) in _WRITE_ERRNOS and output is not None:
        return output_error(output, exc.strerror or str(exc))
    if not isinstance(exc, OSError | RuntimeError | ValueError):
        return None
    text = str(exc)
    if not any(word in text for word in _HDF_WORDS):
        return None
    source = _read_source(exc)
    if source is not None or (_last_side(exc) == "read" and output is None):
        reason = text.splitlines()[0][:160] if text else type(exc).__name__
        return CorruptInputError(f"{source or 'an input file'} could not be read ({reason})",
                                 fix="the file is damaged or truncated: re-create it with the step that made it")
    if output is not None:
        return output_error(output, text.splitlines()[0][:160] if text else type(exc).__name__)
    return None


def output_error(final: Path, reason: str) -> OutputError:
    try:
        free = shutil.disk_usage(final.parent).free
        space = f"; {free / 2**30:.1f} GiB free there" if free < 2**30 else ""
    except OSError:
        space = ""
    return OutputError(f"cannot write {final} ({reason}{space})",
                       fix="free disk space (or check the file-size limit and permissions), then run the step again")
