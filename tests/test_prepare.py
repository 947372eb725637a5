"""`vegediff prepare`: GeoTIFF scenes and fetched cubes -> 5-day analysis-ready cubes.

The acceptance test builds a cube from the 7 real 29SND GeoTIFF scenes on the grid of the real
GreenEarthNet minicube of the same site, with that minicube's E-OBS series, and compares NDVI
with the minicube's own on the dates and pixels clear in both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio.warp
import xarray as xr

from vegediff_cli.config import BANDS, METEO_VARS, SCL, VALID
from vegediff_cli.cube.masks import cube_ndvi
from vegediff_cli.cube.netcdf import write_netcdf
from vegediff_cli.cube.readers import open_cube
from vegediff_cli.cube.schema import new_cube
from vegediff_cli.errors import NoValidDataError

from .test_era5 import VICTORIA, cds_hourly_file, victoria_expected

SCENE_DIR = "geotiff/gee_s2_29SND_2021_sr"


@pytest.fixture(scope="session")
def scenes(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / SCENE_DIR).glob("*.tif"))
    if len(files) != 7:
        pytest.fail(f"expected 7 scenes in {shared_data / SCENE_DIR}, found {len(files)}")
    return files


def one_line_error(result, code: int, output: Path, *words: str) -> str:
    assert result.code == code, result
    lines = [line for line in result.err.strip().splitlines() if line.startswith("vegediff:")]
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if ".partial-" in p.name]
    return lines[0]


def write_raw_cube(path: Path, *, lon: float, lat: float, dates: list[str], scl: np.ndarray, size: int = 8,
                   seed: int = 0) -> xr.Dataset:
    """A fetch-style raw cube (irregular dates, s2_SCL) of `size` px at 20 m around lon/lat (UTM)."""
    zone = int((lon + 180) // 6) + 1
    crs = f"EPSG:{32600 + zone}"
    (x,), (y,) = rasterio.warp.transform("EPSG:4326", crs, [lon], [lat])
    left, top = round(x / 20) * 20 - size * 10, round(y / 20) * 20 + size * 10
    xs = left + 10 + 20 * np.arange(size)
    ys = top - 10 - 20 * np.arange(size)
    rng = np.random.default_rng(seed)
    base = np.array([0.03, 0.06, 0.04, 0.35], dtype="float32")[None, :, None, None]
    bands = (base + 0.01 * rng.standard_normal((len(dates), 4, size, size))).astype("float32")
    bands = np.round(bands, 4)  # the int16 x 1e-4 storage is then lossless
    cube = new_cube(times=pd.DatetimeIndex(dates), y=ys, x=xs, crs=crs, bands=bands,
                    valid=np.isin(scl, [4, 5]), source="fetch")
    cube[SCL] = (("time", "y", "x"), scl.astype("float32"), {"long_name": "Sentinel-2 scene classification"})
    write_netcdf(cube, path)
    return cube


# --- the acceptance test -------------------------------------------------------------------------
def test_scenes_on_greenearthnet_grid_agree_with_its_ndvi(cli, scenes, jas_cube: Path, tmp_path: Path, capsys):
    out = tmp_path / "cube.nc"
    result = cli("prepare", "--scenes", *scenes, "--like", jas_cube, "--meteo-from", jas_cube,
                 "--output", out, "--cogs", tmp_path / "cogs", "--json", "--quiet")
    assert result.code == 0, result
    summary = json.loads(result.out)
    assert summary["shape"] == {"time": 21, "y": 128, "x": 128}  # 2021-06-28 .. 2021-10-06, every 5 days
    assert [f["acquisitions"] for f in summary["frames"]].count(1) == 7
    assert summary["meteorology"] == list(METEO_VARS) and summary["meteo_layout"] == "series"
    assert len(list((tmp_path / "cogs").glob("ndvi_*.tif"))) == 21

    ours, theirs = open_cube(out).load(), open_cube(jas_cube)
    assert ours.rio.crs == theirs.rio.crs
    np.testing.assert_array_equal(ours["y"].values, theirs["y"].values)  # the minicube's grid, bit for bit
    np.testing.assert_array_equal(ours["x"].values, theirs["x"].values)
    dates = np.intersect1d(ours["time"].values, theirs["time"].values)
    assert len(dates) == 21
    for var in METEO_VARS:  # same daily series, same windows t-4..t
        np.testing.assert_allclose(ours[f"eobs_{var}"].sel(time=dates).values,
                                   theirs[f"eobs_{var}"].sel(time=dates).values, rtol=1e-6, err_msg=var)

    a = cube_ndvi(ours).sel(time=dates).values
    b = cube_ndvi(theirs).sel(time=dates).values
    both = np.isfinite(a) & np.isfinite(b)
    diff = a[both] - b[both]
    rmse, bias = float(np.sqrt(np.mean(diff**2))), float(np.mean(diff))
    pearson = float(np.corrcoef(a[both], b[both])[0, 1])
    within = float(np.mean(np.abs(diff) < 0.05))
    with capsys.disabled():
        print(f"\n[29SND scenes vs GreenEarthNet NDVI] dates {int((both.sum(axis=(1, 2)) > 0).sum())}, "
              f"pixels {int(both.sum())}: RMSE {rmse:.4f}, bias {bias:+.4f}, r {pearson:.4f}, |diff|<0.05 {within:.1%}")
    assert both.sum() > 50_000
    # GreenEarthNet's B02-B04 are BRDF-adjusted (NBAR) and resampled from 10 m; ours are plain L2A at 20 m.
    assert rmse < 0.07 and abs(bias) < 0.02 and pearson > 0.95 and within > 0.75


# --- time regularisation ---------------------------------------------------------------------------
def test_latest_clear_observation_per_frame(cli, shared_data, tmp_path: Path):
    dates = ["1991-07-01", "1991-07-04", "1991-07-06", "1991-07-16"]
    scl = np.full((4, 8, 8), 4, dtype="uint8")
    scl[1, 0, 1] = 9  # pixel (0,1): clear 07-04? no, cloudy; clear 07-06 -> takes 07-06
    scl[2, 0, 2] = 9  # pixel (0,2): clear 07-04, cloudy 07-06 -> takes 07-04
    scl[1:3, 0, 3] = (8, 3)  # pixel (0,3): cloudy both -> NaN, SCL of the latest (3)
    raw = write_raw_cube(tmp_path / "s2_raw.nc", lon=VICTORIA[0], lat=VICTORIA[1], dates=dates, scl=scl)
    era5 = cds_hourly_file(tmp_path / "era5.nc", shared_data / "meteo/era5_daily_canadian_cities_1990-1993.nc",
                           start="1991-06-27", days=20, lats=(48.75, 48.5, 48.25), lons=(-123.5, -123.25, -123.0))
    out = tmp_path / "cube.nc"
    result = cli("prepare", "--input", tmp_path / "s2_raw.nc", "--era5", era5, "--output", out, "--json", "--quiet")
    assert result.code == 0, result
    cube = open_cube(out).load()
    assert [f"{t:%m-%d}" for t in pd.DatetimeIndex(cube["time"].values)] == ["07-01", "07-06", "07-11", "07-16"]
    frame = cube.sel(time="1991-07-06")
    red = raw["s2_B04"].values
    assert float(frame["s2_B04"][0, 0]) == pytest.approx(red[2, 0, 0], abs=1e-6)  # latest clear: 07-06
    assert float(frame["s2_B04"][0, 1]) == pytest.approx(red[2, 0, 1], abs=1e-6)
    assert float(frame["s2_B04"][0, 2]) == pytest.approx(red[1, 0, 2], abs=1e-6)  # 07-06 cloudy: 07-04
    assert np.isnan(float(frame["s2_B04"][0, 3])) and int(frame[VALID][0, 3]) == 0 and int(frame[SCL][0, 3]) == 3
    empty = cube.sel(time="1991-07-11")  # no acquisition in 07-07..07-11
    assert int(empty[VALID].sum()) == 0 and bool(np.isnan(empty["s2_B04"]).all())
    assert json.loads(result.out)["frames"][2] == {"date": "1991-07-11", "acquisitions": 0, "clear_fraction": 0.0}

    # Meteorology of frame 07-06 = days 07-02..07-06 of the hourly ERA5, by hand from the daily sample.
    expected = victoria_expected(shared_data / "meteo/era5_daily_canadian_cities_1990-1993.nc", "1991-07-02", 5)
    for var in METEO_VARS:
        got = frame[f"eobs_{var}"].values
        want = [expected[var].mean(), expected[var].min(), expected[var].max()]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-3, err_msg=var)
    assert cube.attrs["meteo_layout"] == "series" and "era5.nc" in cube.attrs["meteo_source"]

    # --anchor moves the frame phase: 07-04 becomes a frame date and 07-01 + 07-04 share a window.
    result = cli("prepare", "--input", tmp_path / "s2_raw.nc", "--anchor", "1991-07-04", "--output", tmp_path / "b.nc",
                 "--json", "--quiet")
    assert result.code == 0, result
    frames = json.loads(result.out)["frames"]
    assert [(f["date"], f["acquisitions"]) for f in frames] == [
        ("1991-07-04", 2), ("1991-07-09", 1), ("1991-07-14", 0), ("1991-07-19", 1)]


def test_zero_clear_observations_is_exit_7(cli, tmp_path: Path):
    scl = np.full((2, 8, 8), 9, dtype="uint8")  # cloud high probability everywhere
    write_raw_cube(tmp_path / "s2_raw.nc", lon=VICTORIA[0], lat=VICTORIA[1], dates=["1991-07-01", "1991-07-06"], scl=scl)
    out = tmp_path / "out" / "cube.nc"
    out.parent.mkdir()
    result = cli("prepare", "--input", tmp_path / "s2_raw.nc", "--output", out)
    line = one_line_error(result, NoValidDataError.exit_code, out, "no clear observation", "--clear-classes")
    assert "2 acquisitions" in line
    # the same data with cloud counted as clear (a user's choice) works
    assert cli("prepare", "--input", tmp_path / "s2_raw.nc", "--clear-classes", "4,9", "--output", out, "-q").code == 0


def test_scenes_on_their_own_grid_with_a_shell_glob(cli, scenes, jas_cube: Path, tmp_path: Path):
    """`--scenes a.tif b.tif` (what a shell glob gives) works; the UTM grid of the scenes is kept."""
    out = tmp_path / "cube.nc"
    result = cli("prepare", "--scenes", *scenes[:2], "--meteo-from", jas_cube, "--output", out, "--json", "-q")
    assert result.code == 0, result
    summary = json.loads(result.out)
    assert summary["crs"] == "EPSG:32629" and summary["shape"] == {"time": 7, "y": 135, "x": 152}
    assert summary["resolution"] == [20.0, 20.0]
    cube = open_cube(out)
    assert set(BANDS) <= set(cube.data_vars) and cube.attrs["input_source"] == "scenes"


# --- the pure parts of the time rule ----------------------------------------------------------------
def test_frame_dates_follow_the_acquisitions_phase():
    from vegediff_cli.pipeline.prepare.frames import frame_dates

    # 06-28, 07-28, 08-17 share a phase, 08-22 too (5-day revisit): every one lands on a frame date.
    acquisitions = pd.DatetimeIndex(["2021-06-28", "2021-07-28", "2021-08-17", "2021-08-22", "2021-08-24"])
    frames = frame_dates(acquisitions)
    assert frames[0] == pd.Timestamp("2021-06-28") and frames[-1] == pd.Timestamp("2021-08-27")
    assert set(acquisitions[:4]) <= set(frames) and len(frames) == 13
    anchored = frame_dates(acquisitions, anchor=pd.Timestamp("2021-06-30"))
    assert anchored[0] == pd.Timestamp("2021-06-30") and anchored[-1] == pd.Timestamp("2021-08-24")


def test_latest_clear_block_rule():
    from vegediff_cli.pipeline.prepare.frames import latest_clear

    def block(red, clear, scl):  # 4 bands (red in all), clear flag, SCL; 1 x 3 pixels
        bands = np.repeat(np.array(red, dtype="float32")[None, None, :], 4, axis=0)
        return np.concatenate([bands, np.array(clear, "float32")[None, None, :], np.array(scl, "float32")[None, None, :]])

    older = block([0.1, 0.2, 0.3], [1, 1, 0], [4, 4, 9])
    newer = block([0.4, np.nan, 0.6], [1, 0, 0], [5, 9, 8])
    out = latest_clear([older, newer], n_bands=4, fills=(0.0,))
    np.testing.assert_allclose(out[0, 0], [0.4, 0.2, np.nan])  # newest clear wins; none clear -> NaN
    np.testing.assert_array_equal(out[4, 0], [1, 1, 0])  # valid flag
    np.testing.assert_array_equal(out[5, 0], [5, 4, 8])  # SCL: chosen, chosen, latest with data
    lacking = block([0.5, 0.5, 0.5], [1, 1, 1], [4, 4, 4])
    lacking[2, 0, 1] = np.nan  # the chosen observation lacks B04 at pixel 1
    out = latest_clear([lacking], n_bands=4, fills=(0.0,))
    np.testing.assert_array_equal(out[4, 0], [1, 0, 1])
    np.testing.assert_array_equal(np.isnan(out[0, 0]), [False, True, False])
