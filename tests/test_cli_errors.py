"""Bad input: one clear line on stderr, the documented exit code, and no output file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine

from vegediff_cli.errors import (
    CorruptInputError,
    GeoreferenceError,
    InputNotFoundError,
    MissingVariableError,
    NoValidDataError,
)


def _assert_clean_failure(result, code: int, output: Path, *words: str) -> None:
    assert result.code == code, result
    lines = [line for line in result.err.strip().splitlines() if line]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("vegediff: error: ")
    assert "Traceback" not in result.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if ".partial-" in p.name]


def test_truncated_netcdf(cli, jas_cube: Path, tmp_path: Path):
    broken = tmp_path / "truncated.nc"
    data = jas_cube.read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    out = tmp_path / "out" / "cube.nc"
    out.parent.mkdir()
    result = cli("prepare", "--input", broken, "--output", out)
    _assert_clean_failure(result, CorruptInputError.exit_code, out, "truncated.nc", "re-run")


def test_missing_required_variable(cli, jas_cube: Path, tmp_path: Path):
    raw = xr.open_dataset(jas_cube).drop_vars("s2_B8A")
    lacking = tmp_path / "no_nir.nc"
    raw.to_netcdf(lacking)
    out = tmp_path / "out" / "cube.nc"
    out.parent.mkdir()
    result = cli("prepare", "--input", lacking, "--output", out)
    _assert_clean_failure(result, MissingVariableError.exit_code, out, "s2_B8A")


def test_geotiff_without_crs(tmp_path: Path):
    from vegediff_cli.cube.readers import read_raster

    path = tmp_path / "dem_nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="float32",
                       transform=Affine(20, 0, 0, 0, -20, 0)) as dst:
        dst.write(np.ones((1, 8, 8), dtype="float32"))
    with pytest.raises(GeoreferenceError, match="has no CRS.*gdal_edit"):
        read_raster(path)


def test_geotiff_is_not_a_cube(cli, tmp_path: Path):
    path = tmp_path / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint16",
                       crs="EPSG:32629", transform=Affine(20, 0, 0, 0, -20, 0)) as dst:
        dst.write(np.ones((1, 8, 8), dtype="uint16"))
    out = tmp_path / "out" / "cube.nc"
    out.parent.mkdir()
    result = cli("prepare", "--input", path, "--output", out)
    _assert_clean_failure(result, CorruptInputError.exit_code, out, "GeoTIFF")


def test_path_that_does_not_exist(cli, tmp_path: Path):
    out = tmp_path / "out" / "cube.nc"
    out.parent.mkdir()
    result = cli("prepare", "--input", tmp_path / "nope.nc", "--output", out)
    _assert_clean_failure(result, InputNotFoundError.exit_code, out, "nope.nc", "does not exist")


def test_tile_without_previous_step_names_the_command(cli, tmp_path: Path):
    result = cli("prepare", "--tile", "32UQD", "--workdir", tmp_path)
    assert result.code == InputNotFoundError.exit_code
    assert "vegediff fetch --tile 32UQD" in result.err


def test_all_cloud_cube(cli, jas_cube: Path, tmp_path: Path):
    raw = xr.open_dataset(jas_cube).load()
    raw["s2_dlmask"] = raw["s2_dlmask"].where(raw["s2_dlmask"].isnull(), 1.0)  # every pixel cloudy
    cloudy = tmp_path / "cloudy.nc"
    raw.to_netcdf(cloudy)
    out = tmp_path / "out" / "cube.nc"
    out.parent.mkdir()
    result = cli("prepare", "--input", cloudy, "--output", out)
    _assert_clean_failure(result, NoValidDataError.exit_code, out, "no clear observation")


@pytest.mark.parametrize(("args", "words"), [
    (("forecast", "--horizon", "abc"), ["'--horizon'", "valid integer", "vegediff forecast --help"]),
    (("forecast", "--no-such-option"), ["--no-such-option", "vegediff forecast --help"]),
    (("no-such-command",), ["no-such-command", "vegediff --help"]),
])
def test_bad_option_is_one_line_with_exit_code_2(cli, tmp_path: Path, args, words):
    result = cli(*args)
    _assert_clean_failure(result, 2, tmp_path / "never-written", *words)


def test_debug_is_not_kept_for_the_next_run(cli, tmp_path: Path):
    cli("--debug", "prepare", "--input", tmp_path / "nope.nc", "--output", tmp_path / "x.nc")
    result = cli("prepare", "--input", tmp_path / "nope.nc", "--output", tmp_path / "x.nc")
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


def test_debug_shows_traceback(cli, tmp_path: Path):
    result = cli("--debug", "prepare", "--input", tmp_path / "nope.nc", "--output", tmp_path / "x.nc")
    assert result.code == InputNotFoundError.exit_code
    assert "Traceback" in result.err


def test_failed_write_keeps_previous_output(jas_cube: Path, tmp_path: Path, monkeypatch):
    from vegediff_cli.cube import netcdf
    from vegediff_cli.cube.readers import open_cube

    target = tmp_path / "cube.nc"
    shutil.copy(jas_cube, target)
    before = target.read_bytes()
    cube = open_cube(jas_cube)

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_netcdf", explode)
    with pytest.raises(KeyboardInterrupt):
        netcdf.write_netcdf(cube, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cube.nc"]


def test_prepare_and_info_on_real_cube(cli, jas_cube: Path, tmp_path: Path):
    import json

    workdir = tmp_path / "work"
    out = workdir / "29SND" / "cube.nc"
    result = cli("prepare", "--input", jas_cube, "--output", out, "--cogs", tmp_path / "cogs", "--json", "--quiet")
    assert result.code == 0, result
    summary = json.loads(result.out)
    assert summary["shape"] == {"time": 30, "y": 128, "x": 128}
    assert len(list((tmp_path / "cogs").glob("ndvi_*.tif"))) == 30
    result = cli("info", "--tile", "29SND", "--workdir", workdir, "--json")
    assert result.code == 0, result
    assert json.loads(result.out)["meteorology"] == ["tg", "tn", "tx", "rr", "pp", "hu", "fg", "qq"]
