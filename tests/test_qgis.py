"""QGIS projects and styles written next to the COGs: layers, relative paths, time ranges, ramps, QML files.

The XML is checked here against what QGIS 3.22 reads (element names from a project saved by
QGIS itself); scripts/check_qgis.py opens real outputs with PyQGIS (not in CI: it needs QGIS).
"""

from __future__ import annotations

import datetime as dt
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from vegediff_cli.cube.cog import write_cog
from vegediff_cli.errors import OutputError
from vegediff_cli.qgis.folder import run_title, write_folder_project
from vegediff_cli.qgis.products import parse_cog_name, product_for
from vegediff_cli.qgis.project import date_ranges
from vegediff_cli.qgis.ramps import ERROR, NDVI, PROBABILITY, SPREAD

UTC = dt.UTC
TRANSFORM = Affine(20.0, 0.0, 600000.0, 0.0, -20.0, 4400000.0)
FORECAST = ["2021-07-03", "2021-07-08", "2021-07-13"]
OBSERVED = ["2021-06-23", "2021-06-28"]


def _cog(folder: Path, name: str, value: float) -> None:
    values = np.full((16, 24), value, dtype="float32")
    values[0, 0] = np.nan
    write_cog(values, folder / name, crs="EPSG:32629", transform=TRANSFORM, description=name, tags={"DATE": name})


@pytest.fixture
def cog_folder(tmp_path: Path) -> Path:
    """A forecast-like COG folder: 3 forecast steps, 2 observed frames, 2 probabilities, an undated map."""
    folder = tmp_path / "forecast_cogs"
    folder.mkdir()
    for date in FORECAST:
        _cog(folder, f"ndvi_pred_{date}.tif", 0.5)
        _cog(folder, f"prob_ndvi_below_0.30_{date}.tif", 0.25)
        _cog(folder, f"ndvi_std_{date}.tif", 0.05)
    for date in OBSERVED:
        _cog(folder, f"observed_ndvi_{date}.tif", 0.6)
    _cog(folder, "rmse_persistence.tif", 0.1)
    (folder / ".ndvi_pred-partial.tif").write_bytes(b"")  # hidden temporaries are not layers
    return folder


