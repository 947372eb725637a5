"""Build the catalogues the loopback STAC server serves, from the real data in ../shared/data.

- 29SND (Portugal, 2021): the 7 real Sentinel-2 L2A scenes in ``geotiff/gee_s2_29SND_2021_sr``
  (31-band uint16 GeoTIFFs, DN = reflectance x 1e4, processing baseline < 04.00) are split into
  per-band COGs (rio-cogeo) with Earth-Search-v1-style items modelled on the real Earth Search
  item in ``stac/earth-search-v0-29RKH``. Two extra kinds of items prove the harmonisation:

  * a *baseline 04.00* copy of some acquisitions, DN + 1000 where there is data, newer
    processing: fetch must keep it (dedup) and subtract the offset once;
  * an *older processing* of one acquisition with wrong (halved) DN: fetch must drop it.

- 29RKH: the real Earth Search item and its 5 real COGs, hrefs pointed at the server.
- 35MNM: the real Planetary Computer FeatureCollection and collection document.

Expected arrays (the source DN) are returned with each catalogue so tests compare pixel for pixel.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.io import MemoryFile
from rasterio.warp import transform_geom
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

from vegediff_cli.geo import tile_grid

from .stac_server import Catalogue, StacServer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCENES_DIR = SHARED / "geotiff" / "gee_s2_29SND_2021_sr"
ES_ITEM = SHARED / "stac" / "earth-search-v0-29RKH" / "S2A_29RKH_20200219_0_L2A.json"
ES_COGS = SHARED / "stac" / "earth-search-v0-29RKH"
PC_ITEMS = SHARED / "stac" / "items" / "site2-2020_jun_jul-35MNM.geojson"
PC_COLLECTION = SHARED / "stac" / "items" / "sentinel-2-l2a.collection.json"

# Earth Search v1 asset key -> (file name, band description in the GEE scenes)
ES_ASSETS = {"blue": ("B02", "B2"), "green": ("B03", "B3"), "red": ("B04", "B4"), "nir08": ("B8A", "B8A"),
             "scl": ("SCL", "SCL")}
PC_KEYS = {"blue": "B02", "green": "B03", "red": "B04", "nir08": "B8A", "scl": "SCL"}
BASELINE4_DATES = ("2021-07-28", "2021-09-11")  # also served as baseline 04.00 (DN + 1000)
STALE_DUPLICATE_DATE = "2021-08-17"  # also served as an older processing with wrong values
ACQUISITION_TIME = "T11:21:19.024000Z"


@dataclass
class SceneTruth:
    """The source pixels of one acquisition, as fetch must reproduce them."""

    date: str
    transform: rasterio.Affine
    dn: dict[str, np.ndarray]  # "B02".."B8A" uint16 DN (x1e4), "SCL" uint8


@dataclass
class Built:
    catalogue: Catalogue
    truth: list[SceneTruth] = field(default_factory=list)
    kept_ids: list[str] = field(default_factory=list)  # items fetch must use, one per date
    dropped_ids: list[str] = field(default_factory=list)  # duplicates it must drop


def read_scene(path: Path) -> SceneTruth:
    with rasterio.open(path) as src:
        names = list(src.descriptions)
        dn = {band: src.read(names.index(desc) + 1) for band, desc in ES_ASSETS.values()}
        transform = src.transform
    dn["SCL"] = dn["SCL"].astype("uint8")
    return SceneTruth(date=path.name.split("_")[1], transform=transform, dn=dn)


def write_cog(array: np.ndarray, transform: rasterio.Affine, crs: str, path: Path) -> None:
    """A real COG (rio-cogeo, deflate, 256 px tiles) with nodata 0, like Earth Search's."""
    if path.exists():  # COGs are deterministic: a session builds them once
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": array.shape[1], "height": array.shape[0], "count": 1,
               "dtype": array.dtype.name, "crs": crs, "transform": transform, "nodata": 0}
    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(array, 1)
        with mem.open() as src:
            cog_translate(src, str(path), {**cog_profiles.get("deflate"), "blockxsize": 256, "blockysize": 256},
                          nodata=0, quiet=True, overview_resampling="nearest")


