"""Small real training folders, made from ../shared/data by cropping and linking, and tiny weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import xarray as xr

from tests.forecast_fixtures import write_weights
from vegediff_cli.model.presets import PRESETS

TINY_WITH_DATES = dataclasses.replace(
    PRESETS["tiny"], vegenet=dataclasses.replace(PRESETS["tiny"].vegenet, date_channels=3))


def crop_minicube(source: Path, target: Path, *, y0: int, x0: int, size: int, first_day: int = 0) -> Path:
    """A GreenEarthNet-format minicube cut out of `source` (pixels and days), written as NetCDF."""
    with xr.open_dataset(source) as ds:
        part = ds.isel(lat=slice(y0, y0 + size), lon=slice(x0, x0 + size), time=slice(first_day, None)).load()
    for variable in part.variables.values():
        for key in ("chunksizes", "original_shape", "contiguous"):
            variable.encoding.pop(key, None)
    part.to_netcdf(target)
    return target


def training_folder(shared: Path, folder: Path) -> Path:
    """Two 64 px minicube crops (conditioned; one starting 2 days late, so its Sentinel-2 days have
    another phase) and the 10 x 10 px Rhone valley series (unconditioned, another size), linked."""
    folder.mkdir(parents=True, exist_ok=True)
    crop_minicube(shared / "greenearthnet" / "JAS2021_minicube_0_29SND_39.29_-8.56.nc",
                  folder / "jas_crop.nc", y0=0, x0=64, size=64)
    crop_minicube(shared / "greenearthnet" / "MJJ2021_minicube_241_34VCL_59.04_17.96.nc",
                  folder / "mjj_crop.nc", y0=32, x0=32, size=64, first_day=2)
    (folder / "france_rhone_2017-2019_20m.nc").symlink_to(shared / "sentinel2_series" / "france_rhone_2017-2019_20m.nc")
    return folder


def untrained_dated_weights(path: Path, seed: int = 0) -> Path:
    """An untrained tiny model (with date features) to start denoiser training from."""
    return write_weights(path, TINY_WITH_DATES, seed, metadata={"trained_on": "[]"})
