"""Static layers from a STAC API: a real HTTP loopback server with range-read COGs.

The COGs hold the real Copernicus DEM and ESA WorldCover values of the 29SND GreenEarthNet
minicube (its ``cop_dem`` and ``esawc_lc``), split into two DEM tiles as the 1-degree GLO-30
tiles would be, and published as Planetary-Computer-style ``cop-dem-glo-30`` (asset ``data``)
and ``esa-worldcover`` (asset ``map``) items. Prepared on the minicube's grid, the cube must
give back the minicube's own layers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from vegediff_cli.cube.cog import write_cog
from vegediff_cli.cube.readers import open_cube
from vegediff_cli.errors import RemoteError

from .stac_server import Catalogue, Fault, StacServer
from .test_prepare import SCENE_DIR, one_line_error

DEM_NODATA = -32767.0


def _collection(collection_id: str, bbox: list[float]) -> dict:
    return {
        "type": "Collection", "stac_version": "1.0.0", "id": collection_id, "description": f"loopback {collection_id}",
        "license": "proprietary", "links": [],
        "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [["2021-01-01T00:00:00Z", None]]}},
    }


def _item(item_id: str, collection: str, asset: str, href: str, transform: Affine, shape: tuple[int, int],
          dtype: str, nodata: float, when: str) -> dict:
    height, width = shape
    left, top = transform.c, transform.f
    right, bottom = left + width * transform.a, top + height * transform.e
    ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": collection,
        "stac_extensions": ["https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                            "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
        "geometry": {"type": "Polygon", "coordinates": [ring]}, "bbox": [left, bottom, right, top],
        "properties": {"datetime": when, "proj:epsg": 4326, "proj:shape": [height, width],
                       "proj:transform": list(transform)[:6]},
        "assets": {asset: {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                           "roles": ["data"], "raster:bands": [{"data_type": dtype, "nodata": nodata}]}},
        "links": [],
    }


def static_catalogue(folder: Path, base_url: str, minicube: Path, *, with_worldcover: bool = True) -> Catalogue:
    """Two DEM COG tiles and one WorldCover COG made from the minicube's real layers."""
    cube = open_cube(minicube)
    transform = cube.rio.transform()
    dem = np.where(np.isfinite(cube["cop_dem"].values), cube["cop_dem"].values, DEM_NODATA).astype("float32")
    landcover = np.nan_to_num(cube["esawc_lc"].values, nan=0).astype("uint8")
    bbox = list(cube.rio.bounds())
    items = []
    half = dem.shape[1] // 2
    for name, cols in (("west", slice(0, half)), ("east", slice(half, None))):
        tile_transform = transform @ Affine.translation(cols.start, 0)
        path = folder / f"cop-dem/{name}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_cog(dem[:, cols], path, crs="EPSG:4326", transform=tile_transform, nodata=DEM_NODATA)
        items.append(_item(f"Copernicus_DSM_COG_10_{name}", "cop-dem-glo-30", "data", f"{base_url}/files/cop-dem/{name}.tif",
                           tile_transform, dem[:, cols].shape, "float32", DEM_NODATA, "2021-04-22T00:00:00Z"))
    collections = [_collection("cop-dem-glo-30", bbox)]
    if with_worldcover:
        path = folder / "worldcover/map.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_cog(landcover, path, crs="EPSG:4326", transform=transform, nodata=0)
        items.append(_item("ESA_WorldCover_10m_2021_v200_N39W009", "esa-worldcover", "map", f"{base_url}/files/worldcover/map.tif",
                           transform, landcover.shape, "uint8", 0, "2021-01-01T00:00:00Z"))
        collections.append(_collection("esa-worldcover", bbox))
    return Catalogue(collections=collections, items=items, files=folder)


@pytest.fixture
def server():
    with StacServer() as running:
        yield running


@pytest.fixture
def two_scenes(shared_data: Path) -> list[Path]:
    return sorted((shared_data / SCENE_DIR).glob("*.tif"))[:2]


def test_static_layers_from_stac_reproduce_the_minicube(cli, server, two_scenes, jas_cube: Path, tmp_path: Path):
    server.catalogue = static_catalogue(tmp_path / "cogs", server.url, jas_cube)
    out = tmp_path / "cube.nc"
    result = cli("prepare", "--scenes", *two_scenes, "--like", jas_cube, "--meteo-from", jas_cube,
                 "--static-stac-url", server.url, "--output", out, "--json", "--quiet")
    assert result.code == 0, result
    assert json.loads(result.out)["static_layers"] == ["cop_dem", "esawc_lc"]
    ours, theirs = open_cube(out), open_cube(jas_cube)
    np.testing.assert_allclose(ours["cop_dem"].values, theirs["cop_dem"].values, atol=1e-3)  # mosaic of 2 tiles
    np.testing.assert_array_equal(ours["esawc_lc"].values, theirs["esawc_lc"].values)
    assert "cop-dem-glo-30" not in ours.attrs["missing_static_layers"]
    assert server.url in ours.attrs["static_sources"]
    ranged = [r for r in server.requests(r"/files/.*\.tif") if r.range]
    assert ranged and all(r.status == 206 for r in ranged)  # COGs read by HTTP range requests


def test_missing_collection_is_recorded_not_fatal(cli, server, two_scenes, jas_cube: Path, tmp_path: Path):
    server.catalogue = static_catalogue(tmp_path / "cogs", server.url, jas_cube, with_worldcover=False)
    out = tmp_path / "cube.nc"
    result = cli("prepare", "--scenes", *two_scenes, "--like", jas_cube, "--static-stac-url", server.url,
                 "--output", out, "--json", "--quiet")
    assert result.code == 0, result
    summary = json.loads(result.out)
    assert summary["static_layers"] == ["cop_dem"] and "esawc_lc" in summary["missing_static_layers"]
    assert any("esa-worldcover" in note for note in summary["notes"])
    assert "esawc_lc" in open_cube(out).attrs["missing_static_layers"].split()


def test_stac_server_error_is_exit_8(cli, server, two_scenes, jas_cube: Path, tmp_path: Path):
    server.catalogue = static_catalogue(tmp_path / "cogs", server.url, jas_cube)
    server.add_fault(Fault(path=r"/search", status=500, times=None))
    out = tmp_path / "cube.nc"
    result = cli("prepare", "--scenes", *two_scenes, "--like", jas_cube, "--static-stac-url", server.url,
                 "--output", out)
    one_line_error(result, RemoteError.exit_code, out, "cop-dem-glo-30", "--dem")
