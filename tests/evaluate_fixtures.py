"""Real forecast files for the evaluate tests, built from real data in the documented formats.

`forecast` and `ensemble` are separate commands; until their files exist in the shared data, these
helpers write the same files from real inputs: a published model's prediction (Contextformer) plus
spatially correlated noise that grows with lead time as members, and the ensemble statistics of
those members. Every file goes through the project's NetCDF writer, so evaluate reads it through
the same code path as a real forecast.nc / ensemble.nc.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

from vegediff_cli.cube.netcdf import write_netcdf
from vegediff_cli.cube.predictions import read_forecast
from vegediff_cli.cube.readers import open_cube
from vegediff_cli.pipeline.observed import context_indices, observed_ndvi

THRESHOLDS = (0.3, 0.5)
DROPS = (0.1, 0.2)


def member_forecast(cube_path: Path, prediction_path: Path, out: Path, *, members: int = 8, seed: int = 7,
                    spread: float = 0.06) -> Path:
    """forecast.nc: ndvi_member = prediction + smooth noise (std `spread` x sqrt(lead)), ndvi_pred = member mean."""
    cube = open_cube(cube_path)
    base = read_forecast(prediction_path)["ndvi_pred"].values.astype("float64")  # (T, H, W)
    rng = np.random.default_rng(seed)
    steps = base.shape[0]
    noise = rng.standard_normal((members, *base.shape))
    noise = ndimage.gaussian_filter(noise, sigma=(0, 0, 3, 3))  # spatially coherent errors, like a real model's
    noise /= noise.std(axis=(2, 3), keepdims=True)
    lead = np.sqrt(np.arange(1, steps + 1) / steps)[None, :, None, None]
    values = np.clip(base[None] + spread * lead * noise + 0.02 * rng.standard_normal((members, 1, 1, 1)), -1, 1)
    times = pd.DatetimeIndex(read_forecast(prediction_path)["time"].values)
    ds = xr.Dataset(
        {"ndvi_pred": (("time", "y", "x"), values.mean(axis=0).astype("float32"), {"units": "1"}),
         "ndvi_member": (("member", "time", "y", "x"), values.astype("float32"), {"units": "1"})},
        coords={"member": np.arange(members), "time": times, "y": cube["y"].values, "x": cube["x"].values},
        attrs={"members": members, "source": f"test members around {prediction_path.parent.name}"},
    ).rio.write_crs(cube.rio.crs)
    return write_netcdf(ds, out)


def ensemble_file(cube_path: Path, forecast_path: Path, out: Path) -> Path:
    """ensemble.nc from a member forecast: mean, std, quantiles, P(NDVI < threshold), P(drop > d)."""
    cube = open_cube(cube_path)
    forecast = read_forecast(forecast_path)
    members = forecast["ndvi_member"].values.astype("float64")  # (M, T, H, W)
    frames = pd.DatetimeIndex(cube["time"].values).get_indexer(pd.DatetimeIndex(forecast["time"].values))
    last = np.full(members.shape[2:], np.nan)
    for values in observed_ndvi(cube, context_indices(int(frames[0]))):
        last = np.where(np.isfinite(values), values, last)
    dims = ("time", "y", "x")
    ds = xr.Dataset(
        {
            "ndvi_mean": (dims, members.mean(0).astype("float32")),
            "ndvi_std": (dims, members.std(0, ddof=1).astype("float32")),
            **{f"ndvi_p{q}": (dims, np.quantile(members, q / 100, axis=0).astype("float32")) for q in (10, 50, 90)},
            "prob_ndvi_below": (("threshold", *dims),
                                np.stack([(members < t).mean(0) for t in THRESHOLDS]).astype("float32")),
            "prob_ndvi_drop": (("drop", *dims),
                               np.stack([((last[None, None] - members) > d).mean(0) for d in DROPS]).astype("float32")),
        },
        coords={"threshold": list(THRESHOLDS), "drop": list(DROPS), "time": forecast["time"].values,
                "y": forecast["y"].values, "x": forecast["x"].values},
        attrs={"members": members.shape[0]},
    ).rio.write_crs(cube.rio.crs)
    return write_netcdf(ds, out)
