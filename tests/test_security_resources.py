"""Memory a hostile value or file asks for is estimated and refused before it is allocated (issue 11).

`--members 100000`, a weights file whose config declares a huge model, and a small, highly
compressible NetCDF that declares a huge grid each used to exhaust the machine's memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from vegediff_cli.errors import CorruptInputError, ModelError, UsageError
from vegediff_cli.model.presets import PRESETS
from vegediff_cli.model.weights import read_metadata
from vegediff_cli.resources import GIB, available_bytes, parameter_count

from .forecast_fixtures import edited_weights, synthetic_cube

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cube(tmp_path_factory) -> Path:
    return synthetic_cube(tmp_path_factory.mktemp("cube") / "cube.nc", height=128, width=128)


def forecast(cli, cube: Path, weights: Path, out: Path, *extra: str):
    return cli("forecast", "--input", cube, "--weights", weights, "--output", out, "--no-cogs", "--quiet",
               "--horizon", "2", "--steps", "1", *extra)


def test_huge_member_count_is_refused_before_allocating(cli, cube, tiny_weights, tmp_path):
    out = tmp_path / "f.nc"
    began = time.monotonic()
    result = forecast(cli, cube, tiny_weights, out, "--members", "100000")
    assert result.code == UsageError.exit_code, result
    assert "--members 100000" in result.err and "--memory-mb" in result.err
    assert time.monotonic() - began < 60
    assert not out.exists()


def test_members_beyond_the_memory_budget_say_which_budget_would_do(cli, cube, tiny_weights, tmp_path):
    out = tmp_path / "f.nc"
    result = forecast(cli, cube, tiny_weights, out, "--members", "300", "--memory-mb", "64")
    assert result.code == UsageError.exit_code, result
    assert "raise --memory-mb to" in result.err
    assert not out.exists()


def test_batch_beyond_the_free_memory_is_refused(cli, tiny_weights, tmp_path):
    wide = synthetic_cube(tmp_path / "wide.nc", height=128, width=2048, frames=12)
    out = tmp_path / "f.nc"
    result = forecast(cli, wide, tiny_weights, out, "--members", "256", "--batch-size", "4096",
                      "--memory-mb", "100000")
    assert result.code == UsageError.exit_code, result
    assert "is available" in result.err and "--batch-size" in result.err


def test_huge_model_config_is_refused_before_building_it(cli, cube, tiny_weights, tmp_path):
    huge = edited_weights(tiny_weights, tmp_path / "huge.safetensors",
                          config={"vegenet.hidden": 262144, "vegenet.heads": 64, "vegenet.depth": 48})
    cfg = PRESETS["tiny"]
    from vegediff_cli.model.presets import ModelConfig

    declared = ModelConfig.from_dict(json.loads(read_metadata(huge)["config"]))
    assert parameter_count(declared) * 4 > available_bytes()  # the file really asks for more than the machine has
    assert parameter_count(cfg) < 1e6
    out = tmp_path / "f.nc"
    began = time.monotonic()
    result = forecast(cli, cube, huge, out)
    assert result.code == ModelError.exit_code, result
    assert "billion parameters" in result.err and "available" in result.err
    assert time.monotonic() - began < 60
    assert not out.exists()


def test_huge_init_weights_for_training_are_refused(cli, tiny_weights, tmp_path):
    huge = edited_weights(tiny_weights, tmp_path / "huge.safetensors",
                          config={"vegenet.hidden": 262144, "vegenet.heads": 64, "vegenet.depth": 48})
    sample = PROJECT_ROOT / "sample_data" / "29SND_2017_sample.nc"
    result = cli("train", "diffusion", "--data", sample, "--init", huge, "--output", tmp_path / "w.safetensors",
                 "--run-dir", tmp_path / "run", "--steps", "1", "--quiet")
    assert result.code == ModelError.exit_code, result
    assert "billion parameters" in result.err


@pytest.mark.parametrize(("change", "words"), [
    ({"config": {"vegenet.hidden": -8}}, "impossible model"),
    ({"config": {"vegenet.hidden": "wide"}}, "impossible model"),
    ({"config": {"vegenet.heads": 3}}, "not a multiple"),
    ({"config": {"vae.channel_mults": []}}, "impossible model"),
    ({"metadata": {"config": "{not json"}}, "not a vegediff weights file"),
    ({"metadata": {"config": "[1, 2]"}}, "not a vegediff weights file"),
    ({"metadata": {"meteo_coverage": "{broken"}}, "malformed metadata"),
    ({"metadata": {"static_coverage": "{broken"}}, "malformed metadata: static_coverage"),
    ({"metadata": {"training_domain": '[{"name": "x", "latitude": "north"}]'}}, "malformed metadata: training_domain"),
    ({"metadata": {"training_domain": json.dumps([{"name": "x\u001b[2J\nforged line", "latitude": 39.0,
                                                    "first_start": "2017-08-23", "last_start": "2017-11-21"}])}},
     "malformed metadata: training_domain"),
    ({"metadata": {"training_domain": '[{"name": "x", "latitude": NaN, "first_start": "2017-08-23", '
                                      '"last_start": "2017-11-21"}]'}}, "malformed metadata: training_domain"),
    ({"tensors": lambda d: d.update({k: v[..., :1].contiguous() for k, v in list(d.items()) if v.ndim == 4})}, "do not fit"),
    ({"tensors": lambda d: next(v.fill_(float("nan")) for k, v in d.items() if v.dtype.is_floating_point)},
     "NaN or infinite weights"),
])
def test_malformed_weights_are_exit_9(cli, cube, tiny_weights, tmp_path, change, words):
    bad = edited_weights(tiny_weights, tmp_path / "bad.safetensors", **change)
    out = tmp_path / "f.nc"
    result = forecast(cli, cube, bad, out)
    assert result.code == ModelError.exit_code, result
    assert words in result.err
    assert "internal error" not in result.err and len(result.err.strip().splitlines()) == 1
    assert not out.exists()


# --- info on a small file that declares a huge grid -----------------------------------------------
def compressible_cube(path: Path, *, frames: int = 40, side: int = 8192, minicube: bool = False) -> Path:
    """A vegediff cube (or GreenEarthNet minicube) of `frames` x side x side px that is a few MB on disk.

    Its chunks are never written: HDF5 returns the fill value, so the file is tiny while its
    variables declare frames x side^2 values each (40 x 8192^2: 2.7 GB per uint8 variable).
    """
    with netCDF4.Dataset(path, "w") as nc:
        ydim, xdim = ("lat", "lon") if minicube else ("y", "x")
        nc.createDimension("time", frames)
        nc.createDimension(ydim, side)
        nc.createDimension(xdim, side)
        time_var = nc.createVariable("time", "f8", ("time",))
        time_var.units = "days since 2022-01-01"
        time_var[:] = np.arange(frames) * 5.0
        y = nc.createVariable(ydim, "f8", (ydim,))
        x = nc.createVariable(xdim, "f8", (xdim,))
        if minicube:
            y[:] = 45 - np.arange(side) * 1e-4
            x[:] = 8 + np.arange(side) * 1e-4
        else:
            y[:] = 5_300_000 - 20 * np.arange(side) - 10
            x[:] = 600_000 + 20 * np.arange(side) + 10
            ref = nc.createVariable("spatial_ref", "i4")
            ref.crs_wkt = 'PROJCS["WGS 84 / UTM zone 32N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",9],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1],AUTHORITY["EPSG","32632"]]'
            ref.spatial_ref = ref.crs_wkt
            nc.vegediff_cube_version = "1"
            nc.source = "prepare"
        chunks = (1, 512, 512)
        for band in ("s2_B02", "s2_B03", "s2_B04", "s2_B8A"):
            var = nc.createVariable(band, "i2", ("time", ydim, xdim), zlib=True, chunksizes=chunks, fill_value=-32768)
            var.scale_factor = 1e-4
            if not minicube:
                var.grid_mapping = "spatial_ref"
        mask = "s2_dlmask" if minicube else "valid_mask"
        var = nc.createVariable(mask, "u1", ("time", ydim, xdim), zlib=True, chunksizes=chunks, fill_value=0)
        if not minicube:
            var.grid_mapping = "spatial_ref"
    return path


def peak_rss_of(args: list[str]) -> tuple[int, int, str]:
    """Run `python -m vegediff_cli ARGS` and return (exit code, its peak RSS in bytes, stderr)."""
    probe = ("import resource, subprocess, sys; "
             "r = subprocess.run([sys.executable, '-m', 'vegediff_cli', *sys.argv[1:]], capture_output=True, text=True); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); "
             "sys.stderr.write(r.stderr)")
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=PROJECT_ROOT,
                          timeout=300)
    code, rss = done.stdout.split()
    return int(code), int(rss), done.stderr


@pytest.mark.slow
def test_info_on_a_highly_compressible_cube_stays_in_bounded_memory(tmp_path):
    path = compressible_cube(tmp_path / "zeros.nc")
    assert path.stat().st_size < 5 << 20  # a few MB on disk, 40 x 2.7 GB declared per variable
    code, rss, err = peak_rss_of(["info", str(path), "--json"])
    assert code == 0, err
    assert rss < 1.5 * GIB, rss  # loading the valid mask at once would take 2.7 GB


def test_minicube_that_declares_gigabytes_is_refused(cli, tmp_path):
    path = compressible_cube(tmp_path / "minicube.nc", frames=64, side=4096, minicube=True)
    result = cli("info", path)
    assert result.code == CorruptInputError.exit_code, result
    assert "GiB of data once decompressed" in result.err
