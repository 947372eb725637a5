"""`vegediff prepare` inputs: E-OBS and ERA5 placement, static GeoTIFFs, and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
import xarray as xr
from affine import Affine

from vegediff_cli.config import METEO_VARS
from vegediff_cli.cube.readers import open_cube
from vegediff_cli.errors import GeoreferenceError, MissingVariableError, UsageError

from .test_era5 import CF_SAMPLE, cds_hourly_file
from .test_prepare import SCENE_DIR, one_line_error

EOBS_UNITS = {"tg": "Celsius", "tn": "Celsius", "tx": "Celsius", "rr": "mm", "pp": "hPa", "hu": "%", "fg": "m/s", "qq": "W/m2"}


@pytest.fixture(scope="module")
def two_scenes(shared_data: Path) -> list[Path]:
    """The 2021-06-28 and 2021-07-28 scenes: 7 frames on the scenes' own 135 x 152 UTM grid."""
    files = sorted((shared_data / SCENE_DIR).glob("*.tif"))[:2]
    assert len(files) == 2
    return files


def eobs_files(folder: Path, minicube: Path, *, sea_cell: bool = False) -> list[Path]:
    """E-OBS-style files (one per variable, 0.1 deg) holding the minicube's real daily series everywhere."""
    folder.mkdir(exist_ok=True)
    with xr.open_dataset(minicube) as raw:
        series = {v: raw[f"eobs_{v}"].values for v in METEO_VARS}
        times = raw["time"].values
    lat = np.round(np.arange(39.05, 39.55, 0.1), 2)
    lon = np.round(np.arange(-8.85, -8.25, 0.1), 2)
    paths = []
    for var, values in series.items():
        grid = np.broadcast_to(values[:, None, None], (len(times), len(lat), len(lon))).astype("float32").copy()
        if sea_cell:
            grid[:, 2, 2] = np.nan  # the cell holding the cube's centre has no data, like E-OBS at sea
        ds = xr.Dataset({var: (("time", "latitude", "longitude"), grid, {"units": EOBS_UNITS[var]})},
                        coords={"time": times, "latitude": lat, "longitude": lon})
        path = folder / f"{var}_ens_mean_0.1deg_reg_v29.0e.nc"
        ds.to_netcdf(path)
        paths.append(path)
    return paths


def test_eobs_grid_matches_the_minicube_series(cli, two_scenes, jas_cube: Path, tmp_path: Path):
    files = eobs_files(tmp_path / "eobs", jas_cube, sea_cell=True)
    args = ["prepare", "--scenes", *two_scenes, "--quiet"]
    assert cli(*args, *[a for f in files for a in ("--eobs", f)], "--output", tmp_path / "eobs.nc").code == 0
    assert cli(*args, "--meteo-from", jas_cube, "--output", tmp_path / "minicube.nc").code == 0
    from_eobs, from_minicube = open_cube(tmp_path / "eobs.nc"), open_cube(tmp_path / "minicube.nc")
    for var in METEO_VARS:
        np.testing.assert_allclose(from_eobs[f"eobs_{var}"].values, from_minicube[f"eobs_{var}"].values, rtol=1e-6)
    assert from_eobs.attrs["meteo_layout"] == "series"


