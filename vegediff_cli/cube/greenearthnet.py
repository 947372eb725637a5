"""GreenEarthNet / EarthNet2021x minicubes -> vegediff cube.

Minicubes hold daily time steps with Sentinel-2 on every 5th day, lat/lon axes on a regular
geographic grid (EPSG:4326 centres), daily E-OBS series and static layers. The frame phase
(which day of each 5 holds Sentinel-2) is found from the data, not assumed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..config import BANDS, DLMASK, METEO_VARS, SCL, STATIC_LAYERS, STEP_DAYS, meteo_name
from . import schema
from .masks import valid_from_sources

LICENCE_NOTE = (
    "Sentinel-2: Copernicus open data; E-OBS: non-commercial research and education only; "
    "ESA WorldCover and Geomorpho90m: CC-BY-4.0; EarthNet2021x: CC-BY-NC-SA-4.0"
)


def is_minicube(raw: xr.Dataset) -> bool:
    return {"lat", "lon", "time"} <= set(raw.dims) and "s2_B02" in raw


def frame_phase(raw: xr.Dataset) -> int:
    """Index (0-4) of the day within each 5-day block that carries Sentinel-2 data."""
    has_data = np.isfinite(raw["s2_B8A"].values).any(axis=(1, 2))
    counts = [int(has_data[p::STEP_DAYS].sum()) for p in range(STEP_DAYS)]
    best = int(np.argmax(counts))
    # With no data at all, fall back to GreenEarthNet's documented convention time[4::5].
    return best if counts[best] > 0 else STEP_DAYS - 1


def minicube_to_cube(raw: xr.Dataset, *, path: Path, phase: int | None = None) -> xr.Dataset:
    """Convert an opened minicube; the caller has checked the required variables. `phase` (found
    from the data when None) lets a reader convert a few days cut out of a longer minicube."""
    phase = frame_phase(raw) if phase is None else phase
    frames = np.arange(phase, raw.sizes["time"], STEP_DAYS)
    raw = raw.transpose("time", "lat", "lon", ...)
    bands = np.stack([raw[b].values[frames] for b in BANDS], axis=1).astype("float32")
    scl = raw[SCL].values[frames].astype("float32") if SCL in raw else None
    dlmask = raw[DLMASK].values[frames].astype("float32") if DLMASK in raw else None
    valid = valid_from_sources(bands, scl=scl, dlmask=dlmask)

    lat = raw["lat"].values
    lon = raw["lon"].values
    order_y = np.argsort(-lat)  # north-up, as GDAL expects
    order_x = np.argsort(lon)
    flip = not (np.array_equal(order_y, np.arange(lat.size)) and np.array_equal(order_x, np.arange(lon.size)))
    if flip:
        bands = bands[:, :, order_y][:, :, :, order_x]
        valid = valid[:, order_y][:, :, order_x]
        scl = None if scl is None else scl[:, order_y][:, :, order_x]
        dlmask = None if dlmask is None else dlmask[:, order_y][:, :, order_x]

    name = str(raw.attrs.get("dataset_name_short", "")).lower()
    source = "earthnet2021x" if name == "en21x" else "greenearthnet"
    ds = schema.new_cube(
        times=pd.DatetimeIndex(raw["time"].values[frames]),
        y=lat[order_y], x=lon[order_x], crs="EPSG:4326",
        bands=bands, valid=valid, source=source,
        attrs={"source_file": path.name, "data_licence": LICENCE_NOTE},
    )
    for var, values, long_name in ((SCL, scl, "Sentinel-2 scene classification"), (DLMASK, dlmask, "GreenEarthNet cloud mask")):
        if values is not None:
            ds[var] = (("time", "y", "x"), values, {"long_name": long_name, "grid_mapping": "spatial_ref"})

    daily = {v: raw[meteo_name(v)].values for v in METEO_VARS if meteo_name(v) in raw and raw[meteo_name(v)].dims == ("time",)}
    ds = schema.add_meteo(ds, daily, pd.DatetimeIndex(raw["time"].values))
    static = {}
    for layer in STATIC_LAYERS:
        if layer in raw and set(raw[layer].dims) == {"lat", "lon"}:
            static[layer] = raw[layer].transpose("lat", "lon").values[order_y][:, order_x]
    return schema.add_static(ds, static)
