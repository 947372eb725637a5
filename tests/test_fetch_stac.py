"""Fetch metadata on real STAC documents: provider profiles, asset keys, baselines, duplicates,
same-day grouping, search areas, retry policy and Planetary Computer signing."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pystac
import pytest
import xarray as xr

from vegediff_cli.errors import MissingVariableError, UsageError
from vegediff_cli.geo import tile_grid
from vegediff_cli.sources.area import fetch_area
from vegediff_cli.sources.http import RetryPolicy, retry_after_seconds
from vegediff_cli.sources.sentinel2 import dn_offset
from vegediff_cli.sources.signing import SasSigner, blob_container
from vegediff_cli.sources.stac import (
    drop_duplicates,
    group_acquisitions,
    resolve_provider,
    scene_item,
    search_scenes,
)

from .fixtures_stac import (
    PC_COLLECTION,
    PC_ITEMS,
    SHARED,
    assert_matches_source,
    build_35mnm,
    es_item,
    read_scene,
    write_cog,
)
from .stac_server import Catalogue, StacServer

pytestmark = pytest.mark.filterwarnings("ignore:The 'shapely.ops.transform:DeprecationWarning")
ES_ITEM = SHARED / "stac" / "earth-search-v0-29RKH" / "S2A_29RKH_20200219_0_L2A.json"
PC_06VVN = SHARED / "stac" / "items" / "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"


@pytest.fixture(scope="module")
def pc_features(shared_data: Path) -> list[dict]:
    return json.loads(PC_ITEMS.read_text())["features"]


def test_planetary_computer_items_map_to_bands(pc_features):
    scenes = [scene_item(pystac.Item.from_dict(f)) for f in pc_features]
    assert len(scenes) == 13
    for feature, scene in zip(pc_features, scenes, strict=True):
        assert scene.hrefs == {b: feature["assets"][b]["href"] for b in ("B02", "B03", "B04", "B8A", "SCL")}
        assert scene.tile == "35MNM" and scene.baseline == "02.12" and dn_offset(scene) == 0
        assert scene.platform in ("sentinel-2a", "sentinel-2b")
    assert scenes[0].hrefs["B8A"].endswith("B8A_20m.tif") and scenes[0].hrefs["SCL"].endswith("SCL_20m.tif")
    kept, dropped = drop_duplicates(scenes)
    assert dropped == [] and len(group_acquisitions(kept)) == 13


def test_earth_search_item_maps_to_bands(shared_data: Path):
    doc = json.loads(ES_ITEM.read_text())
    scene = scene_item(pystac.Item.from_dict(doc))
    assert scene.tile == "29RKH" and scene.baseline == "02.14" and not scene.boa_offset_applied
    assert scene.hrefs["B02"] == doc["assets"]["blue"]["href"] and scene.hrefs["B8A"] == doc["assets"]["nir08"]["href"]
    assert scene.hrefs["SCL"].endswith("/SCL.tif") and dn_offset(scene) == 0


@pytest.mark.parametrize(("baseline", "applied", "offset"), [
    ("02.14", False, 0), ("03.01", False, 0), ("04.00", False, 1000), ("05.11", False, 1000), ("04.00", True, 0),
])
def test_offset_follows_the_processing_baseline_not_the_date(shared_data: Path, baseline, applied, offset):
    doc = json.loads(ES_ITEM.read_text())  # acquired 2020, i.e. before 04.00 existed: the date must not matter
    doc["properties"].update({"s2:processing_baseline": baseline, "earthsearch:boa_offset_applied": applied})
    assert dn_offset(scene_item(pystac.Item.from_dict(doc))) == offset


def test_baseline_falls_back_to_the_product_name_and_is_never_guessed(pc_features):
    doc = copy.deepcopy(pc_features[0])
    del doc["properties"]["s2:processing_baseline"]
    doc["properties"]["s2:product_uri"] = "S2A_MSIL2A_20200731T080611_N0400_R078_T35MNM_20220818T062751.SAFE"
    assert scene_item(pystac.Item.from_dict(doc)).baseline == "04.00"
    for key in ("s2:product_uri", "s2:granule_id", "s2:datatake_id"):
        doc["properties"].pop(key, None)
    with pytest.raises(MissingVariableError, match="s2:processing_baseline"):
        scene_item(pystac.Item.from_dict(doc))


def test_item_without_a_band_is_an_error(pc_features):
    doc = copy.deepcopy(pc_features[0])
    del doc["assets"]["B8A"]
    with pytest.raises(MissingVariableError, match="B8A"):
        scene_item(pystac.Item.from_dict(doc))


def test_duplicates_keep_the_newest_processing(pc_features):
    base = pc_features[0]

    def variant(suffix: str, baseline: str, generated: str) -> pystac.Item:
        doc = copy.deepcopy(base)
        doc["id"] = base["id"] + suffix
        doc["properties"].update({"s2:processing_baseline": baseline, "s2:generation_time": generated})
        return pystac.Item.from_dict(doc)

    scenes = [scene_item(variant("_a", "02.12", "2020-08-18T06:27:51Z")),
              scene_item(variant("_b", "04.00", "2022-03-01T00:00:00Z")),
              scene_item(variant("_c", "04.00", "2023-05-01T00:00:00Z")),
              scene_item(variant("_d", "03.00", "2024-01-01T00:00:00Z"))]
    kept, dropped = drop_duplicates(scenes)
    assert [s.id for s in kept] == [base["id"] + "_c"]
    assert sorted(s.id for s in dropped) == sorted(base["id"] + x for x in ("_a", "_b", "_d"))


def test_granules_group_by_solar_day(pc_features):
    doc = copy.deepcopy(pc_features[0])
    other = copy.deepcopy(doc)
    other["id"] += "_other_datastrip"
    other["properties"]["datetime"] = "2020-07-31T08:06:31.024000Z"  # 20 s later: another granule, same day
    far_east = copy.deepcopy(doc)
    far_east["id"] = "far_east"
    far_east["properties"]["datetime"] = "2020-07-31T23:30:00Z"
    far_east["bbox"] = [170.0, -8.2, 171.0, -7.2]  # UTC 23:30 is the next morning at 170 E
    scenes = [scene_item(pystac.Item.from_dict(d)) for d in (doc, other, far_east)]
    kept, dropped = drop_duplicates(scenes)
    assert dropped == []
    groups = group_acquisitions(kept)
    assert [(g.key, len(g.items)) for g in groups] == [("2020-07-31", 2), ("2020-08-01", 1)]


def test_provider_profiles():
    es = resolve_provider(None)
    assert es.name == "earth-search" and es.url.endswith("/v1") and es.tile_property == "grid:code"
    pc = resolve_provider("planetary-computer")
    assert pc.signed and pc.tile_property == "s2:mgrs_tile" and pc.url.endswith("/api/stac/v1")
    custom = resolve_provider(None, url="https://example.org/stac/", collection="s2")
    assert (custom.name, custom.url, custom.collection, custom.query_extension) == ("custom", "https://example.org/stac", "s2", False)
    assert resolve_provider("planetary-computer", url="http://127.0.0.1:9/").url == "http://127.0.0.1:9"
    for bad in (("custom", None), ("mystery", None), (None, "ftp://example.org")):
        with pytest.raises(UsageError):
            resolve_provider(bad[0], url=bad[1])


def test_planetary_computer_search_queries_the_tile(shared_data: Path):
    """Real PC items and the real PC collection document, searched with the PC profile."""
    catalogue = build_35mnm()
    catalogue.items.append(json.loads(PC_06VVN.read_text()))  # another tile: the query must leave it out
    with StacServer(catalogue, page_size=5) as server:
        provider = resolve_provider("planetary-computer", url=server.url)
        scenes = search_scenes(provider, fetch_area(tile="35MNM"), start=date(2019, 6, 1), end=date(2020, 8, 1),
                               page_size=5)
        assert sorted(s.id for s in scenes) == sorted(f["id"] for f in json.loads(PC_ITEMS.read_text())["features"])
        assert len(server.requests("^/search")) == 3  # 13 items, 5 per page
        assert server.requests(r"^/collections/sentinel-2-l2a$")[0].status == 200
        assert json.loads(PC_COLLECTION.read_text())["id"] == provider.collection


def test_fetch_area_snaps_bbox_to_the_tile_grid():
    tile = tile_grid("29SND")
    area = fetch_area(tile="29SND", bbox="-8.57,39.28,-8.54,39.30")
    g = area.grid
    assert g.crs == tile.crs and g.transform.a == 20 and area.query_tile
    assert (g.transform.c - tile.transform.c) % 20 == 0 and (tile.transform.f - g.transform.f) % 20 == 0
    assert fetch_area(tile="29SND", window=(10, 20, 30, 40)).grid.bounds[0] == tile.transform.c + 200
    only_bbox = fetch_area(bbox="-8.57,39.28,-8.54,39.30")
    assert only_bbox.tile == "29SND" and not only_bbox.query_tile and only_bbox.grid == g
    with pytest.raises(UsageError, match="do not overlap"):
        fetch_area(tile="29SND", bbox="10,50,10.1,50.1")
    with pytest.raises(UsageError, match="`window` needs `tile`"):
        fetch_area(window=(0, 0, 10, 10))
    with pytest.raises(UsageError, match="only one"):
        fetch_area(tile="29SND", bbox="-8.57,39.28,-8.54,39.30", window=(0, 0, 10, 10))
    with pytest.raises(UsageError, match="outside"):
        fetch_area(tile="29SND", window=(5480, 0, 20, 20))
    with pytest.raises(UsageError, match="spans"):
        fetch_area(bbox="-10,38,-6,41")


def test_retry_policy_waits():
    policy = RetryPolicy(backoff=1.0, max_wait=10.0)
    assert 0.8 <= policy.wait(1) <= 1.2 and 3.2 <= policy.wait(3) <= 4.8 and policy.wait(10) == 10.0
    assert policy.wait(1, retry_after=2.5) == 2.5 and policy.wait(1, retry_after=3600) == 10.0
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds(None) is None
    soon = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 25 <= retry_after_seconds(soon) <= 31
    options = RetryPolicy(timeout=7, connect_timeout=3).gdal_options()
    assert options["GDAL_HTTP_LOW_SPEED_TIME"] == "7" and options["GDAL_HTTP_CONNECTTIMEOUT"] == "3"
    assert options["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR" and ".tif" in options["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"]


def test_sas_signing_against_a_token_endpoint():
    assert blob_container("https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/35/M/NM/x.tif") == (
        "sentinel2l2a01", "sentinel2-l2")
    assert blob_container("http://127.0.0.1:10000/acct/cont/a/b.tif") == ("acct", "cont")
    assert blob_container("https://example.org/acct/cont/a.tif") is None
    with StacServer(Catalogue([], [])) as server:
        sign = SasSigner(f"{server.url}/api/sas/v1/token", policy=RetryPolicy(backoff=0.01))
        blob = "https://acct.blob.core.windows.net/cont/a/B04.tif"
        first, second = sign(blob), sign(blob.replace("B04", "B8A"))
        assert first.startswith(blob + "?") and "sig=loopback1" in first and "sig=loopback1" in second
        assert server.tokens_issued == 1  # cached until it nears expiry
        sign.invalidate(blob)
        assert "sig=loopback2" in sign(blob)
        assert sign("https://example.org/a.tif") == "https://example.org/a.tif"
        assert sign(first) == first  # already signed


def test_same_day_granules_are_fused(cli, shared_data: Path, tmp_path: Path):
    """One acquisition split over two granules (two datastrips): the frame is their union."""
    truth = read_scene(next((SHARED / "geotiff" / "gee_s2_29SND_2021_sr").glob("*2021-06-28*")))
    h, w = truth.dn["B02"].shape
    halves = {"west": np.s_[:, w // 2:], "east": np.s_[:, : w // 2]}  # the part each granule lacks
    with StacServer() as server:
        items = []
        for n, (name, missing) in enumerate(halves.items()):
            hrefs = {}
            for key, band in (("blue", "B02"), ("green", "B03"), ("red", "B04"), ("nir08", "B8A"), ("scl", "SCL")):
                values = truth.dn[band].copy()
                values[missing] = 0
                write_cog(values, truth.transform, "EPSG:32629", tmp_path / "cogs" / name / f"{band}.tif")
                hrefs[key] = f"{server.url}/files/{name}/{band}.tif"
            item = es_item(item_id=f"S2A_29SND_20210628_{name}", date="2021-06-28", tile="29SND", baseline="03.01",
                           generated=datetime(2021, 6, 28, 14), hrefs=hrefs, transform=truth.transform,
                           shape=(h, w), crs="EPSG:32629", cloud=1.0)
            item["properties"]["datetime"] = f"2021-06-28T11:21:{19 + 20 * n:02d}.024000Z"
            items.append(item)
        server.catalogue = Catalogue(collections=[_collection()], items=items, files=tmp_path / "cogs")
        out = tmp_path / "fused.nc"
        window = f"{round((truth.transform.c - 499980) / 20)},{round((4400040 - truth.transform.f) / 20)},{w},{h}"
        result = cli("fetch", "--tile", "29SND", "--window", window, "--start", "2021-06-28", "--end", "2021-06-28",
                     "--stac-url", server.url, "--output", out, "--json", "--timeout", "2", "--backoff", "0.05")
        assert result.code == 0, result
        summary = json.loads(result.out)
        assert [len(a["items"]) for a in summary["acquisitions"]] == [2]
    with xr.open_dataset(out) as cube:
        built = type("B", (), {"truth": [truth]})()
        assert assert_matches_source(cube, built) == 4 * h * w


def _collection() -> dict:
    return {"type": "Collection", "stac_version": "1.0.0", "id": "sentinel-2-l2a", "description": "test",
            "license": "proprietary", "links": [],
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}}}