def _footprint(transform: rasterio.Affine, shape: tuple[int, int], crs: str) -> dict[str, Any]:
    h, w = shape
    left, top = transform.c, transform.f
    right, bottom = left + w * transform.a, top + h * transform.e
    ring = [[left, top], [right, top], [right, bottom], [left, bottom], [left, top]]
    return transform_geom(crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})


def es_item(*, item_id: str, date: str, tile: str, baseline: str, generated: datetime, hrefs: dict[str, str],
            transform: rasterio.Affine, shape: tuple[int, int], crs: str, cloud: float,
            boa_offset_applied: bool = False) -> dict[str, Any]:
    """An Earth Search v1 ``sentinel-2-l2a`` item, built on the real 29RKH item as template."""
    item = json.loads(ES_ITEM.read_text())
    geometry = _footprint(transform, shape, crs)
    xs = [p[0] for p in geometry["coordinates"][0]]
    ys = [p[1] for p in geometry["coordinates"][0]]
    props = item["properties"]
    epsg = int(crs.split(":")[1])
    props.update({
        "datetime": f"{date}{ACQUISITION_TIME}",
        "created": generated.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "updated": generated.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "platform": "sentinel-2a",
        "eo:cloud_cover": cloud,
        "proj:epsg": epsg,
        "mgrs:utm_zone": int(tile[:2]),
        "mgrs:latitude_band": tile[2],
        "mgrs:grid_square": tile[3:],
        "grid:code": f"MGRS-{tile}",
        "s2:processing_baseline": baseline,
        "s2:generation_time": generated.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
        "s2:product_uri": f"S2A_MSIL2A_{date.replace('-', '')}T112119_N{baseline.replace('.', '')}_R080_T{tile}_"
                          f"{generated.strftime('%Y%m%dT%H%M%S')}.SAFE",
        "earthsearch:boa_offset_applied": boa_offset_applied,
    })
    item.update({"id": item_id, "geometry": geometry, "bbox": [min(xs), min(ys), max(xs), max(ys)],
                 "collection": "sentinel-2-l2a"})
    item["links"] = [link for link in item["links"] if link["rel"] in ("license",)]
    template = item["assets"]
    assets = {}
    for key, href in hrefs.items():
        asset = copy.deepcopy(template[key])
        asset.update({"href": href, "proj:shape": list(shape), "gsd": abs(transform.a),
                      "proj:transform": [transform.a, 0, transform.c, 0, transform.e, transform.f]})
        if baseline >= "04.00" and key != "scl" and not boa_offset_applied:
            asset["raster:bands"][0]["offset"] = -0.1  # what Earth Search v1 publishes for 04.00
        assets[key] = asset
    item["assets"] = assets
    return item


def _cloud_cover(scl: np.ndarray) -> float:
    data = scl > 0
    return round(float(np.isin(scl, (8, 9, 10)).sum() / max(data.sum(), 1) * 100), 4)


