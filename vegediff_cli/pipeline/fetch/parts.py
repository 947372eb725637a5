"""Resumable fetches: one verified part file per acquisition date, next to the output.

``<output folder>/.<output name>.parts/`` holds ``YYYY-MM-DD.tif`` and ``YYYY-MM-DD.json``.
A part is a tiled, deflate-compressed GeoTIFF with 6 int16 bands: B02, B03, B04, B8A as
reflectance x 10000 (the cube's own int16 encoding, -32768 = no data), SCL and valid_mask.
GeoTIFF rather than NetCDF because several dates are written at once from worker threads:
GDAL handles concurrent writes to separate files, the netCDF/HDF5 library does not.

The part is written atomically first; the JSON record (which items, grid, size, SHA-256)
is written atomically after it, so a record means "this part is complete". A rerun trusts
a part only when its record matches what it is about to fetch and the file still has the
recorded size and checksum; anything else is fetched again. The folder is removed once the
output has been assembled.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rioxarray
import xarray as xr

from ...atomic import PARTIAL_MARK, atomic_file, output_lock, remove_partials
from ...config import BANDS, DEFAULT_CLEAR_SCL, REFLECTANCE_SCALE, SCL, VALID
from ...cube.cog import write_strips
from ...cube.schema import BAND_LONG_NAMES, grid_coords
from ...errors import OutputError
from ...geo import GridSpec

PART_FORMAT = 2  # bump when the part layout changes: older parts are then fetched again
PART_LAYERS: tuple[str, ...] = (*BANDS, SCL, VALID)
NODATA = -32768  # int16 no-data of the reflectance layers (as in the cube's NetCDF encoding)
BLOCK = 512  # GeoTIFF tile size


def sha256_of(path: Path, *, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def encode(frame: xr.Dataset) -> xr.DataArray:
    """A (time=1, y, x) frame -> (band=6, y, x) int16, lazily (dask chunks stay chunks)."""
    frame = frame.isel(time=0, drop=True)
    layers = [(frame[b].clip(-3.2767, 3.2767) / REFLECTANCE_SCALE).round().fillna(NODATA).astype("int16") for b in BANDS]
    layers += [frame[SCL].astype("int16"), frame[VALID].astype("int16")]
    stacked = xr.concat(layers, dim="band", coords="minimal", compat="override", join="override")
    return stacked.assign_coords(band=np.arange(1, len(PART_LAYERS) + 1))


def decode(layers: xr.DataArray, grid: GridSpec, day: str) -> xr.Dataset:
    """(band=6, y, x) int16 -> a (time=1, y, x) frame on `grid` (coordinates taken from the grid)."""
    y, x = grid_coords(grid)
    data = {}
    for i, name in enumerate(PART_LAYERS):
        layer = xr.DataArray(layers.isel(band=i).data, dims=("y", "x"))  # no GeoTIFF attrs (_FillValue...)
        if name in BANDS:
            layer = layer.where(layer != NODATA).astype("float32") * np.float32(REFLECTANCE_SCALE)
            attrs = {"long_name": BAND_LONG_NAMES[name], "units": "1"}
        elif name == SCL:
            layer = layer.astype("uint8")
            attrs = {"long_name": "Sentinel-2 scene classification (SCL)"}
        else:
            layer = layer.astype("uint8")
            attrs = {"long_name": "clear-sky valid observation flag",
                     "clear_scl_classes": " ".join(map(str, DEFAULT_CLEAR_SCL))}
        data[name] = layer.assign_attrs(attrs)
    frame = xr.Dataset(data).assign_coords(y=y, x=x)
    return frame.expand_dims(time=pd.DatetimeIndex([pd.Timestamp(day)]).as_unit("ns")).transpose("time", "y", "x")


class PartStore:
    """The parts folder of one output file."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.root = output.parent / f".{output.name}.parts"

    def lock(self) -> AbstractContextManager[None]:
        """Exclusive use of the output and its parts: overlapping cron runs must not interleave.

        An flock on a hidden file next to the output (atomic.output_lock); the kernel releases it
        when the process ends, however it ends, and the file goes with the run that made it.
        """
        return output_lock(self.output, what="fetched")

    def part(self, key: str) -> Path:
        return self.root / f"{key}.tif"

    def record(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def clean_partials(self) -> int:
        """Remove temporaries a killed run left behind (SIGKILL skips cleanup); call under lock()."""
        stale = list(self.output.parent.glob(f".{self.output.stem}{PARTIAL_MARK}*{self.output.suffix}"))
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale) + remove_partials(self.root)

    def is_complete(self, key: str, identity: dict[str, Any]) -> bool:
        """True when part `key` was finished for exactly `identity` and is intact on disk."""
        part, record = self.part(key), self.record(key)
        if not (part.is_file() and record.is_file()):
            return False
        try:
            saved = json.loads(record.read_text())
        except (OSError, ValueError):
            return False
        if saved.get("identity") != identity or saved.get("format") != PART_FORMAT:
            return False
        return part.stat().st_size == saved.get("bytes") and sha256_of(part) == saved.get("sha256")

    def write(self, key: str, frame: xr.Dataset, identity: dict[str, Any], *, grid: GridSpec,
              rows: int = 1024) -> Path:
        """Write the part, computing its lazy data `rows` image rows at a time, then its record.

        One strip at a time bounds memory: dask would otherwise start every read of the frame
        (the roots of its graph) before writing any block.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {self.root} ({exc.strerror})", fix="choose a writable `output`") from exc
        target = self.part(key)
        # a temporary file: fast ZSTD (8x faster than DEFLATE here, as small)
        write_strips(encode(frame).data, target, crs=grid.crs, transform=grid.transform, names=PART_LAYERS,
                     nodata=NODATA, rows=rows, blocksize=BLOCK, compress={"compress": "zstd", "zstd_level": 1})
        doc = {"format": PART_FORMAT, "identity": identity, "bytes": target.stat().st_size,
               "sha256": sha256_of(target)}
        with atomic_file(self.record(key)) as tmp:
            tmp.write_text(json.dumps(doc, indent=1))
        return target

    def read(self, key: str, grid: GridSpec, *, chunk: int) -> xr.Dataset:
        """The part as a lazy frame (dask chunks of `chunk` pixels)."""
        layers = rioxarray.open_rasterio(self.part(key), chunks={"band": -1, "y": chunk, "x": chunk}, lock=False,
                                         mask_and_scale=False)
        return decode(layers, grid, key)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