def test_gridded_layout_interpolates_back_to_the_series(cli, two_scenes, shared_data: Path, tmp_path: Path):
    """ERA5 with a west-east temperature gradient: grid nodes bracket the cube, bilinear gives back the centre value."""
    era5 = cds_hourly_file(tmp_path / "era5.nc", shared_data / CF_SAMPLE, start="1991-06-24", days=35,
                           label_start="2021-06-24", lats=(39.5, 39.25, 39.0), lons=(-8.75, -8.5, -8.25),
                           lon_gradient_k_per_deg=8.0)
    base = ["prepare", "--scenes", *two_scenes, "--era5", era5, "--quiet", "--json"]
    result = cli(*base, "--meteo-layout", "grid", "--output", tmp_path / "grid.nc")
    assert result.code == 0, result
    assert json.loads(result.out)["meteo_layout"] == "grid"
    assert cli(*base, "--output", tmp_path / "series.nc").code == 0  # auto: 3 km cube inside one 0.25 deg cell
    grid, series = open_cube(tmp_path / "grid.nc"), open_cube(tmp_path / "series.nc")
    tg = grid["eobs_tg"]
    assert tg.dims == ("time", "stat", "meteo_y", "meteo_x") and tg.sizes["meteo_x"] >= 2
    left, bottom, right, top = grid.rio.bounds()
    x, y = grid["meteo_x"].values, grid["meteo_y"].values
    assert x.min() <= left and x.max() >= right and y.min() <= bottom and y.max() >= top
    assert float(tg.isel(time=0, stat=0).diff("meteo_x").mean()) > 1.0  # 8 K/deg over ~28 km node spacing
    centre = tg.interp(meteo_x=(left + right) / 2, meteo_y=(bottom + top) / 2)
    np.testing.assert_allclose(centre.values, series["eobs_tg"].values, atol=0.05)
    assert series.attrs["meteo_layout"] == "series"


def test_greenearthnet_input_with_new_anchor_needs_meteorology_beyond_its_series(cli, jas_cube: Path, tmp_path: Path):
    """Frames moved 2 days later: the last one (10-08, holding 10-06) needs days the minicube lacks."""
    out = tmp_path / "cube.nc"
    result = cli("prepare", "--input", jas_cube, "--anchor", "2021-05-16", "--output", out)
    one_line_error(result, GeoreferenceError.exit_code, out, "covers 2021-05-10..2021-10-06",
                   "lacks 2 of the", "2021-10-07..2021-10-08")


# --- static layers ----------------------------------------------------------------------------------
def _plane(lon, lat):
    return 100.0 + 1000.0 * (np.asarray(lon) + 8.56) + 2000.0 * (np.asarray(lat) - 39.29)


def write_geotiff(path: Path, values: np.ndarray, *, crs: str | None, transform: Affine, nodata=None) -> Path:
    profile = {"driver": "GTiff", "width": values.shape[1], "height": values.shape[0], "count": 1,
               "dtype": values.dtype.name, "transform": transform, "nodata": nodata}
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)
    return path


def test_static_layers_in_other_crs_are_reprojected(cli, two_scenes, jas_cube: Path, tmp_path: Path):
    # DEM in geographic coordinates: a tilted plane, which bilinear resampling must reproduce.
    step = 0.0005
    lon = -8.60 + step * (np.arange(160) + 0.5)
    lat = 39.32 - step * (np.arange(140) + 0.5)
    dem = write_geotiff(tmp_path / "dem_4326.tif", _plane(*np.meshgrid(lon, lat)).astype("float32"),
                        crs="EPSG:4326", transform=Affine(step, 0, -8.60, 0, -step, 39.32))
    # Land cover in ETRS89-LAEA (EPSG:3035), 10 m, four WorldCover classes in quadrants.
    (cx,), (cy,) = rasterio.warp.transform("EPSG:4326", "EPSG:3035", [-8.56], [39.29])
    classes = np.full((500, 500), 10, dtype="uint8")
    classes[:250, 250:], classes[250:, :250], classes[250:, 250:] = 20, 30, 40
    landcover = write_geotiff(tmp_path / "lc_3035.tif", classes, crs="EPSG:3035",
                              transform=Affine(10, 0, cx - 2500, 0, -10, cy + 2500), nodata=0)
    out = tmp_path / "cube.nc"
    result = cli("prepare", "--scenes", *two_scenes, "--meteo-from", jas_cube, "--dem", dem, "--landcover", landcover,
                 "--output", out, "--json", "--quiet")
    assert result.code == 0, result
    summary = json.loads(result.out)
    assert summary["static_layers"] == ["cop_dem", "esawc_lc"]
    assert summary["missing_static_layers"] == ["nasa_dem", "alos_dem", "geom_cls"]
    cube = open_cube(out)
    assert cube.attrs["missing_static_layers"] == "nasa_dem alos_dem geom_cls"
    xx, yy = np.meshgrid(cube["x"].values, cube["y"].values)
    lons, lats = rasterio.warp.transform(cube.rio.crs, "EPSG:4326", xx.ravel(), yy.ravel())
    expected = _plane(lons, lats).reshape(xx.shape)
    np.testing.assert_allclose(cube["cop_dem"].values, expected, atol=0.2)
    lc = cube["esawc_lc"].values
    assert set(np.unique(lc).tolist()) == {10.0, 20.0, 30.0, 40.0}  # nearest neighbour: no mixed values


