"""Small real files for the forecast / ensemble tests: weights of the tiny preset and synthetic cubes.

Cubes are written with the project's own writer (cube/netcdf.py) in the documented format, so
the forecast reads them exactly as it reads `vegediff prepare` output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from vegediff_cli.config import METEO_STATS, METEO_VARS, meteo_name
from vegediff_cli.cube.netcdf import write_netcdf
from vegediff_cli.cube.schema import add_meteo, add_static, new_cube
from vegediff_cli.model.presets import PRESETS, ModelConfig
from vegediff_cli.model.vegediff import VegeDiff
from vegediff_cli.model.weights import read_metadata, save_weights

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = PROJECT_ROOT / "weights" / "vegediff-small.safetensors"
EPSG = "EPSG:32632"
ORIGIN_X, ORIGIN_Y = 600_000.0, 5_300_000.0


def write_weights(path: Path, cfg: ModelConfig = PRESETS["tiny"], seed: int = 0, *,
                  metadata: dict[str, str] | None = None) -> Path:
    """A real weights file (random init: enough for pipeline tests; speed does not depend on values).

    The one writer of test weights; conftest's `tiny_weights` fixture holds one per session.
    """
    torch.manual_seed(seed)
    return save_weights(VegeDiff(cfg), path, metadata=metadata if metadata is not None else {"purpose": "tests"})


def daily_meteo(days: pd.DatetimeIndex, seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible daily E-OBS values with a seasonal cycle."""
    rng = np.random.default_rng(seed)
    season = np.sin(2 * np.pi * (days.day_of_year.values - 110) / 365.0)
    n = len(days)
    return {
        "tg": 10 + 10 * season + rng.normal(0, 2, n), "tn": 5 + 9 * season + rng.normal(0, 2, n),
        "tx": 15 + 11 * season + rng.normal(0, 2, n), "rr": rng.gamma(0.5, 4.0, n),
        "pp": 1013 + rng.normal(0, 8, n), "hu": 75 - 10 * season + rng.normal(0, 5, n),
        "fg": np.abs(3 + rng.normal(0, 1, n)), "qq": 150 + 100 * season + rng.normal(0, 20, n),
    }


def synthetic_cube(
    path: Path,
    *,
    height: int = 160,
    width: int = 160,
    frames: int = 14,
    first: str = "2022-05-01",
    meteo: str | None = "series",
    landcover: bool = True,
    cloudy_frames: tuple[int, ...] = (3, 7),
    drop_band: str | None = None,
    built_up: tuple[slice, slice] | None = None,
    seed: int = 0,
) -> Path:
    """A vegediff cube (UTM, 20 m) with seasonal NDVI, some cloudy frames, meteorology and static layers.

    meteo: "series" (time, stat), "grid" (time, stat, meteo_y, meteo_x) or None.
    Land cover: vegetation (10-40) everywhere except a built-up block (class 50), by default the
    top 2/5 of the rows and the right 2/5 of the columns, else the (rows, cols) slices `built_up`.
    """
    rng = np.random.default_rng(seed)
    times = pd.date_range(first, periods=frames, freq="5D")
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    season = 0.5 + 0.2 * np.sin(np.linspace(0, np.pi, frames))
    ndvi = season[:, None, None] + 0.15 * (yy - xx)[None] + rng.normal(0, 0.02, (frames, height, width))
    red = 0.04 + 0.04 * xx[None] + np.zeros((frames, 1, 1))
    nir = red * (1 + ndvi) / (1 - ndvi)
    bands = np.stack([red * 0.7, red * 1.2, red, nir], axis=1).astype("float32")  # (T, 4, H, W)
    valid = np.ones((frames, height, width), dtype=bool)
    for t in cloudy_frames:
        if t < frames:
            valid[t, : height // 2] = False  # half the scene under cloud
    bands = np.where(valid[:, None], bands, np.nan)
    y = ORIGIN_Y - 10.0 - 20.0 * np.arange(height)
    x = ORIGIN_X + 10.0 + 20.0 * np.arange(width)
    cube = new_cube(times=times, y=y, x=x, crs=EPSG, bands=bands, valid=valid, source="prepare")
    if meteo == "series":
        days = pd.date_range(times[0] - pd.Timedelta(days=4), times[-1], freq="D")
        cube = add_meteo(cube, daily_meteo(days, seed), days)
    elif meteo == "grid":
        cube = add_grid_meteo(cube, times, seed=seed)
    static = {"cop_dem": (300 + 200 * yy).astype("float32")}
    if landcover:
        classes = np.where((yy + xx) < 1.0, 10, 30).astype("float32")
        rows, cols = built_up or (slice(0, height * 2 // 5), slice(width * 3 // 5, width))
        classes[rows, cols] = 50  # built-up: no vegetation
        static["esawc_lc"] = classes
    cube = add_static(cube, static)
    if drop_band is not None:
        cube = cube.drop_vars(drop_band)
    write_netcdf(cube, path)
    return path


def add_grid_meteo(cube, times: pd.DatetimeIndex, *, seed: int = 0, nodes: int = 3):
    """Gridded meteorology on `nodes` x `nodes` nodes around the cube; temperature rises eastwards by 5 degC per node."""
    rng = np.random.default_rng(seed)
    y, x = cube["y"].values, cube["x"].values
    node_y = np.linspace(y[0] + 500, y[-1] - 500, nodes)
    node_x = np.linspace(x[0] - 500, x[-1] + 500, nodes)
    for var in METEO_VARS:
        values = np.empty((len(times), len(METEO_STATS), nodes, nodes), dtype="float32")
        base = {"tg": 12, "tn": 7, "tx": 17, "rr": 2, "pp": 1013, "hu": 70, "fg": 3, "qq": 180}[var]
        values[:] = base + rng.normal(0, 0.5, (len(times), len(METEO_STATS), 1, 1))
        if var in ("tg", "tn", "tx"):
            values += 5.0 * np.arange(nodes)[None, None, None, :]
        cube[meteo_name(var)] = (("time", "stat", "meteo_y", "meteo_x"), values, {"units": "1"})
    return cube.assign_coords(meteo_y=("meteo_y", node_y), meteo_x=("meteo_x", node_x), stat=list(METEO_STATS))


def weather_file(path: Path, days: pd.DatetimeIndex, *, warm: float = 0.0, seed: int = 1) -> Path:
    """A --weather file: daily eobs_* series (time,) in E-OBS units, optionally `warm` degC warmer."""
    import xarray as xr

    values = daily_meteo(days, seed)
    for var in ("tg", "tn", "tx"):
        values[var] = values[var] + warm
    ds = xr.Dataset({meteo_name(v): (("time",), values[v].astype("float32")) for v in METEO_VARS},
                    coords={"time": days})
    ds.to_netcdf(path)
    return path


def edited_weights(source: Path, target: Path, *, config=None, metadata=None, tensors=None) -> Path:
    """`source` with its config / metadata / tensors changed: what a damaged or hostile file looks like."""
    meta = read_metadata(source)
    data = load_file(str(source))
    if config is not None:
        cfg = json.loads(meta["config"])
        for dotted, value in config.items():
            section, name = dotted.split(".")
            cfg[section][name] = value
        meta["config"] = json.dumps(cfg)
    meta.update(metadata or {})
    if tensors is not None:
        tensors(data)
    save_file(data, str(target), metadata=meta)
    return target