def build_29snd(folder: Path, base_url: str, *, tag: str = "", pc_style: bool = False,
                blob: tuple[str, str] | None = None) -> Built:
    """Per-band COGs of the 29SND scenes under `folder` (kept if present), and items pointing at them.

    `tag` is a path prefix that makes the URLs unique (GDAL caches by URL for the life of a
    process); `pc_style` gives Planetary-Computer asset keys (B02..SCL) and ``s2:mgrs_tile``;
    `blob` = (account, container) serves them path-style, as signed Azure blob URLs.
    """
    built = Built(catalogue=Catalogue(collections=[_collection("sentinel-2-l2a")], items=[], files=folder))
    if blob is not None:
        built.catalogue.blobs[blob] = folder
    root = f"{base_url}/{blob[0]}/{blob[1]}" if blob is not None else f"{base_url}/files"
    crs = "EPSG:32629"
    for path in sorted(SCENES_DIR.glob("*.tif")):
        truth = read_scene(path)
        built.truth.append(truth)
        day = truth.date.replace("-", "")
        shape = truth.dn["B02"].shape
        acquired = datetime.fromisoformat(truth.date) + timedelta(hours=11)
        variants = [("0", "03.00", acquired + timedelta(hours=3), 0, 1)]  # (seq, baseline, generated, +DN, DN divisor)
        if truth.date in BASELINE4_DATES:
            variants.append(("1", "04.00", acquired + timedelta(days=700), 1000, 1))
        if truth.date == STALE_DUPLICATE_DATE:
            variants = [("0", "03.00", acquired + timedelta(hours=3), 0, 2), ("1", "03.00", acquired + timedelta(days=3), 0, 1)]
        newest = max(variants, key=lambda v: (v[1], v[2]))
        for seq, baseline, generated, add, divisor in variants:
            item_id = f"S2A_29SND_{day}_{seq}_L2A"
            hrefs = {}
            for key, (band, _) in ES_ASSETS.items():
                values = truth.dn[band]
                if band != "SCL":
                    values = np.where(values > 0, values // divisor + add, 0).astype("uint16")
                relative = f"{tag}sentinel-s2-l2a-cogs/29/S/ND/{truth.date[:4]}/{int(truth.date[5:7])}/{item_id}/{band}.tif"
                write_cog(values, truth.transform, crs, folder / relative)
                hrefs[key] = f"{root}/{relative}"
            item = es_item(item_id=item_id, date=truth.date, tile="29SND", baseline=baseline, generated=generated,
                           hrefs=hrefs, transform=truth.transform, shape=shape, crs=crs,
                           cloud=_cloud_cover(truth.dn["SCL"]))
            if pc_style:
                item = to_pc_style(item)
            built.catalogue.items.append(item)
            (built.kept_ids if (seq, baseline, generated) == newest[:3] else built.dropped_ids).append(item_id)
    return built


def to_pc_style(item: dict[str, Any]) -> dict[str, Any]:
    """The same item as the Planetary Computer publishes it: B02..SCL keys, s2:mgrs_tile."""
    out = copy.deepcopy(item)
    out["assets"] = {PC_KEYS[k]: v for k, v in item["assets"].items()}
    props = out["properties"]
    props["s2:mgrs_tile"] = props.pop("grid:code").removeprefix("MGRS-")
    for key in ("mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square", "earthsearch:boa_offset_applied"):
        props.pop(key, None)
    return out


def build_29rkh(base_url: str) -> Catalogue:
    """The real Earth Search item of 29RKH (2020-02-19) with its 5 real COGs served from ../shared/data."""
    item = json.loads(ES_ITEM.read_text())
    keep = {"blue": "B02", "green": "B03", "red": "B04", "nir08": "B8A", "scl": "SCL"}
    item["assets"] = {k: {**v, "href": f"{base_url}/files/{keep[k]}.tif"} for k, v in item["assets"].items() if k in keep}
    return Catalogue(collections=[_collection("sentinel-2-l2a")], items=[item], files=ES_COGS)


def build_35mnm() -> Catalogue:
    """The real Planetary Computer items (13 acquisitions of 35MNM) and collection document."""
    features = json.loads(PC_ITEMS.read_text())["features"]
    collection = json.loads(PC_COLLECTION.read_text())
    return Catalogue(collections=[collection], items=features)


def _collection(collection_id: str) -> dict[str, Any]:
    return {
        "type": "Collection", "stac_version": "1.0.0", "id": collection_id,
        "title": "Sentinel-2 Level-2A (loopback)", "description": "Sentinel-2 L2A served for vegediff tests",
        "license": "proprietary", "links": [],
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                   "temporal": {"interval": [["2015-06-27T10:25:31.456000Z", None]]}},
    }


