"""A short, JSON-ready description of a cube (what `vegediff info` prints)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..config import STATIC_LAYERS, VALID
from .schema import grid_of, meteo_vars_present


def describe(ds: xr.Dataset) -> dict[str, Any]:
    grid = grid_of(ds)
    times = pd.DatetimeIndex(ds["time"].values)
    valid = ds[VALID].values.astype(bool)
    clear_per_frame = valid.mean(axis=(1, 2)) if valid.size else np.zeros(0)
    return {
        "source": ds.attrs.get("source", "unknown"),
        "crs": grid.crs,
        "shape": {"time": int(ds.sizes["time"]), "y": grid.height, "x": grid.width},
        "resolution": list(grid.resolution),
        "bounds": list(grid.bounds),
        "first_date": times[0].strftime("%Y-%m-%d") if len(times) else None,
        "last_date": times[-1].strftime("%Y-%m-%d") if len(times) else None,
        "clear_fraction": round(float(valid.mean()), 4) if valid.size else 0.0,
        "frames_with_clear_pixels": int((clear_per_frame > 0).sum()),
        "meteorology": meteo_vars_present(ds),
        "static_layers": [name for name in STATIC_LAYERS if name in ds],
        "variables": sorted(str(v) for v in ds.data_vars),
    }
