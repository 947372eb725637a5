"""`vegediff ensemble`: member statistics (against numpy), files and COG names, the forecast it runs when needed."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

from tests.forecast_fixtures import synthetic_cube
from vegediff_cli.cube.predictions import read_ensemble
from vegediff_cli.pipeline.ensemble.statistics import member_statistics, prob_below, prob_drop


@pytest.fixture(scope="module")
def member_forecast(tmp_path_factory, tiny_weights):
    """A 4-member, 3-step forecast of a small synthetic cube, written by the CLI."""
    from vegediff_cli.cli.app import main

    folder = tmp_path_factory.mktemp("ens")
    cube = synthetic_cube(folder / "cube.nc", height=128, width=128, frames=12)
    out = folder / "forecast.nc"
    code = main([str(a) for a in ("forecast", "--input", cube, "--weights", tiny_weights, "--members", "4",
                                  "--horizon", "3", "--steps", "1", "--output", out, "--no-cogs", "--quiet")])
    assert code == 0
    return out


def test_statistics_match_numpy():
    rng = np.random.default_rng(1)
    members = rng.uniform(0.0, 0.9, (7, 3, 5, 4)).astype("float32")
    members[:, 0, 0, 0] = np.nan  # a pixel that was not forecast
    stats = member_statistics(members)
    np.testing.assert_allclose(stats["ndvi_mean"], members.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["ndvi_std"], members.std(0, ddof=1), rtol=1e-5)
    for name, q in (("ndvi_p10", 0.1), ("ndvi_p50", 0.5), ("ndvi_p90", 0.9)):
        np.testing.assert_allclose(stats[name], np.quantile(members, q, axis=0), rtol=1e-6)
    assert all(np.isnan(v[0, 0, 0]) for v in stats.values())
    below = prob_below(members, [0.3, 0.5])
    np.testing.assert_allclose(below[1, 1], (members[:, 1] < 0.5).mean(0))
    last = rng.uniform(0.5, 0.9, (5, 4)).astype("float32")
    drop = prob_drop(members, last, [0.1])
    np.testing.assert_allclose(drop[0, 2], ((last[None] - members[:, 2]) > 0.1).mean(0))
    assert np.isnan(below[:, 0, 0, 0]).all() and np.isnan(drop[:, 0, 0, 0]).all()
    with pytest.raises(ValueError):
        member_statistics(members[:1])


def test_ensemble_of_a_member_forecast(member_forecast, tmp_path, cli):
    out = tmp_path / "ensemble.nc"
    result = cli("ensemble", "--input", member_forecast, "--output", out, "--below", "0.3", "--below", "0.55",
                 "--drop", "0.1", "--json", "--quiet")
    assert result.code == 0, result
    summary = json.loads(result.out)
    assert summary["members"] == 4 and summary["forecast_run"] is None
    with xr.open_dataset(out, decode_coords="all") as ens, xr.open_dataset(member_forecast, decode_coords="all") as fc:
        assert ens.rio.crs == fc.rio.crs and np.array_equal(ens["x"].values, fc["x"].values)
        assert list(ens["threshold"].values) == [0.3, 0.55] and list(ens["drop"].values) == [0.1]
        np.testing.assert_allclose(ens["ndvi_mean"].values, fc["ndvi_pred"].values, atol=2e-4)
        members = fc["ndvi_member"].values
        np.testing.assert_allclose(ens["ndvi_p90"].values, np.quantile(members, 0.9, axis=0), atol=1e-6)
        assert (ens["ndvi_p10"].values <= ens["ndvi_p50"].values).all()
        assert (ens["ndvi_p50"].values <= ens["ndvi_p90"].values).all()
        for name in ("prob_ndvi_below", "prob_ndvi_drop"):
            values = ens[name].values
            assert np.nanmin(values) >= 0 and np.nanmax(values) <= 1
            assert np.allclose(values * 4, np.round(values * 4))  # fractions of 4 members
        assert (ens["prob_ndvi_below"].values[1] >= ens["prob_ndvi_below"].values[0]).all()  # monotone in threshold
        assert ens.attrs["members"] == 4 and ens.attrs["seed"] == fc.attrs["seed"]
        dates = [f"{d:%Y-%m-%d}" for d in pd.DatetimeIndex(ens["time"].values)]
    read_ensemble(out)  # what `vegediff evaluate --ensemble` reads
    names = sorted(p.name for p in (tmp_path / "ensemble_cogs").iterdir())
    expected = sorted([f"{v}_{d}.tif" for v in ("ndvi_mean", "ndvi_std", "ndvi_p10", "ndvi_p50", "ndvi_p90")
                       for d in dates] + [f"prob_ndvi_below_{t}_{d}.tif" for t in ("0.30", "0.55") for d in dates]
                      + [f"prob_ndvi_drop_0.10_{d}.tif" for d in dates])
    assert names == sorted([*expected, "ensemble.qgs", "styles"])
    # the QGIS project: every COG once, relative, in one group per product, ranges starting on the dates
    root = ET.parse(tmp_path / "ensemble_cogs" / "ensemble.qgs").getroot()
    assert sorted(e.findtext("datasource") for e in root.iter("maplayer")) == [f"./{n}" for n in expected]
    groups = root.find("layer-tree-group/layer-tree-group").findall("layer-tree-group")
    assert len(groups) == 8 and all(len(g.findall("layer-tree-layer")) == len(dates) for g in groups)
    starts = {e.findtext("temporal/fixedRange/start")[:10] for e in root.iter("maplayer")}
    assert starts == set(dates)
    styles = sorted(p.stem for p in (tmp_path / "ensemble_cogs" / "styles").glob("*.qml"))
    assert styles == sorted({n.rsplit("_", 1)[0] for n in expected})
    with rasterio.open(tmp_path / "ensemble_cogs" / f"prob_ndvi_below_0.55_{dates[1]}.tif") as src:
        with xr.open_dataset(out) as ens:
            np.testing.assert_allclose(src.read(1), ens["prob_ndvi_below"].values[1, 1], atol=1e-6)
        assert src.tags()["VARIABLE"] == "prob_ndvi_below_0.55"
        assert "(prob_ndvi_below_0.55)" in src.descriptions[0]


def test_ensemble_runs_the_forecast_it_needs_in_the_workdir(tmp_path, tiny_weights, cli):
    tile = tmp_path / "32UQD"
    tile.mkdir()
    synthetic_cube(tile / "cube.nc", height=128, width=128, frames=11)
    result = cli("ensemble", "--tile", "32UQD", "--workdir", tmp_path, "--members", "3", "--weights", tiny_weights,
                 "--horizon", "2", "--steps", "1", "--no-cogs", "--json", "--quiet")
    assert result.code == 0, result
    assert json.loads(result.out)["forecast_run"]["members"] == 3
    with xr.open_dataset(tile / "forecast.nc") as fc, xr.open_dataset(tile / "ensemble.nc") as ens:
        assert fc.sizes["member"] == 3 and ens.attrs["members"] == 3
    # asking for more members than the tile's forecast holds re-runs it; the same number reuses it
    stamp = (tile / "forecast.nc").stat().st_mtime_ns
    assert cli("ensemble", "--tile", "32UQD", "--workdir", tmp_path, "--members", "3", "--no-cogs", "--quiet").code == 0
    assert (tile / "forecast.nc").stat().st_mtime_ns == stamp
    # an option given explicitly that the forecast was not made with re-runs it, and so does a newer cube
    args = ("ensemble", "--tile", "32UQD", "--workdir", tmp_path, "--members", "3", "--weights", tiny_weights,
            "--horizon", "2", "--steps", "1", "--no-cogs", "--quiet")
    assert cli(*args, "--seed", "5").code == 0
    with xr.open_dataset(tile / "forecast.nc") as fc:
        assert int(fc.attrs["seed"]) == 5
    stamp = (tile / "forecast.nc").stat().st_mtime_ns
    assert cli(*args, "--seed", "5").code == 0
    assert (tile / "forecast.nc").stat().st_mtime_ns == stamp
    os.utime(tile / "cube.nc", ns=(stamp + 10**9, stamp + 10**9))
    assert cli(*args, "--seed", "5").code == 0
    assert (tile / "forecast.nc").stat().st_mtime_ns > stamp


def test_ensemble_refuses_a_single_member_forecast(tmp_path, tiny_weights, cli):
    cube = synthetic_cube(tmp_path / "cube.nc", height=128, width=128, frames=11)
    single = tmp_path / "single.nc"
    assert cli("forecast", "--input", cube, "--weights", tiny_weights, "--horizon", "1", "--steps", "1",
               "--output", single, "--no-cogs", "--quiet").code == 0
    result = cli("ensemble", "--input", single, "--output", tmp_path / "e.nc", "--quiet")
    assert result.code == 2 and "holds 1 member" in result.err
    assert not (tmp_path / "e.nc").exists()


def test_threshold_outside_the_ndvi_range_exit_2(member_forecast, tmp_path, cli):
    result = cli("ensemble", "--input", member_forecast, "--output", tmp_path / "e.nc", "--below", "1.5", "--quiet")
    assert result.code == 2 and "--below 1.5 is outside -1.0..1.0" in result.err
    assert list(tmp_path.iterdir()) == []