def test_static_layer_without_crs_is_exit_6(cli, two_scenes, tmp_path: Path):
    dem = write_geotiff(tmp_path / "dem_nocrs.tif", np.ones((50, 50), dtype="float32"), crs=None,
                        transform=Affine(20, 0, 536640, 0, -20, 4350300))
    out = tmp_path / "cube.nc"
    result = cli("prepare", "--scenes", *two_scenes, "--dem", dem, "--output", out)
    one_line_error(result, GeoreferenceError.exit_code, out, "dem_nocrs.tif has no CRS", "gdal_edit")


def test_static_layer_elsewhere_is_exit_6(cli, two_scenes, tmp_path: Path):
    dem = write_geotiff(tmp_path / "dem_far.tif", np.ones((50, 50), dtype="float32"), crs="EPSG:4326",
                        transform=Affine(0.001, 0, 10.0, 0, -0.001, 50.0))
    out = tmp_path / "cube.nc"
    result = cli("prepare", "--scenes", *two_scenes, "--dem", dem, "--output", out)
    one_line_error(result, GeoreferenceError.exit_code, out, "does not overlap the cube")


# --- bad meteorology and scenes ----------------------------------------------------------------------
def test_meteorology_of_another_area_is_exit_6(cli, two_scenes, shared_data: Path, tmp_path: Path):
    out = tmp_path / "cube.nc"
    result = cli("prepare", "--scenes", *two_scenes, "--era5", shared_data / CF_SAMPLE, "--output", out)
    one_line_error(result, GeoreferenceError.exit_code, out, "nearest location", "km from the cube centre")


def test_meteorology_of_other_dates_is_exit_6(cli, two_scenes, en21x_cube: Path, tmp_path: Path):
    out = tmp_path / "cube.nc"  # the EarthNet2021x cube lies 45 km away and holds 2017
    result = cli("prepare", "--scenes", *two_scenes, "--meteo-from", en21x_cube, "--max-meteo-distance", "100",
                 "--output", out)
    one_line_error(result, GeoreferenceError.exit_code, out, "lacks 35 of the 35 days", "2021-06-24..2021-07-28",
                   "supply meteorology covering")


def test_two_meteorology_sources_is_exit_2(cli, two_scenes, jas_cube: Path, shared_data: Path, tmp_path: Path):
    out = tmp_path / "cube.nc"
    result = cli("prepare", "--scenes", *two_scenes, "--meteo-from", jas_cube, "--era5", shared_data / CF_SAMPLE,
                 "--output", out)
    one_line_error(result, UsageError.exit_code, out, "--era5 and --meteo-from")


def test_scene_without_scl_band_is_exit_5(cli, two_scenes, tmp_path: Path):
    with rasterio.open(two_scenes[0]) as src:
        names = list(src.descriptions)
        keep = [names.index(b) + 1 for b in ("B2", "B3", "B4", "B8A")]
        profile = {**src.profile, "count": 4}
        data = src.read(keep)
    path = tmp_path / "29SND_2021-06-28_four_bands.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(("B2", "B3", "B4", "B8A"), start=1):
            dst.set_band_description(i, name)
    out = tmp_path / "cube.nc"
    one_line_error(cli("prepare", "--scenes", path, "--output", out), MissingVariableError.exit_code, out,
                   "lacks band(s) SCL")


def test_scenes_and_input_together_is_exit_2(cli, two_scenes, jas_cube: Path, tmp_path: Path):
    out = tmp_path / "cube.nc"
    one_line_error(cli("prepare", "--scenes", two_scenes[0], "--input", jas_cube, "--output", out),
                   UsageError.exit_code, out, "--input and --scenes")
