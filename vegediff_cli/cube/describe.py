"""A short, JSON-ready description of a cube (what `vegediff info` prints).

Read in bounded memory: the valid mask frame group by frame group (READ_BYTES at a time), so a
small, highly compressible file that declares a huge grid never has to be decompressed whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..config import METEO_VARS, STATIC_LAYERS, VALID, meteo_name
from .schema import grid_of

READ_BYTES = 64 << 20  # decompressed bytes alive at a time


def _frame_groups(da: xr.DataArray) -> list[slice]:
    """Slices of the leading axis whose decompressed size stays under READ_BYTES (at least one frame)."""
    per_frame = max(1, int(np.prod(da.shape[1:], dtype="int64")) * da.dtype.itemsize)
    step = max(1, READ_BYTES // per_frame)
    return [slice(i, min(i + step, da.shape[0])) for i in range(0, da.shape[0], step)]


def clear_fraction_per_frame(ds: xr.Dataset) -> np.ndarray:
    """(time,) share of clear pixels per frame, read group by group."""
    mask = ds[VALID].transpose("time", ...)
    if mask.size == 0:
        return np.zeros(mask.sizes.get("time", 0))
    return np.concatenate([np.asarray(mask.isel(time=group).values).astype(bool).reshape(
        group.stop - group.start, -1).mean(axis=1) for group in _frame_groups(mask)])


def _any_finite(da: xr.DataArray) -> bool:
    if da.ndim == 0:
        return bool(np.isfinite(da.values))
    return any(bool(np.isfinite(np.asarray(da[group].values)).any()) for group in _frame_groups(da))


def meteo_present(ds: xr.Dataset) -> list[str]:
    """E-OBS variables with at least one finite value (read in bounded groups)."""
    return [v for v in METEO_VARS if meteo_name(v) in ds and _any_finite(ds[meteo_name(v)])]


def describe(ds: xr.Dataset) -> dict[str, Any]:
    grid = grid_of(ds)
    times = pd.DatetimeIndex(ds["time"].values)
    clear_per_frame = clear_fraction_per_frame(ds)
    return {
        "source": ds.attrs.get("source", "unknown"),
        "crs": grid.crs,
        "shape": {"time": int(ds.sizes["time"]), "y": grid.height, "x": grid.width},
        "resolution": list(grid.resolution),
        "bounds": list(grid.bounds),
        "first_date": times[0].strftime("%Y-%m-%d") if len(times) else None,
        "last_date": times[-1].strftime("%Y-%m-%d") if len(times) else None,
        "clear_fraction": round(float(clear_per_frame.mean()), 4) if clear_per_frame.size else 0.0,
        "frames_with_clear_pixels": int((clear_per_frame > 0).sum()),
        "meteorology": meteo_present(ds),
        "static_layers": [name for name in STATIC_LAYERS if name in ds],
        "variables": sorted(str(v) for v in ds.data_vars),
    }


PRODUCT_ATTRS = ("source", "forecast_start", "members", "weights", "model", "sampler", "steps", "guidance_scale",
                 "seed", "precision", "meteo_source", "input", "forecast", "created", "vegediff_version")


def describe_product(ds: xr.Dataset) -> dict[str, Any]:
    """A forecast.nc or ensemble.nc (read lazily; one time step of data at most)."""
    grid = grid_of(ds)
    times = pd.DatetimeIndex(ds["time"].values)
    main = "ndvi_pred" if "ndvi_pred" in ds else "ndvi_mean" if "ndvi_mean" in ds else None
    covered = None
    if main is not None and len(times):
        first = np.asarray(ds[main].isel(time=0).values)
        covered = round(float(np.isfinite(first).mean()), 4) if first.size else 0.0
    made = ds.attrs.get("vegediff_made_from")
    return {
        "product": "forecast" if "ndvi_pred" in ds else "ensemble" if "ndvi_mean" in ds else "unknown",
        "crs": grid.crs,
        "shape": {"time": int(ds.sizes["time"]), "y": grid.height, "x": grid.width,
                  **({"member": int(ds.sizes["member"])} if "member" in ds.sizes else {})},
        "resolution": list(grid.resolution),
        "bounds": list(grid.bounds),
        "first_date": times[0].strftime("%Y-%m-%d") if len(times) else None,
        "last_date": times[-1].strftime("%Y-%m-%d") if len(times) else None,
        "forecast_fraction_first_step": covered,
        "variables": sorted(str(v) for v in ds.data_vars if v != "spatial_ref"),
        **{k: ds.attrs[k] for k in PRODUCT_ATTRS if k in ds.attrs},
        "made_from": made if made is None else _short_record(made),
    }


def _short_record(text: str) -> Any:
    import json

    try:
        record = json.loads(text)
    except ValueError:
        return text
    return {"step": record.get("step"), "inputs": record.get("inputs"), "settings": record.get("settings")}


def is_product(path: str | os.PathLike) -> bool:
    """True for a forecast or ensemble file (recognised by its variables), False for a cube."""
    from .readers import open_netcdf

    ds = open_netcdf(path)
    try:
        return "ndvi_pred" in ds or "ndvi_mean" in ds
    finally:
        ds.close()


def describe_file(path: str | os.PathLike) -> dict[str, Any]:
    """A cube's description, or a forecast's / ensemble's (what `vegediff info` shows)."""
    from .netcdf_stream import open_grid
    from .readers import open_cube

    if Path(path).suffix.lower() != ".npz" and is_product(path):
        with open_grid(path) as ds:
            return describe_product(ds)
    return describe(open_cube(path))
