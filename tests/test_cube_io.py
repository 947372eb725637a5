"""Every real cube reads into the cube model and round-trips through NetCDF and COG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

from vegediff_cli.config import BANDS, VALID
from vegediff_cli.cube.cog import validate_cog, write_cog, write_time_series_cogs
from vegediff_cli.cube.masks import cube_ndvi
from vegediff_cli.cube.netcdf import write_netcdf
from vegediff_cli.cube.readers import open_cube

from .conftest import REQUIRE_SHARED, all_shared_cubes

CUBES = all_shared_cubes()


def test_shared_cubes_are_found():
    if not CUBES and not REQUIRE_SHARED:
        pytest.skip("../shared/data absent")
    # 2 GreenEarthNet + 1 EarthNet2021x + 6 context + 6 target EarthNet2021 files
    assert len(CUBES) == 15


@pytest.mark.parametrize("path", CUBES, ids=[p.name[:40] for p in CUBES])
def test_round_trip_netcdf_and_cog(path: Path, tmp_path: Path):
    cube = open_cube(path)
    assert tuple(cube[BANDS[0]].dims) == ("time", "y", "x")
    assert cube.sizes["time"] in (10, 20, 30)
    assert cube.rio.crs is not None
    times = pd.DatetimeIndex(cube["time"].values)
    assert set(np.diff(times).astype("timedelta64[D]").astype(int)) == {5}
    assert cube[VALID].values.any()

    out = write_netcdf(cube, tmp_path / "cube.nc")
    back = open_cube(out)
    assert back.rio.crs == cube.rio.crs
    assert back.rio.transform() == pytest.approx(cube.rio.transform())
    for band in BANDS:  # int16 x 1e-4 storage: lossless to half a quantisation step
        diff = np.abs(back[band].values - cube[band].values)
        assert np.nanmax(diff) <= 5.01e-5
        assert np.array_equal(np.isnan(back[band].values), np.isnan(cube[band].values))
    np.testing.assert_array_equal(back[VALID].values, cube[VALID].values)
    np.testing.assert_array_equal(back["time"].values, cube["time"].values)

    # GDAL sees the CRS, transform and nodata of the NetCDF subdataset.
    with rasterio.open(f"netcdf:{out}:s2_B04") as src:
        assert src.crs == cube.rio.crs
        assert src.transform.almost_equals(cube.rio.transform())
        assert src.nodata == -32768
        assert src.count == cube.sizes["time"]

    ndvi = cube_ndvi(back)
    ndvi.attrs.update({"units": "1", "long_name": "NDVI"})
    cogs = write_time_series_cogs(ndvi.isel(time=[0, -1]).rio.write_crs(back.rio.crs), tmp_path / "cogs", prefix="ndvi")
    assert [p.name for p in cogs] == [f"ndvi_{pd.Timestamp(t):%Y-%m-%d}.tif" for t in ndvi["time"].values[[0, -1]]]
    for cog, step in zip(cogs, (0, -1), strict=False):
        valid, errors, _ = validate_cog(cog)
        assert valid, errors
        with rasterio.open(cog) as src:
            assert src.crs == cube.rio.crs
            assert src.transform.almost_equals(cube.rio.transform())
            assert src.nodata == -9999.0
            assert src.descriptions[0].startswith("NDVI")
            assert src.tags()["DATE"].startswith(str(pd.Timestamp(ndvi["time"].values[step]).date()))
            data = src.read(1, masked=True)
        expected = ndvi.isel(time=step).values
        np.testing.assert_allclose(data.filled(np.nan), expected, rtol=0, atol=1e-6)


def test_greenearthnet_frames_and_meteo(jas_cube: Path):
    cube = open_cube(jas_cube)
    raw = xr.open_dataset(jas_cube)
    # Sentinel-2 sits on time[4::5]; each frame's meteorology covers the 5 days ending on it.
    np.testing.assert_array_equal(cube["time"].values, raw["time"].values[4::5])
    daily = raw["eobs_tg"].values
    for t in (0, 7, 29):
        window = daily[5 * t : 5 * t + 5]
        np.testing.assert_allclose(
            cube["eobs_tg"].isel(time=t).values,
            [np.nanmean(window), np.nanmin(window), np.nanmax(window)], rtol=1e-6,
        )
    # The valid mask is GreenEarthNet's rule, computed independently here.
    scl = raw["s2_SCL"].values[4::5]
    dl = raw["s2_dlmask"].values[4::5]
    expected = (dl < 1) & np.isin(scl, [1, 2, 4, 5, 6, 7])
    np.testing.assert_array_equal(cube[VALID].values.astype(bool), expected)
    np.testing.assert_array_equal(cube["y"].values, raw["lat"].values)
    np.testing.assert_array_equal(cube["x"].values, raw["lon"].values)


def test_earthnet2021_pair_joins_context_and_target(earthnet2021_contexts: list[Path]):
    context = earthnet2021_contexts[0]
    cube = open_cube(context)
    assert cube.sizes["time"] == 30
    npz = np.load(context.parent.parent / "target" / context.name.replace("context_", "target_"))
    target_b04 = npz["highresdynamic"][:, :, 2, 0].astype("float32")
    np.testing.assert_allclose(cube["s2_B04"].isel(time=10).values, target_b04)
    # 29SND tile's upper-left corner is (499980, 4400040); offsets are in 20 m pixels.
    x0 = int(context.name.split("_")[4]) if "29SND" in context.name else None
    if x0 is not None:
        assert cube.rio.transform().c == 499980 + 20 * x0
    assert -30 < float(cube["eobs_tg"].sel(stat="mean").mean()) < 45
    assert 950 < float(cube["eobs_pp"].sel(stat="mean").mean()) < 1050


def test_write_cog_has_overviews_when_large(tmp_path: Path):
    values = np.random.default_rng(0).random((700, 600)).astype("float32")
    values[:10] = np.nan
    from affine import Affine

    path = write_cog(values, tmp_path / "big.tif", crs="EPSG:32632", transform=Affine(20, 0, 600000, 0, -20, 5300000))
    valid, errors, _ = validate_cog(path)
    assert valid, errors
    with rasterio.open(path) as src:
        assert src.overviews(1), "expected internal overviews"
        assert np.isnan(src.read(1, masked=True).filled(np.nan)[:10]).all()