# --- pytest fixtures (bind them in a test module: `served_29snd = fixtures_stac.served_29snd`) -
@dataclass
class Served:
    server: StacServer
    built: Built

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def snd_cog_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the 29SND per-band COGs, written once per session (test modules share it)."""
    if not SCENES_DIR.exists():
        _missing(SCENES_DIR)
    folder = tmp_path_factory.getbasetemp() / "cogs29snd"
    folder.mkdir(exist_ok=True)
    build_29snd(folder, "http://unused")
    return folder


@pytest.fixture
def served_29snd(snd_cog_folder: Path) -> Iterator[Served]:
    """A loopback STAC API serving the 29SND catalogue (Earth Search v1 style)."""
    with StacServer() as server:
        built = build_29snd(snd_cog_folder, server.url)
        server.catalogue = built.catalogue
        yield Served(server, built)


def _missing(path: Path) -> None:
    message = f"real data not found at {path}"
    if os.environ.get("VEGEDIFF_REQUIRE_SHARED_DATA") == "1":
        pytest.fail(message + " (VEGEDIFF_REQUIRE_SHARED_DATA=1)")
    pytest.skip(message)


# --- comparing a fetched cube with the source scenes ---------------------------------------
def tile_window(built: Built, grid_transform: rasterio.Affine) -> tuple[int, int, int, int]:
    """(col, row, width, height) on a 20 m grid covering every scene of `built`."""
    cols, rows, ends_c, ends_r = [], [], [], []
    for truth in built.truth:
        h, w = truth.dn["B02"].shape
        col = round((truth.transform.c - grid_transform.c) / 20)
        row = round((grid_transform.f - truth.transform.f) / 20)
        cols.append(col)
        rows.append(row)
        ends_c.append(col + w)
        ends_r.append(row + h)
    return min(cols), min(rows), max(ends_c) - min(cols), max(ends_r) - min(rows)


def assert_matches_source(cube: Any, built: Built, *, dates: list[str] | None = None) -> int:
    """Every pixel of every fetched date equals the source DN / 10000 (NaN where no data); returns pixels checked."""
    import pandas as pd

    x0, y0 = float(cube["x"][0]) - 10, float(cube["y"][0]) + 10
    times = [pd.Timestamp(t).strftime("%Y-%m-%d") for t in cube["time"].values]
    checked = 0
    for truth in built.truth:
        if dates is not None and truth.date not in dates:
            continue
        assert truth.date in times, (truth.date, times)
        t = times.index(truth.date)
        col = round((truth.transform.c - x0) / 20)
        row = round((y0 - truth.transform.f) / 20)
        h, w = truth.dn["B02"].shape
        for band in ("B02", "B03", "B04", "B8A"):
            full = cube[f"s2_{band}"].values[t]
            got = full[row : row + h, col : col + w]
            dn = truth.dn[band]
            assert got.shape == dn.shape
            assert np.array_equal(np.isnan(got), dn == 0), (truth.date, band)
            assert np.array_equal(np.round(got[dn > 0] * 1e4).astype(int), dn[dn > 0].astype(int)), (truth.date, band)
            outside = np.ones(full.shape, bool)
            outside[row : row + h, col : col + w] = False
            assert np.isnan(full[outside]).all(), (truth.date, band, "data outside the scene")
            checked += dn.size
        scl = np.nan_to_num(cube["s2_SCL"].values[t][row : row + h, col : col + w], nan=0).astype(int)
        assert np.array_equal(scl, truth.dn["SCL"].astype(int)), truth.date
    return checked


# --- command lines and request logs shared by the fetch tests ------------------------------
FAST = ("--timeout", "2", "--backoff", "0.05", "--retries", "3", "--workers", "4")  # short waits for tests


def window_29snd(served: Served) -> str:
    return ",".join(map(str, tile_window(served.built, tile_grid("29SND").transform)))


def fetch_args(served: Served, out: Path, *extra: str, start: str = "2021-06-01", end: str = "2021-10-31") -> list[str]:
    return ["fetch", "--tile", "29SND", "--window", window_29snd(served), "--start", start, "--end", end,
            "--provider", "earth-search", "--stac-url", served.url, "--output", str(out), *FAST, *extra]


def date_of(item_id: str) -> str:
    day = item_id.split("_")[2]
    return f"{day[:4]}-{day[4:6]}-{day[6:]}"


def cog_requests(server: StacServer) -> list:
    return [r for r in server.log if r.path.split("?")[0].endswith(".tif")]
