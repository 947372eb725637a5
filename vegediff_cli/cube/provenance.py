"""What a file was made from: the identity of every input and the settings, recorded in each product.

Every product a step writes (``s2_raw.nc``, ``cube.nc``, ``forecast.nc``, ``ensemble.nc``) carries two
global attributes:

- ``vegediff_product_id``: a random id of this very file, new at every write; the identity
  downstream steps record for it (cheap to read: one header attribute, whatever the file size);
- ``vegediff_made_from``: JSON ``{"step", "version", "inputs": {role: identity}, "settings": {...}}``.

Files that are not vegediff products (minicubes, GeoTIFF scenes, ERA5 files, weights) are
identified by size, modification time and a SHA-256 of their first and last MiB.

A COG folder written next to a product gets a hidden ``.<folder>.vegediff.json`` beside it with the
id of the product it was exported from, so a folder left by an earlier run is recognised as stale
(the folder itself holds only the GeoTIFFs).

With these records a step can (a) skip a rerun whose inputs and settings did not change ("up to
date"), (b) notice that an input was made from files that have changed since (stale), and
(c) never pair a product with a neighbour made from something else.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import __version__

PRODUCT_ID = "vegediff_product_id"
MADE_FROM = "vegediff_made_from"
COG_MARKER = ".vegediff.json"  # suffix of the marker beside a COG folder
_EDGE = 1 << 20  # bytes hashed at each end of a foreign file


def new_product_id() -> str:
    return uuid.uuid4().hex


def read_attrs(path: str | os.PathLike, names: Sequence[str] = (PRODUCT_ID, MADE_FROM)) -> dict[str, str]:
    """Global attributes of a NetCDF file from its header only ({} when unreadable or not NetCDF)."""
    try:
        import netCDF4

        with netCDF4.Dataset(str(path)) as nc:
            return {name: str(nc.getncattr(name)) for name in names if name in nc.ncattrs()}
    except Exception:  # noqa: BLE001 - not a (readable) NetCDF file: no provenance
        return {}


def product_id(path: str | os.PathLike) -> str | None:
    return read_attrs(path, (PRODUCT_ID,)).get(PRODUCT_ID)


def made_from(path: str | os.PathLike) -> dict[str, Any] | None:
    text = read_attrs(path, (MADE_FROM,)).get(MADE_FROM)
    try:
        record = json.loads(text) if text else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def file_identity(path: str | os.PathLike | None) -> str | None:
    """The identity of an input: its product id for vegediff products, else a content fingerprint."""
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        return f"missing:{path.name}"
    if path.is_dir():
        return "dir:" + ",".join(f"{p.name}={file_identity(p)}" for p in sorted(path.iterdir()) if p.is_file())
    if path.suffix.lower() in (".nc", ".nc4", ".cdf", ".netcdf"):
        known = product_id(path)
        if known:
            return f"product:{known}"
    stat = path.stat()
    digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(_EDGE))
        if stat.st_size > 2 * _EDGE:
            handle.seek(-_EDGE, os.SEEK_END)
            digest.update(handle.read(_EDGE))
    return f"file:{digest.hexdigest()[:32]}"


def redacted_url(url: str | None) -> str | None:
    """A URL as recorded in a file: credentials masked (they rotate; the data behind them does not)."""
    if url is None:
        return None
    from ..redact import redact

    return redact(url)


def record(step: str, inputs: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The made-from record of a product (inputs: role -> path, list of paths, str or None)."""

    def identity(value: Any) -> Any:
        if value is None or isinstance(value, str | int | float | bool):
            return value
        if isinstance(value, os.PathLike):
            return file_identity(value)
        if isinstance(value, Sequence):
            return [identity(v) for v in value]
        return str(value)

    return {"step": step, "version": __version__, "inputs": {k: identity(v) for k, v in inputs.items()},
            "settings": json.loads(json.dumps(dict(settings), default=str, sort_keys=True))}


def product_attrs(made: Mapping[str, Any]) -> dict[str, str]:
    """The two global attributes to write into a new product."""
    return {PRODUCT_ID: new_product_id(), MADE_FROM: json.dumps(made, sort_keys=True)}


def same_record(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    return old is not None and json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True)


def write_cog_marker(folder: str | os.PathLike, source: str | os.PathLike, attrs: Mapping[str, Any]) -> None:
    """Record in a COG folder which product (`attrs`: the ones written into `source`) it was exported from.

    The id is taken from `attrs`, not read back from `source`: HDF5 may crash when a file that is
    still open elsewhere in the process is opened a second time.
    """
    marker_of(folder).write_text(json.dumps({"product": attrs[PRODUCT_ID], "file": Path(source).name}) + "\n")


def marker_of(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    return folder.parent / f".{folder.name}{COG_MARKER}"


def cogs_match(folder: str | os.PathLike, source: str | os.PathLike) -> bool:
    """True when `folder` holds the COGs of exactly this `source` product."""
    try:
        if not Path(folder).is_dir():
            return False
        marker = json.loads(marker_of(folder).read_text())
    except (OSError, ValueError):
        return False
    known = product_id(source)
    return known is not None and isinstance(marker, dict) and marker.get("product") == known


def up_to_date(output: str | os.PathLike, made: Mapping[str, Any], *, cogs: str | os.PathLike | None = None) -> bool:
    """The output exists, was made from exactly these inputs and settings, and its COG folder (if any is
    wanted) belongs to it."""
    output = Path(output)
    if not output.is_file() or not same_record(made_from(output), made):
        return False
    return cogs is None or cogs_match(cogs, output)


def stale_input(path: str | os.PathLike, role: str, current: str | os.PathLike) -> bool:
    """True when product `path` records input `role` with another identity than `current` has now.

    Products without a record (older versions, foreign files) are never called stale.
    """
    recorded = (made_from(path) or {}).get("inputs", {}).get(role)
    if recorded is None or not Path(current).exists():
        return False
    return recorded != file_identity(current)