def _at(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _day(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_project_lists_every_cog_once_with_relative_paths(cog_folder):
    path = write_folder_project(cog_folder, name="forecast", title="vegediff forecast 29SND")
    assert path == cog_folder / "forecast.qgs"
    root = ET.parse(path).getroot()
    assert root.tag == "qgis" and root.get("version").startswith("3.22")
    layers = {e.findtext("id"): e for e in root.iter("maplayer")}
    sources = sorted(e.findtext("datasource") for e in layers.values())
    assert sources == sorted(f"./{p.name}" for p in cog_folder.glob("[!.]*.tif"))  # 12 COGs, no temporaries
    assert len(layers) == 12
    assert root.find("properties/Paths/Absolute").text == "false"
    # the layer tree: one top group, one sub-group per product, each layer once, pointing at its map layer
    top = root.find("layer-tree-group/layer-tree-group")
    assert top.get("name") == "vegediff forecast 29SND"
    tree_ids = [leaf.get("id") for leaf in top.iter("layer-tree-layer")]
    assert sorted(tree_ids) == sorted(layers) and len(set(tree_ids)) == len(tree_ids)
    for leaf in top.iter("layer-tree-layer"):
        assert leaf.get("source") == layers[leaf.get("id")].findtext("datasource")
    assert [e.get("id") for e in root.find("layerorder")] == tree_ids
    groups = [(g.get("name"), g.get("checked"), len(g.findall("layer-tree-layer"))) for g in top.findall("layer-tree-group")]
    assert groups == [("NDVI forecast (ensemble mean)", "Qt::Checked", 3),
                      ("NDVI spread (ensemble standard deviation)", "Qt::Unchecked", 3),
                      ("P(NDVI < 0.30)", "Qt::Unchecked", 3),
                      ("RMSE per pixel: persistence", "Qt::Unchecked", 1),
                      ("Observed NDVI (clear sky)", "Qt::Checked", 2)]
    # CRS and extent of every layer, as the files have them
    for layer in layers.values():
        assert layer.findtext("srs/spatialrefsys/authid") == "EPSG:32629"
        assert "32629" in layer.findtext("srs/spatialrefsys/wkt")
        extent = [float(layer.findtext(f"extent/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        assert extent == [600000.0, 4400000.0 - 16 * 20, 600000.0 + 24 * 20, 4400000.0]
    assert root.findtext("projectCrs/spatialrefsys/authid") == "EPSG:32629"
    # the folder moves as a whole: every layer still resolves next to the project
    moved = cog_folder.parent / "elsewhere"
    shutil.move(cog_folder, moved)
    assert all((moved / source).is_file() for source in sources)


def test_time_ranges_are_the_dates(cog_folder):
    root = ET.parse(write_folder_project(cog_folder, name="forecast", title="t")).getroot()
    ranges = {}
    for layer in root.iter("maplayer"):
        temporal = layer.find("temporal")
        name = layer.findtext("datasource")[2:]
        parsed = parse_cog_name(name)
        if parsed[1] is None:
            assert temporal.get("enabled") == "0"
            continue
        assert temporal.get("enabled") == "1" and temporal.get("mode") == "0"  # fixed range
        ranges.setdefault(parsed[0], []).append((parsed[1], _at(temporal.findtext("fixedRange/start")),
                                                 _at(temporal.findtext("fixedRange/end"))))
    one = dt.timedelta(seconds=1)
    forecast = sorted(ranges["ndvi_pred"])
    assert [start - one for _, start, _ in forecast] == [_day(d) for d in FORECAST]  # each starts on its date
    assert [end + one for _, _, end in forecast] == [_day(d) for d in FORECAST[1:]] + [_day("2021-07-18")]
    assert sorted(ranges["prob_ndvi_below_0.30"]) == forecast
    observed = sorted(ranges["observed_ndvi"])
    assert [(s - one, e + one) for _, s, e in observed] == [(_day(OBSERVED[0]), _day(OBSERVED[1])),
                                                           (_day(OBSERVED[1]), _day(FORECAST[0]))]
    settings = root.find("ProjectTimeSettings")
    assert settings.get("timeStep") == "5" and settings.get("timeStepUnit") == "d"
    assert _at(settings.findtext("TemporalRange/start")) == _day(OBSERVED[0])
    assert _at(settings.findtext("TemporalRange/end")) == _day("2021-07-18")


def test_each_product_is_drawn_with_its_ramp_and_has_a_qml_style(cog_folder):
    root = ET.parse(write_folder_project(cog_folder, name="forecast", title="t")).getroot()
    expected = {"ndvi_pred": NDVI, "observed_ndvi": NDVI, "ndvi_std": SPREAD, "prob_ndvi_below_0.30": PROBABILITY,
                "rmse_persistence": ERROR}
    for layer in root.iter("maplayer"):
        product = parse_cog_name(layer.findtext("datasource")[2:])[0]
        renderer = layer.find("pipe/rasterrenderer")
        ramp = expected[product]
        assert renderer.get("type") == "singlebandpseudocolor" and renderer.get("band") == "1"
        assert float(renderer.get("classificationMin")) == ramp.minimum
        assert float(renderer.get("classificationMax")) == ramp.maximum
        items = renderer.findall("rastershader/colorrampshader/item")
        assert [(float(i.get("value")), i.get("color")) for i in items] == list(ramp.stops)
        assert renderer.findtext("minMaxOrigin/limits") == "None"  # fixed limits: dates compare like with like
    styles = sorted((cog_folder / "styles").glob("*.qml"))
    assert [p.stem for p in styles] == sorted(expected)
    for path in styles:
        style = ET.parse(path).getroot()  # valid XML
        assert style.tag == "qgis" and path.read_text().startswith("<!DOCTYPE qgis")
        shader = style.find("pipe/rasterrenderer/rastershader/colorrampshader")
        assert [i.get("color") for i in shader.findall("item")] == [c for _, c in expected[path.stem].stops]


def test_date_ranges_follow_irregular_dates():
    dates = [dt.date(2021, 7, 3), dt.date(2021, 7, 8), dt.date(2021, 7, 18)]
    ranges = date_ranges(dates, cadence_days=5)
    assert [r[0].date() for r in ranges] == dates
    assert [r[1] for r in ranges] == [dt.datetime(2021, 7, 7, 23, 59, 59, tzinfo=UTC),
                                      dt.datetime(2021, 7, 17, 23, 59, 59, tzinfo=UTC),
                                      dt.datetime(2021, 7, 22, 23, 59, 59, tzinfo=UTC)]


def test_names_and_products():
    assert parse_cog_name("prob_ndvi_drop_0.10_2021-07-03.tif") == ("prob_ndvi_drop_0.10", dt.date(2021, 7, 3))
    assert parse_cog_name("rmse_forecast.tif") == ("rmse_forecast", None)
    assert parse_cog_name("forecast.qgs") is None and parse_cog_name(".x_2021-07-03.tif") is None
    assert product_for("prob_ndvi_drop_0.10").title == "P(NDVI drops by more than 0.10)"
    assert product_for("forecast_contextformer").title == "NDVI forecast: contextformer"
    assert run_title("forecast", Path("work/29SND/forecast.nc")) == "vegediff forecast 29SND"
    assert run_title("ensemble", Path("out/site_a.nc")) == "vegediff ensemble site_a"


def test_a_folder_without_cogs_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match="no COG"):
        write_folder_project(tmp_path, name="forecast", title="t")
