"""`vegediff evaluate` on the real cubes: reference figures, checked independently; member forecasts; bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import scoringrules
import xarray as xr

from tests.evaluate_fixtures import ensemble_file, member_forecast
from vegediff_cli.cube.netcdf import write_netcdf
from vegediff_cli.cube.predictions import read_forecast
from vegediff_cli.cube.readers import open_cube
from vegediff_cli.cube.schema import new_cube
from vegediff_cli.errors import (
    CorruptInputError,
    GeoreferenceError,
    InputNotFoundError,
    MissingVariableError,
    NoValidDataError,
    UsageError,
)
from vegediff_cli.metrics.deterministic import ALL_VALID, GREENEARTHNET
from vegediff_cli.pipeline.evaluate.baselines import baseline_forecast
from vegediff_cli.pipeline.evaluate.scoring import EvaluationSettings, score

JAS = "JAS2021_minicube_0_29SND_39.29_-8.56.nc"
CLEAR_SCL = [1, 2, 4, 5, 6, 7]


# --- an independent scorer: GreenEarthNet's published definitions, written directly in xarray ----

def official_pixels(cube: Path, prediction: xr.DataArray) -> pd.DataFrame:
    """High-quality pixels of a cube with their scores, computed the way the paper's scorer does.

    A raw GreenEarthNet minicube is masked with its own dlmask and SCL; this project's cube.nc
    with its valid_mask (y, x renamed to lat, lon).
    """
    raw = xr.open_dataset(cube)
    if "valid_mask" in raw:
        raw = raw.rename(y="lat", x="lon")
        clear = raw.valid_mask == 1
    else:
        clear = (raw.s2_dlmask < 1) & raw.s2_SCL.isin(CLEAR_SCL)
    full = ((raw.s2_B8A - raw.s2_B04) / (raw.s2_B8A + raw.s2_B04 + 1e-8)).where(clear).clip(-1, 1)
    target = full.sel(time=prediction.time)
    pred = prediction.clip(-1, 1).fillna(0.5)
    n_obs, n_full = clear.sel(time=prediction.time).sum("time"), clear.sum("time")
    table = xr.Dataset({
        "rmse": ((target - pred) ** 2).mean("time") ** 0.5,
        "nnse": 1 / (1 + ((target - pred) ** 2).sum("time") / ((target - target.mean("time")) ** 2).sum("time")),
        "r": xr.corr(target, pred, dim="time"),
        "bias": target.mean("time") - pred.where(clear.sel(time=prediction.time)).mean("time"),
        "keep": (raw.esawc_lc < 41) & (full.min("time") > 0) & (n_obs >= 10) & (n_full - n_obs >= 3)
                & (target.std("time") > 0.1),
        "lc": raw.esawc_lc,
    }).to_dataframe()
    table = table[table.keep]
    table["id"] = cube.stem
    return table


def official_headline(table: pd.DataFrame) -> dict[str, float]:
    by = table.assign(r2=table.r**2, abs_bias=table.bias.abs()).groupby(["id", "lc"])
    per_class = by[["rmse", "nnse", "r2", "abs_bias"]].mean().groupby("lc").mean().mean()
    return {"rmse": per_class.rmse, "nse": 2 - 1 / per_class.nnse, "r2": per_class.r2, "abs_bias": per_class.abs_bias}


def as_prediction(values: np.ndarray, like: xr.DataArray) -> xr.DataArray:
    return xr.DataArray(values, coords=like.coords, dims=like.dims)


@pytest.fixture(scope="session")
def contextformer(shared_data: Path) -> Path:
    return shared_data / "greenearthnet" / "reference_predictions" / "contextformer"


@pytest.fixture(scope="session")
def jas_target(jas_cube: Path) -> xr.Dataset:
    return open_cube(jas_cube)


@pytest.fixture(scope="session")
def tile_workdir(tmp_path_factory, jas_cube: Path, contextformer: Path) -> Path:
    """A working directory as the pipeline leaves it: cube.nc, a member forecast.nc and its ensemble.nc."""
    root = tmp_path_factory.mktemp("work")
    tile = root / "29SND"
    write_netcdf(open_cube(jas_cube), tile / "cube.nc")
    forecast = member_forecast(tile / "cube.nc", contextformer / JAS, tile / "forecast.nc")
    ensemble_file(tile / "cube.nc", forecast, tile / "ensemble.nc")
    return root


# --- reference figures -------------------------------------------------------------------------

def test_contextformer_and_persistence_reproduce_the_reference_figures(jas_cube, jas_target, contextformer):
    scores = score(jas_target, read_forecast(contextformer / JAS), baseline="persistence", name="contextformer")
    head = scores.headline
    assert (round(head["rmse"], 3), round(head["nse"], 3), round(head["r2"], 3)) == (0.208, -0.461, 0.423)
    oracle = official_headline(official_pixels(jas_cube, xr.open_dataset(contextformer / JAS).ndvi_pred))
    for key in ("rmse", "nse", "r2", "abs_bias"):
        assert head[key] == pytest.approx(oracle[key], abs=1e-6), key
    assert head["n_pixels"] == len(official_pixels(jas_cube, xr.open_dataset(contextformer / JAS).ndvi_pred))
    assert {10, 20, 30, 40} <= set(scores.per_class)
    assert scores.per_class[40]["n_pixels"] > scores.per_class[10]["n_pixels"] > 0

    base = scores.baseline.headline
    assert (round(base["rmse"], 3), round(base["nse"], 3)) == (0.223, -0.647)
    # persistence, independently: last clear NDVI of the first 10 frames (time[4::5]) held for 20 steps
    raw = xr.open_dataset(jas_cube)
    frames = raw.isel(time=slice(4, None, 5))
    ndvi = ((frames.s2_B8A - frames.s2_B04) / (frames.s2_B8A + frames.s2_B04 + 1e-8)).where(
        (frames.s2_dlmask < 1) & frames.s2_SCL.isin(CLEAR_SCL)).values
    last = np.full(ndvi.shape[1:], np.nan)
    for values in ndvi[:10]:
        last = np.where(np.isfinite(values), values, last)
    assert np.isfinite(last).all()  # this cube needs no gap filling
    held = as_prediction(np.repeat(last[None], 20, axis=0), xr.open_dataset(contextformer / JAS).ndvi_pred)
    oracle = official_headline(official_pixels(jas_cube, held))
    assert base["rmse"] == pytest.approx(oracle["rmse"], abs=1e-6)
    assert base["nse"] == pytest.approx(oracle["nse"], abs=1e-6)
    assert scores.outperformance["outperformance"] == pytest.approx(4 / 6)  # 6 exact-value land-cover groups


def test_a_rule_without_land_cover_groups_averages_over_the_pixels(jas_cube, jas_target, contextformer):
    prediction = read_forecast(contextformer / JAS)
    rule = dataclasses.replace(GREENEARTHNET, by_landcover=False)  # the same pixels, one group
    scores = score(jas_target, prediction, baseline=None, name="contextformer", settings=EvaluationSettings(quality=rule))
    oracle = official_pixels(jas_cube, xr.open_dataset(contextformer / JAS).ndvi_pred)
    assert scores.groups.landcover.tolist() == [0.0] and scores.headline["n_pixels"] == len(oracle)
    assert scores.headline["rmse"] == pytest.approx(oracle.rmse.mean(), abs=1e-6)  # pixel mean, not class mean
    assert abs(oracle.rmse.mean() - official_headline(oracle)["rmse"]) > 1e-3  # and the two differ on this cube


def test_gaps_count_as_half_and_pixels_never_forecast_are_left_out(jas_cube, jas_target, contextformer):
    prediction = xr.open_dataset(contextformer / JAS).load()
    values = prediction.ndvi_pred.values.copy()
    values[:, :, :64] = np.nan  # a forecast of the eastern half only
    values[3, 70:90, 80:100] = np.nan  # and a gap in one step
    prediction["ndvi_pred"] = (prediction.ndvi_pred.dims, values)
    scores = score(jas_target, prediction, baseline=None, name="east")
    oracle = official_pixels(jas_cube, prediction.ndvi_pred)  # gaps -> 0.5, as the official scorer does
    east = oracle[oracle.index.get_level_values("lon") >= jas_target.x.values[64]]
    assert scores.headline["n_pixels"] == len(east)
    assert scores.headline["rmse"] == pytest.approx(official_headline(east)["rmse"], abs=1e-6)
    assert any("no forecast at all" in note for note in scores.notes)


def test_cli_scores_many_cubes_in_parallel(cli, shared_data, contextformer, tmp_path):
    folder = shared_data / "greenearthnet"
    out = tmp_path / "scores"
    result = cli("evaluate", "--input", folder, "--forecast", contextformer, "--output", out,
                 "--no-plots", "--jobs", "2", "--json", "--quiet")
    assert result.code == 0, result
    report = json.loads(result.out)
    cubes = sorted(folder.glob("*.nc"))
    assert report["cubes"] == [c.stem for c in cubes]  # the prediction folder inside --input is not a target
    pooled = pd.concat([official_pixels(c, xr.open_dataset(contextformer / c.name).ndvi_pred) for c in cubes])
    oracle = official_headline(pooled)
    head = report["forecasts"]["contextformer"]["headline"]
    for key in ("rmse", "nse", "r2", "abs_bias"):
        assert head[key] == pytest.approx(oracle[key], abs=1e-6), key
    assert head["n_pixels"] == len(pooled)
    assert report["forecasts"]["persistence"]["headline"]["rmse"] > head["rmse"]
    assert set(report["forecasts"]["contextformer"]["classes"]) >= {"10", "30", "40"}
    assert report["forecasts"]["contextformer"]["classes"]["40"]["name"] == "crop"
    assert json.loads((out / "scores.json").read_text())["forecasts"].keys() == report["forecasts"].keys()
    table = pd.read_csv(out / "scores.csv")
    assert list(table.columns) == ["scope", "forecast", "landcover", "metric", "value", "n_pixels"]
    row = table[(table.scope == "all") & (table.forecast == "contextformer") & (table.landcover == "all")
                & (table.metric == "rmse")]
    assert row.value.item() == pytest.approx(head["rmse"])
    assert set(table.scope) == {"all", *(c.stem for c in cubes)}
    assert not (out / "figures").exists()


# --- member forecasts and ensembles --------------------------------------------------------------

def test_tile_with_members_and_ensemble(cli, tile_workdir, jas_cube):
    result = cli("evaluate", "--tile", "29SND", "--workdir", tile_workdir, "--json", "--quiet", "--jobs", "1")
    assert result.code == 0, result
    out = tile_workdir / "29SND" / "evaluation"
    report = json.loads((out / "scores.json").read_text())
    prob = report["forecasts"]["forecast"]["probabilistic"]
    assert prob["members"] == 8
    assert sum(prob["rank_histogram"]) == prob["samples"] > 0

    # independently: fair CRPS and spread-skill over the clear target steps of the high-quality pixels
    tile = tile_workdir / "29SND"
    members = xr.open_dataset(tile / "forecast.nc").ndvi_member.rename(y="lat", x="lon")
    cube = xr.open_dataset(tile / "cube.nc").rename(y="lat", x="lon")
    pixels = official_pixels(tile / "cube.nc", members.mean("member")).reset_index()
    ii = cube.indexes["lat"].get_indexer(pixels.lat)
    jj = cube.indexes["lon"].get_indexer(pixels.lon)
    target = cube.sel(time=members.time)
    ndvi = ((target.s2_B8A - target.s2_B04) / (target.s2_B8A + target.s2_B04 + 1e-8)).where(target.valid_mask == 1)
    obs = ndvi.clip(-1, 1).values[:, ii, jj]  # (T, P)
    ens = np.moveaxis(members.values[:, :, ii, jj], 0, -1)  # (T, P, M)
    clear = np.isfinite(obs)
    assert prob["samples"] == clear.sum()
    crps = scoringrules.crps_ensemble(obs[clear], ens[clear], estimator="fair", backend="numpy")
    assert prob["crps"] == pytest.approx(crps.mean(), rel=1e-6)
    spread = np.sqrt(9 / 8 * ens[clear].var(axis=-1, ddof=1).mean())
    assert prob["spread_skill_ratio"] == pytest.approx(spread / np.sqrt(((ens[clear].mean(-1) - obs[clear]) ** 2).mean()))
    head = report["forecasts"]["forecast"]["headline"]
    assert head["rmse"] == pytest.approx(official_headline(pixels)["rmse"], abs=1e-6)
    below = prob["reliability"]["ndvi_below_0.3"]
    assert below["samples"] == prob["samples"]
    assert below["base_rate"] == pytest.approx((obs[clear] < 0.3).mean())
    assert {"ndvi_drop_0.1", "ndvi_drop_0.2", "ndvi_below_0.5"} <= set(prob["reliability"])

    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == sorted(Path(p).name for p in report["files"]["figures"])
    for suffix in ("forecast_ndvi_maps.png", "rmse_maps.png", "forecast_series.png"):
        assert any(name.endswith(suffix) for name in figures), suffix
    assert {"forecast_rank_histogram.png", "forecast_reliability.png"} <= set(figures)
    for name in figures:
        assert (out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # QGIS: observed frames (context and targets), the forecast's NDVI and RMSE maps, in one project
    assert report["files"]["qgis"] == [str(out / "qgis" / "29SND" / "evaluation.qgs")]
    maps = out / "qgis" / "29SND"
    root = ET.parse(maps / "evaluation.qgs").getroot()
    sources = sorted(e.findtext("datasource") for e in root.iter("maplayer"))
    assert sources == sorted(f"./{p.name}" for p in maps.glob("*.tif"))
    dates = [f"{d:%Y-%m-%d}" for d in pd.DatetimeIndex(members.time.values)]
    assert sorted(maps.glob("forecast_forecast_*.tif")) == [maps / f"forecast_forecast_{d}.tif" for d in dates]
    assert len(list(maps.glob("observed_ndvi_*.tif"))) == 10 + len(dates)
    assert {p.name for p in maps.glob("rmse_*.tif")} == {"rmse_forecast.tif", "rmse_persistence.tif"}
    with rasterio.open(maps / "rmse_forecast.tif") as src:  # the cube's CRS (from the dataset open above)
        assert src.crs == rasterio.crs.CRS.from_wkt(cube["spatial_ref"].attrs["crs_wkt"])
        assert np.nanmax(src.read(1, masked=True).filled(np.nan)) <= 2


# --- baselines ------------------------------------------------------------------------------------

def test_baselines_see_only_the_context(jas_target, contextformer):
    dates = pd.DatetimeIndex(read_forecast(contextformer / JAS)["time"].values)
    persistence = baseline_forecast("persistence", jas_target, dates)
    mean = baseline_forecast("context-mean", jas_target, dates)
    assert persistence.sizes == {"time": 20, "y": 128, "x": 128}
    assert (pd.DatetimeIndex(persistence["time"].values) == dates).all()
    red, nir = jas_target.s2_B04.values[:10, 64, 32], jas_target.s2_B8A.values[:10, 64, 32]
    clear = jas_target.valid_mask.values[:10, 64, 32].astype(bool)
    ndvi = (nir - red) / (nir + red + 1e-8)
    assert persistence.ndvi_pred.values[5, 64, 32] == pytest.approx(ndvi[clear][-1], abs=1e-6)
    assert mean.ndvi_pred.values[0, 64, 32] == pytest.approx(ndvi[clear].mean(), abs=1e-6)
    # the target frames never leak into a baseline: changing them changes nothing
    altered = jas_target.copy(deep=True)
    altered["s2_B8A"][10:] = 0.9
    np.testing.assert_array_equal(baseline_forecast("persistence", altered, dates).ndvi_pred.values,
                                  persistence.ndvi_pred.values)
    with pytest.raises(UsageError, match="earlier years"):
        baseline_forecast("climatology", jas_target, dates)


def test_climatology_on_a_multi_year_series(shared_data):
    raw = xr.open_dataset(shared_data / "sentinel2_series" / "romania_forest_2015-2021_10m.nc").load()
    bands = np.stack([raw[b].values * 1e-4 for b in ("B2", "B3", "B4", "B8")], axis=1)
    valid = np.isin(raw.SCL.values, CLEAR_SCL) & np.isfinite(bands).all(axis=1)
    cube = new_cube(times=raw.time.values, y=raw.y.values, x=raw.x.values, crs="EPSG:3035", bands=bands,
                    valid=valid, source="test: Romanian forest, B8 for B8A")
    times = pd.DatetimeIndex(cube.time.values)
    summer = times[(times.year == 2020) & (times.month >= 6) & (times.month <= 9)]
    forecast = baseline_forecast("context-mean", cube, summer, context_frames=6)
    scores = score(cube, forecast, baseline="climatology", settings=EvaluationSettings(context_frames=6, quality=ALL_VALID))
    assert scores.notes and "esawc_lc" in scores.notes[0]
    assert scores.groups.landcover.tolist() == [0.0]
    assert scores.baseline.headline["rmse"] < 0.2  # a forest's seasonal cycle is predictable from earlier years
    clim = baseline_forecast("climatology", cube, summer, context_frames=6)
    when = summer[3]
    gap = np.abs(times.day_of_year - when.day_of_year)
    earlier = (np.minimum(gap, 365 - gap) <= 15) & (times < times[times.get_loc(summer[0]) - 6])
    ndvi = (bands[:, 3] - bands[:, 2]) / (bands[:, 3] + bands[:, 2] + 1e-8)
    pixel = np.where(valid[:, 50, 50] & earlier, ndvi[:, 50, 50], np.nan)
    assert clim.ndvi_pred.values[3, 50, 50] == pytest.approx(np.nanmean(pixel), abs=1e-5)
    assert set(clim.attrs["climatology_years"].split()) <= {"2015", "2016", "2017", "2018", "2019"}


# --- bad input: one line, documented exit code, nothing written -------------------------------

def _prediction(contextformer: Path, path: Path, change) -> Path:
    pred = xr.open_dataset(contextformer / JAS).load()
    change(pred).to_netcdf(path)
    return path


def _shift_lat(p):
    return p.assign_coords(lat=p.lat.values + 3 * (p.lat.values[0] - p.lat.values[1]))


def _shift_time(p):
    return p.assign_coords(time=p.time.values + np.timedelta64(1, "D"))


def _utm(p):
    return p.rename(lat="y", lon="x").rio.write_crs("EPSG:32629")


def _no_pred(p):
    return p.rename(ndvi_pred="ndvi")


def _few_members(p):
    members = xr.concat([p.ndvi_pred + d for d in (-0.05, 0.0, 0.05, 0.1)], dim="member")
    return p.assign(ndvi_member=members.transpose("member", ...)).assign_attrs(members=8)


def _one_member(p):
    return p.assign(ndvi_member=p.ndvi_pred.expand_dims(member=1))


@pytest.mark.parametrize(("change", "error", "words"), [
    (_shift_lat, GeoreferenceError, ["another grid", "3.00 pixels", "gdalwarp"]),
    (lambda p: p.isel(lat=slice(0, 120)), GeoreferenceError, ["120 x 128"]),
    (_shift_time, GeoreferenceError, ["2021-07-04", "not a frame date"]),
    (_utm, GeoreferenceError, ["EPSG:32629"]),
    (_no_pred, MissingVariableError, ["ndvi_pred"]),
    (_few_members, CorruptInputError, ["members=8", "holds 4"]),
    (_one_member, CorruptInputError, ["at least 2"]),
])
def test_bad_forecast(cli, jas_cube, contextformer, tmp_path, change, error, words):
    bad = _prediction(contextformer, tmp_path / JAS, change)
    out = tmp_path / "out"
    result = cli("evaluate", "--input", jas_cube, "--forecast", bad, "--output", out, "--no-plots")
    _assert_clean_failure(result, error.exit_code, out, *words)


def test_target_without_valid_pixels(cli, jas_target, contextformer, tmp_path):
    cloudy = jas_target.copy(deep=True)
    cloudy["valid_mask"][10:] = 0  # every forecast date under cloud
    write_netcdf(cloudy, tmp_path / JAS)
    out = tmp_path / "out"
    result = cli("evaluate", "--input", tmp_path / JAS, "--forecast", contextformer / JAS, "--output", out)
    _assert_clean_failure(result, NoValidDataError.exit_code, out, "no pixel passes", "--pixels all-valid")


def test_ensemble_of_other_members(cli, tile_workdir, tmp_path):
    tile = tile_workdir / "29SND"
    ensemble = xr.open_dataset(tile / "ensemble.nc").load().assign_attrs(members=16)
    write_netcdf(ensemble, tmp_path / "ensemble.nc")
    out = tmp_path / "out"
    result = cli("evaluate", "--input", tile / "cube.nc", "--forecast", tile / "forecast.nc",
                 "--ensemble", tmp_path / "ensemble.nc", "--output", out, "--no-plots")
    _assert_clean_failure(result, UsageError.exit_code, out, "16 members", "holds 8")


@pytest.mark.parametrize(("args", "error", "words"), [
    (["--baseline", "climatology"], UsageError, ["earlier years"]),
    (["--baseline", "yesterday"], UsageError, ["yesterday", "persistence"]),
    (["--forecast", "persistence={pred}"], UsageError, ["persistence", "NAME=PATH"]),
    (["--forecast", "{missing}"], InputNotFoundError, ["missing_forecasts"]),
])
def test_bad_options(cli, jas_cube, contextformer, tmp_path, args, error, words):
    out = tmp_path / "out"
    args = [a.format(pred=contextformer / JAS, missing=tmp_path / "missing_forecasts") for a in args]
    forecast = [] if "--forecast" in args else ["--forecast", contextformer / JAS]
    result = cli("evaluate", "--input", jas_cube, *forecast, *args, "--output", out, "--no-plots")
    _assert_clean_failure(result, error.exit_code, out, *words)


def test_prediction_folder_missing_a_cube(cli, shared_data, contextformer, tmp_path):
    partial = tmp_path / "preds"
    partial.mkdir()
    shutil.copy(contextformer / JAS, partial / JAS)
    out = tmp_path / "out"
    result = cli("evaluate", "--input", shared_data / "greenearthnet", "--forecast", partial, "--output", out)
    _assert_clean_failure(result, InputNotFoundError.exit_code, out, "1 of 2 cubes", "MJJ2021")


def _assert_clean_failure(result, code: int, output: Path, *words: str) -> None:
    assert result.code == code, result
    lines = [line for line in result.err.strip().splitlines() if line]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("vegediff: error: ") and "Traceback" not in result.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if ".partial-" in p.name]
