"""`vegediff fetch` end to end over HTTP: a loopback STAC API serving real items and real COGs.

The 29SND catalogue holds the 7 real scenes of ../shared/data/geotiff as per-band COGs, plus a
baseline-04.00 copy (DN + 1000) of two acquisitions and an older, wrong processing of one
(see fixtures_stac.py). The fetched reflectance must equal the source scenes pixel for pixel.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from vegediff_cli.cube.masks import clear_from_scl
from vegediff_cli.cube.readers import open_cube

from . import fixtures_stac
from .fixtures_stac import (
    BASELINE4_DATES,
    FAST,
    STALE_DUPLICATE_DATE,
    Served,
    assert_matches_source,
    build_29rkh,
    build_29snd,
    cog_requests,
    date_of,
    fetch_args,
    window_29snd,
)
from .stac_server import StacServer

# pytest fixtures shared by the fetch tests
served_29snd = fixtures_stac.served_29snd
snd_cog_folder = fixtures_stac.snd_cog_folder

# odc-geo still calls shapely.ops.transform, deprecated in shapely 2.1
pytestmark = pytest.mark.filterwarnings("ignore:The 'shapely.ops.transform:DeprecationWarning")
def test_fetch_matches_source_scenes_pixel_for_pixel(cli, served_29snd: Served, tmp_path: Path):
    out = tmp_path / "29SND" / "s2_raw.nc"
    result = cli(*fetch_args(served_29snd, out, "--json"))
    assert result.code == 0, result
    summary = json.loads(result.out)
    assert summary["items_found"] == 10
    assert len(summary["acquisitions"]) == 7
    assert sorted(summary["duplicates_dropped"]) == sorted(served_29snd.built.dropped_ids)
    assert summary["dates_fetched"] == [t.date for t in served_29snd.built.truth]

    with xr.open_dataset(out, decode_coords="all") as cube:
        checked = assert_matches_source(cube, served_29snd.built)
        assert checked == sum(t.dn["B02"].size for t in served_29snd.built.truth) * 4
        # valid_mask is GreenEarthNet's rule on the fetched SCL, where all bands have data
        scl = np.nan_to_num(cube["s2_SCL"].values, nan=0)
        finite = np.isfinite(np.stack([cube[b].values for b in ("s2_B02", "s2_B03", "s2_B04", "s2_B8A")])).all(0)
        assert np.array_equal(cube["valid_mask"].values.astype(bool), clear_from_scl(scl) & finite)
        assert cube.rio.crs.to_epsg() == 32629
        assert float(cube["x"][1] - cube["x"][0]) == 20.0 and float(cube["y"][1] - cube["y"][0]) == -20.0
        assert (cube["x"].values - 10) % 20 == pytest.approx(0) and (cube["y"].values - 10) % 20 == pytest.approx(0)
        attrs = cube.attrs
    assert attrs["source"] == "fetch" and attrs["tile"] == "29SND" and attrs["stac_url"] == served_29snd.url
    used = attrs["item_ids"].split()
    assert used == served_29snd.built.kept_ids
    assert not set(attrs["duplicates_dropped"].split()) & set(used)
    baselines = dict(zip(used, attrs["processing_baselines"].split(), strict=True))
    assert {i for i, b in baselines.items() if b == "04.00"} == {i for i in used if date_of(i) in BASELINE4_DATES}
    assert f"S2A_29SND_{STALE_DUPLICATE_DATE.replace('-', '')}_1_L2A" in used

    # what `prepare` reads: the cube opens as a vegediff cube, and prepare runs on it
    cube = open_cube(out)
    assert cube.sizes["time"] == 7 and list(cube["time"].dt.strftime("%Y-%m-%d").values) == summary["dates_fetched"]
    prepared = tmp_path / "cube.nc"
    assert cli("prepare", "--input", out, "--output", prepared).code == 0
    assert prepared.exists()
    assert not list(out.parent.glob(".s2_raw.nc.parts*")), "parts folder must go once the output is complete"


def test_rerun_is_up_to_date_and_later_run_reads_only_new_dates(cli, served_29snd: Served, tmp_path: Path):
    out = tmp_path / "s2_raw.nc"
    assert cli(*fetch_args(served_29snd, out, end="2021-08-20")).code == 0  # 3 dates
    first = out.stat().st_mtime_ns
    served_29snd.server.reset_log()
    again = cli(*fetch_args(served_29snd, out, "--json", end="2021-08-20"))
    assert again.code == 0 and json.loads(again.out)["up_to_date"] is True
    assert cog_requests(served_29snd.server) == [] and out.stat().st_mtime_ns == first

    served_29snd.server.reset_log()  # cron: a later end date adds acquisitions
    later = cli(*fetch_args(served_29snd, out, "--json"))
    summary = json.loads(later.out)
    assert later.code == 0, later
    assert summary["dates_reused"] == ["2021-06-28", "2021-07-28", "2021-08-17"]
    assert summary["dates_fetched"] == ["2021-08-22", "2021-09-11", "2021-09-16", "2021-10-06"]
    read = {r.path.split("?")[0].split("/")[-2] for r in cog_requests(served_29snd.server)}
    assert read and all(date_of(i) > "2021-08-20" for i in read), read
    with xr.open_dataset(out) as cube:
        assert assert_matches_source(cube, served_29snd.built) > 0


def test_dry_run_lists_items_and_reads_no_pixels(cli, served_29snd: Served, tmp_path: Path):
    out = tmp_path / "s2_raw.nc"
    result = cli(*fetch_args(served_29snd, out, "--dry-run", "--json"))
    assert result.code == 0, result
    summary = json.loads(result.out)
    assert summary["dry_run"] is True and summary["items_found"] == 10
    offsets = {i["id"]: i["dn_offset"] for a in summary["acquisitions"] for i in a["items"]}
    assert sorted(offsets) == sorted(served_29snd.built.kept_ids)
    assert sorted(k for k, v in offsets.items() if v == 1000) == sorted(
        i for i in served_29snd.built.kept_ids if date_of(i) in BASELINE4_DATES)
    assert cog_requests(served_29snd.server) == [] and not out.exists()

    text = cli(*fetch_args(served_29snd, out, "--dry-run"))
    assert text.code == 0 and "7 dates, 3 duplicates dropped" in text.out
    assert sum(line.startswith("2021-") for line in text.out.splitlines()) == 7


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_search_follows_next_links(served_29snd: Served, method: str):
    from datetime import date

    from vegediff_cli.sources.area import fetch_area
    from vegediff_cli.sources.stac import resolve_provider, search_scenes

    provider = resolve_provider("earth-search", url=served_29snd.url)
    scenes = search_scenes(provider, fetch_area(tile="29SND"), start=date(2021, 6, 1), end=date(2021, 10, 31),
                           page_size=3, method=method)
    assert sorted(s.id for s in scenes) == sorted(served_29snd.built.kept_ids + served_29snd.built.dropped_ids)
    pages = served_29snd.server.requests("/search", method=method)
    assert len(pages) == 4  # 10 items, 3 per page
    assert all(s.tile == "29SND" for s in scenes)


def test_max_cloud_filters_items(cli, served_29snd: Served, tmp_path: Path):
    result = cli(*fetch_args(served_29snd, tmp_path / "s2_raw.nc", "--dry-run", "--json", "--max-cloud", "0.1"))
    summary = json.loads(result.out)
    clouds = [i["cloud_cover"] for a in summary["acquisitions"] for i in a["items"]]
    assert result.code == 0 and clouds and max(clouds) <= 0.1 and len(clouds) < 7


def test_bbox_fetch_snaps_to_the_tile_lattice(cli, served_29snd: Served, tmp_path: Path):
    """--bbox without --tile: the grid of the tile under the box, snapped outward to its 20 m pixels."""
    from rasterio.warp import transform_bounds

    truth = served_29snd.built.truth[0]
    h, w = truth.dn["B02"].shape
    left, top = truth.transform.c, truth.transform.f
    west, south, east, north = transform_bounds("EPSG:32629", "EPSG:4326", left + 5, top - 20 * h + 5,
                                                left + 20 * w - 5, top - 5)
    out = tmp_path / "bbox.nc"
    result = cli("fetch", "--bbox", f"{west},{south},{east},{north}", "--start", "2021-06-28", "--end", "2021-06-28",
                 "--stac-url", served_29snd.url, "--provider", "earth-search", "--output", out, "--json", *FAST)
    assert result.code == 0, result
    with xr.open_dataset(out, decode_coords="all") as cube:
        assert cube.rio.crs.to_epsg() == 32629 and cube.sizes["time"] == 1
        assert (cube["x"].values - 10) % 20 == pytest.approx(0)  # on the Sentinel-2 lattice
        assert cube.sizes["x"] >= w and cube.sizes["y"] >= h
        assert assert_matches_source(cube, served_29snd.built, dates=["2021-06-28"]) == 4 * h * w


def test_earth_search_item_with_real_cogs(cli, tmp_path: Path, shared_data: Path):
    """The real Earth Search item of 29RKH and its 5 real COGs (B02 at 100 m, B8A/SCL at 200 m here)."""
    import rasterio

    cogs = shared_data / "stac" / "earth-search-v0-29RKH"
    with StacServer() as server:
        server.catalogue = build_29rkh(server.url)
        out = tmp_path / "29RKH.nc"
        result = cli("fetch", "--tile", "29RKH", "--window", "0,0,250,200", "--start", "2020-02-19",
                     "--end", "2020-02-19", "--stac-url", server.url, "--output", out, "--json", *FAST)
        assert result.code == 0, result
        assert json.loads(result.out)["acquisitions"][0]["items"][0]["dn_offset"] == 0  # baseline 02.14
    with xr.open_dataset(out) as cube:
        for band, factor in (("B02", 5), ("B03", 5), ("B04", 5), ("B8A", 10)):
            with rasterio.open(cogs / f"{band}.tif") as src:
                dn = src.read(1)[: 200 // factor, : 250 // factor].astype(float)
            expected = np.repeat(np.repeat(dn, factor, 0), factor, 1)  # 20 m pixels nested in the coarse ones
            expected[expected == 0] = np.nan
            np.testing.assert_array_equal(cube[f"s2_{band}"].values[0], expected * 1e-4, err_msg=band)
        with rasterio.open(cogs / "SCL.tif") as src:
            scl = np.repeat(np.repeat(src.read(1)[:20, :25], 10, 0), 10, 1)
        assert np.array_equal(np.nan_to_num(cube["s2_SCL"].values[0], nan=0), scl)


def test_planetary_computer_profile_signs_hrefs(cli, snd_cog_folder: Path, tmp_path: Path):
    """PC-style items (B02..SCL, s2:mgrs_tile) on path-style blob URLs that need a SAS token."""
    with StacServer() as server:
        built = build_29snd(snd_cog_folder, server.url, pc_style=True, blob=("sentinel2l2a01", "sentinel2-l2"))
        server.catalogue = built.catalogue
        served = Served(server, built)
        out = tmp_path / "pc.nc"
        args = ["fetch", "--tile", "29SND", "--window", window_29snd(served), "--start", "2021-07-28",
                "--end", "2021-08-17", "--stac-url", server.url, "--output", out, *FAST]
        result = cli(*args, "--provider", "planetary-computer", "--sas-url", f"{server.url}/api/sas/v1/token")
        assert result.code == 0, result
        assert server.requests("/api/sas/v1/token/sentinel2l2a01/sentinel2-l2")
        cog_reads = cog_requests(server)
        assert cog_reads and all("sig=loopback" in r.path for r in cog_reads)
        assert server.requests("/search", method="POST")[0].status == 200
        with xr.open_dataset(out) as cube:
            assert assert_matches_source(cube, built, dates=["2021-07-28", "2021-08-17"]) > 0

        unsigned = cli(*args, "--provider", "custom", "--output", tmp_path / "unsigned.nc")
        assert unsigned.code == 8, unsigned
        assert "HTTP 403" in unsigned.err and "sig=" not in unsigned.err


def test_bbox_alone_uses_the_items_native_tile_across_a_utm_zone_boundary():
    """Issue 11: a --bbox whose centre lies in zone 33 but whose granules are 34VCL's must be read on
    34VCL's grid (EPSG:32634, no resampling) and named 34VCL, not 33V?? (its centre's square)."""
    from datetime import UTC, datetime

    from vegediff_cli.pipeline.fetch.run import native_area
    from vegediff_cli.sources.area import fetch_area, tile_at
    from vegediff_cli.sources.stac import SceneItem

    box = (17.80, 60.35, 17.95, 60.45)  # just west of 18 E, the zone 33 / 34 boundary
    area = fetch_area(bbox=box)
    assert area.tile == tile_at(17.875, 60.4) and area.tile.startswith("33")

    def granule(tile: str, bbox: tuple[float, float, float, float]) -> SceneItem:
        when = datetime(2024, 6, 1, 10, tzinfo=UTC)
        return SceneItem(id=f"S2A_{tile}_20240601_0_L2A", datetime=when, tile=tile, platform="sentinel-2a",
                         baseline="05.10", processed=when, cloud_cover=1.0, hrefs={}, boa_offset_applied=False,
                         bbox=bbox, geometry={})

    scenes = [granule("34VCL", (17.3, 59.9, 19.4, 61.0)), granule("34VCL", (17.3, 59.9, 19.4, 61.0))]
    native = native_area(area, scenes)
    assert native.tile == "34VCL" and native.grid.crs == "EPSG:32634" and not native.query_tile
    assert (native.grid.transform.c % 20, native.grid.transform.f % 20) == (0, 0)  # 34VCL's lattice
    # the bbox is covered whole: snapped outward, not clipped to the tile
    from rasterio.warp import transform_bounds

    west, south, east, north = transform_bounds(native.grid.crs, "EPSG:4326", *native.grid.bounds)
    assert west <= box[0] and south <= box[1] and east >= box[2] and north >= box[3]
    # granules of the centre's own tile covering more of the box keep that tile
    assert native_area(area, [*scenes, granule(area.tile, box), granule(area.tile, box), granule(area.tile, box)]
                       ).tile == area.tile
