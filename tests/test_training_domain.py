"""The training-domain check: what weights record of their training sequences, and what a forecast says of it."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
import rasterio
import xarray as xr

from tests.forecast_fixtures import SHIPPED, synthetic_cube, write_weights
from vegediff_cli.config import CONTEXT_FRAMES
from vegediff_cli.cube.readers import open_cube
from vegediff_cli.cube.schema import centre_latitude
from vegediff_cli.errors import ModelError
from vegediff_cli.model.domain import MAX_DAYS, MAX_DEGREES, DomainEntry, check_domain, encode_domain, read_domain
from vegediff_cli.model.weights import read_metadata

D = dt.date
PORTUGAL = DomainEntry("portugal", 38.7, D(2017, 8, 25), D(2017, 11, 18))
SWEDEN = DomainEntry("sweden", 59.0, D(2021, 5, 3), D(2021, 8, 6))
SERIES = DomainEntry("series", 45.0, D(2016, 1, 1), D(2018, 6, 1), conditioned=False)


def test_season_distance_wraps_at_the_new_year_and_ignores_the_year():
    winter = DomainEntry("winter", 50.0, D(2019, 12, 1), D(2019, 12, 31))
    assert winter.season_days(D(2023, 12, 15)) == 0.0  # inside the range, another year
    assert winter.season_days(D(2024, 1, 10)) == pytest.approx(10.0, abs=1)  # 10 days after, across the new year
    assert winter.season_days(D(2021, 11, 21)) == pytest.approx(10.0, abs=1)  # 10 days before
    assert winter.season_days(D(2021, 6, 15)) > 150
    assert SERIES.season_days(D(2030, 3, 3)) == 0.0  # a range longer than a year covers every season


def test_inside_needs_both_latitude_and_season_within_the_limits():
    near = check_domain([PORTUGAL, SWEDEN], latitude=39.3, start=D(2021, 9, 1), conditioned=True)
    assert near.inside and near.nearest == PORTUGAL and near.days == 0 and near.degrees == pytest.approx(0.6)
    early = check_domain([PORTUGAL, SWEDEN], latitude=39.3, start=D(2021, 7, 3), conditioned=True)
    assert early.inside is False and early.days == pytest.approx(53, abs=1) and early.status == "outside"
    assert "53 days of season" in early.describe() and "portugal" in early.describe()
    north = check_domain([PORTUGAL], latitude=38.7 + MAX_DEGREES + 0.5, start=D(2021, 9, 1), conditioned=True)
    assert north.inside is False
    edge = check_domain([PORTUGAL], latitude=38.7 + MAX_DEGREES - 0.1,
                        start=D(2021, 8, 25) - dt.timedelta(days=MAX_DAYS - 1), conditioned=True)
    assert edge.inside


def test_weather_forecasts_are_checked_against_the_conditioned_sequences_only():
    entries = [PORTUGAL, SERIES]
    assert check_domain(entries, latitude=45.0, start=D(2021, 4, 1), conditioned=False).inside
    with_weather = check_domain(entries, latitude=45.0, start=D(2021, 4, 1), conditioned=True)
    assert with_weather.inside is False and with_weather.nearest == PORTUGAL
    none = check_domain([SERIES], latitude=45.0, start=D(2021, 4, 1), conditioned=True)
    assert none.inside is False and "without any conditioned training sequence" in none.describe()
    unknown = check_domain(None, latitude=45.0, start=D(2021, 4, 1), conditioned=True)
    assert unknown.status == "unknown" and unknown.nearest is None


def test_the_domain_round_trips_through_metadata_and_a_malformed_one_is_refused(tmp_path):
    from vegediff_cli.pipeline.forecast.model import training_domain

    assert read_domain({"training_domain": encode_domain([PORTUGAL, SERIES])}) == [PORTUGAL, SERIES]
    assert read_domain({}) is None
    bad = write_weights(tmp_path / "bad.safetensors", metadata={"training_domain": '[{"name": "x"}]'})
    with pytest.raises(ModelError, match="malformed metadata") as info:
        training_domain(bad)
    assert "add_training_domain" in info.value.fix


def test_training_records_each_sequence_latitude_and_forecast_starts(tmp_path):
    """As `vegediff train` records it: one entry per source, the first forecast start after 10 context frames."""
    from vegediff_cli.training.index import describe, training_domain

    path = synthetic_cube(tmp_path / "cube.nc", height=128, width=128, frames=30, first="2022-05-01")
    [entry] = training_domain([describe(path)])
    assert entry.conditioned and entry.latitude == pytest.approx(centre_latitude(open_cube(path)), abs=1e-3)
    assert entry.first_start == D(2022, 5, 1) + dt.timedelta(days=5 * CONTEXT_FRAMES)
    assert D(2022, 7, 31) <= entry.last_start <= D(2022, 9, 28)  # windows may reach past the last frame


def _forecast(cli, cube, weights, output, *extra):
    result = cli("forecast", "--input", cube, "--weights", weights, "--members", "2", "--horizon", "3",
                 "--steps", "1", "--output", output, "--json", *extra)
    assert result.code == 0, result
    return result, json.loads(result.out)


def test_a_forecast_outside_the_domain_says_so_and_its_ensemble_too(tmp_path, cli):
    cube = synthetic_cube(tmp_path / "cube.nc", height=128, width=128, frames=12, first="2022-05-01")
    latitude = centre_latitude(open_cube(cube))  # about 47.8 N; forecasts start on 2022-06-30
    near = DomainEntry("near", latitude + 1.0, D(2020, 6, 10), D(2020, 7, 10))
    weights = {name: write_weights(tmp_path / f"{name}.safetensors", metadata={"training_domain": encode_domain(e)})
               for name, e in (("inside", [near, PORTUGAL]), ("outside", [PORTUGAL, SWEDEN]))}

    result, summary = _forecast(cli, cube, weights["inside"], tmp_path / "in.nc", "--no-cogs")
    assert summary["training_domain"]["status"] == "inside" and "near" in summary["training_domain"]["note"]
    assert "training domain" not in result.err

    result, summary = _forecast(cli, cube, weights["outside"], tmp_path / "out.nc")
    warning = [line for line in result.err.splitlines() if "outside the weights' training domain" in line]
    assert len(warning) == 1 and "2022-06-30" in warning[0] and "overconfident" in warning[0]
    assert summary["training_domain"]["status"] == "outside"
    with xr.open_dataset(tmp_path / "out.nc") as ds:
        assert ds.attrs["training_domain"] == "outside" and "portugal" in ds.attrs["training_domain_note"]
    with rasterio.open(sorted((tmp_path / "out_cogs").glob("ndvi_pred_*.tif"))[0]) as cog:
        assert cog.tags()["TRAINING_DOMAIN"] == "outside"

    ensemble = cli("ensemble", "--input", tmp_path / "out.nc", "--output", tmp_path / "ens.nc", "--no-cogs", "--json")
    assert ensemble.code == 0, ensemble
    assert "outside its weights' training domain" in ensemble.err and "overconfident" in ensemble.err
    assert json.loads(ensemble.out)["training_domain"] == "outside"
    again = cli("ensemble", "--input", tmp_path / "out.nc", "--output", tmp_path / "ens.nc", "--no-cogs", "--json")
    assert json.loads(again.out)["up_to_date"] and json.loads(again.out)["training_domain"] == "outside"
    with xr.open_dataset(tmp_path / "ens.nc") as ds:
        assert ds.attrs["training_domain"] == "outside"


def test_weights_without_a_domain_forecast_as_before(tmp_path, cli, tiny_weights):
    cube = synthetic_cube(tmp_path / "cube.nc", height=128, width=128, frames=12)
    result, summary = _forecast(cli, cube, tiny_weights, tmp_path / "f.nc", "--no-cogs")
    assert summary["training_domain"]["status"] == "unknown" and "training domain" not in result.err


def test_the_shipped_weights_place_the_test_cube_outside_and_the_sample_inside(jas_cube):
    """The shipped file's domain (seven conditioned sequences: Portugal August-November 2017, Sweden
    May-August 2021): the held-out test cube's forecasts, from its 11th frame (2021-07-03), start 51 days
    before any Portuguese one; the bundled 29SND 2017 sample's lie inside."""
    domain = read_domain(read_metadata(SHIPPED))
    assert sum(e.conditioned for e in domain) == 7 and len(domain) == 10
    with open_cube(jas_cube) as ds:
        start = pd.Timestamp(ds["time"].values[CONTEXT_FRAMES]).date()
        test = check_domain(domain, latitude=centre_latitude(ds), start=start, conditioned=True)
    assert test.inside is False and test.days > MAX_DAYS and test.degrees < 1
    sample = SHIPPED.parents[1] / "sample_data" / "29SND_2017_sample.nc"
    with open_cube(sample) as ds:
        start = pd.Timestamp(ds["time"].values[CONTEXT_FRAMES]).date()
        assert check_domain(domain, latitude=centre_latitude(ds), start=start, conditioned=True).inside
