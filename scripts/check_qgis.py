"""Open vegediff's QGIS projects headless with PyQGIS and check them; render one time step to a PNG.

Not part of CI (it needs QGIS). On Debian 12 / Ubuntu:

    apt-get install -y qgis python3-qgis
    QT_QPA_PLATFORM=offscreen /usr/bin/python3 scripts/check_qgis.py            # writes docs/qgis-forecast.png

It runs the README's main job on the bundled sample with the project's vegediff (``--vegediff``,
default ``.venv/bin/vegediff``: prepare, a hindcast ensemble of 8 members from 2017-08-13,
evaluate), or checks an existing working directory (``--workdir DIR --no-run``), then for each of
forecast_cogs/forecast.qgs, ensemble_cogs/ensemble.qgs and evaluation/qgis/<cube>/evaluation.qgs:

- every layer of the project file loads and is valid, in the CRS of forecast.nc (read by GDAL);
- each layer is drawn with the colour ramp of its product (limits and end colours);
- dated layers have a fixed time range [date, next date - 1 s] whose start is the date in the
  file name and in the COG's DATE tag, the forecast layers' dates are forecast.nc's time axis as
  GDAL decodes it, and the project's time range spans them all;
- forecast.nc and ensemble.nc open as QGIS mesh layers (MDAL) whose time extent is the forecast
  period, and as rasters whose band names carry the dates;

and renders the forecast project at one forecast date (layout with title and legend) to ``--png``.
Prints one line per check; exits 1 when any fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from osgeo import gdal, osr  # noqa: E402  (PyQGIS and GDAL of the system Python)
from qgis.core import (  # noqa: E402
    Qgis,
    QgsApplication,
    QgsDateTimeRange,
    QgsInterval,
    QgsLayout,
    QgsLayoutExporter,
    QgsLayoutItemLabel,
    QgsLayoutItemLegend,
    QgsLayoutItemMap,
    QgsLayoutPoint,
    QgsLayoutSize,
    QgsMapLayerLegendUtils,
    QgsMeshLayer,
    QgsProject,
    QgsRasterLayer,
    QgsTemporalNavigationObject,
    QgsUnitTypes,
)
from qgis.PyQt.QtCore import QDateTime, QRectF, Qt  # noqa: E402
from qgis.PyQt.QtGui import QFont  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "29SND_2017_sample.nc"
TILE, START = "29SND", "2017-08-13"
DATED = re.compile(r"^(?P<product>.+)_(?P<date>\d{4}-\d{2}-\d{2})\.tif$")
# Independent of vegediff_cli/qgis/ramps.py: what a user should see, per product.
RAMPS = {  # product prefix -> (minimum, maximum, first colour, last colour)
    "ndvi": (-0.2, 1.0, "#8c510a", "#004529"),
    "spread": (0.0, 0.2, "#fcfbfd", "#3f007d"),
    "probability": (0.0, 1.0, "#ffffe5", "#662506"),
    "rmse": (0.0, 0.3, "#ffffcc", "#800026"),
}
FAILURES: list[str] = []


def check(ok: bool, what: str) -> bool:
    print(f"{'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        FAILURES.append(what)
    return ok


def ramp_of(product: str) -> str:
    if product == "ndvi_std":
        return "spread"
    if product.startswith("prob_"):
        return "probability"
    if product.startswith("rmse_"):
        return "rmse"
    return "ndvi"


def run_main_job(vegediff: str, workdir: Path) -> None:
    """The README's main job (scripts/demo.sh) with the given vegediff executable."""
    for args in (["prepare", "--input", str(SAMPLE), "--tile", TILE],
                 ["ensemble", "--tile", TILE, "--members", "8", "--start", START],
                 ["evaluate", "--tile", TILE]):
        command = [vegediff, *args, "--workdir", str(workdir), "--quiet"]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)


def netcdf_dates(path: Path, variable: str) -> tuple[list[dt.date], str, str]:
    """(dates of the time axis as GDAL decodes CF time, CRS authority id, time units) of a NetCDF variable."""
    ds = gdal.Open(f'NETCDF:"{path}":{variable}')
    meta = ds.GetMetadata()
    values = [float(v) for v in meta["NETCDF_DIM_time_VALUES"].strip("{}").split(",")]
    units = meta["time#units"]
    match = re.match(r"days since (\d{4}-\d{2}-\d{2})", units)
    epoch = dt.date.fromisoformat(match[1])
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    srs.AutoIdentifyEPSG()
    return [epoch + dt.timedelta(days=v) for v in values], f"{srs.GetAuthorityName(None)}:{srs.GetAuthorityCode(None)}", units


def qdate(value: dt.date) -> QDateTime:
    return QDateTime.fromString(f"{value:%Y-%m-%d}T00:00:00Z", Qt.ISODate)


def check_project(path: Path, *, crs: str, forecast_dates: list[dt.date], forecast_product: str) -> QgsProject:
    """Load `path` into a fresh QgsProject and check layers, CRS, ramps and time ranges."""
    print(f"--- {path}")
    xml_layers = {e.findtext("id"): e.findtext("datasource") for e in ET.parse(path).getroot().iter("maplayer")}
    project = QgsProject()
    check(project.read(str(path)), f"project reads ({len(xml_layers)} layers in the file)")
    layers = project.mapLayers()
    check(set(layers) == set(xml_layers), f"all {len(xml_layers)} layers of the file are in the project")
    check(all(src.startswith("./") for src in xml_layers.values()), "layer paths are relative to the project")
    by_product: dict[str, list[tuple[dt.date, QgsRasterLayer]]] = {}
    bad_valid, bad_crs, bad_ramp, bad_tag = [], [], [], []
    for layer in layers.values():
        file_name = Path(layer.source()).name
        if not layer.isValid():
            bad_valid.append(file_name)
            continue
        if layer.crs().authid() != crs or layer.crs() != layer.dataProvider().crs():
            bad_crs.append(f"{file_name}: {layer.crs().authid()}")
        renderer = layer.renderer()
        minimum, maximum, first, last = RAMPS[ramp_of(DATED.match(file_name)["product"] if DATED.match(file_name)
                                                      else file_name[:-4])]
        items = renderer.shader().rasterShaderFunction().colorRampItemList() if renderer.type() == "singlebandpseudocolor" else []
        if not items or (renderer.classificationMin(), renderer.classificationMax()) != (minimum, maximum) or \
                (items[0].color.name(), items[-1].color.name()) != (first, last):
            bad_ramp.append(file_name)
        match = DATED.match(file_name)
        if match:
            date = dt.date.fromisoformat(match["date"])
            tag = gdal.Open(layer.source()).GetMetadataItem("DATE") or ""
            if not tag.startswith(match["date"]):
                bad_tag.append(file_name)
            by_product.setdefault(match["product"], []).append((date, layer))
        elif layer.temporalProperties().isActive():
            bad_ramp.append(f"{file_name} (undated but temporal)")
    check(not bad_valid, f"every layer is valid {bad_valid or ''}")
    check(not bad_crs, f"every layer is in {crs}, as forecast.nc and its file {bad_crs or ''}")
    check(not bad_ramp, f"every layer has its product's colour ramp {bad_ramp or ''}")
    check(not bad_tag, "the date of each file name is its COG's DATE tag")
    starts, ends = [], []
    for product, dated in sorted(by_product.items()):
        dated.sort(key=lambda item: item[0])
        ranges = [layer.temporalProperties().fixedTemporalRange() for _, layer in dated]
        active = all(layer.temporalProperties().isActive() for _, layer in dated)
        begins = [r.begin().date().toPyDate() for r in ranges]
        on_dates = all(r.begin() == qdate(d).addSecs(1) for r, (d, _) in zip(ranges, dated, strict=True))
        contiguous = all(r.end().addSecs(2) == n.begin() for r, n in zip(ranges, ranges[1:], strict=False))
        check(active and begins == [d for d, _ in dated] and on_dates and contiguous,
              f"{product}: {len(dated)} layers, time ranges [date + 1 s, next date - 1 s] "
              f"({ranges[0].begin().toString(Qt.ISODate)} .. {ranges[-1].end().toString(Qt.ISODate)})")
        starts.append(ranges[0].begin())
        ends.append(ranges[-1].end())
    if forecast_product:
        got = [d for d, _ in sorted(by_product.get(forecast_product, []), key=lambda item: item[0])]
        check(got == forecast_dates, f"{forecast_product} dates are forecast.nc's {len(forecast_dates)} dates "
                                     f"({forecast_dates[0]} .. {forecast_dates[-1]})")
    check_animation(project, by_product)
    span = project.timeSettings().temporalRange()
    check(bool(starts) and span.begin() == min(starts).addSecs(-1) and span.end() == max(ends).addSecs(1),
          f"project time range {span.begin().toString(Qt.ISODate)} .. {span.end().toString(Qt.ISODate)}, "
          f"step {project.timeSettings().timeStep():g} d")
    return project


def navigation(project: QgsProject, step_days: float) -> QgsTemporalNavigationObject:
    """QGIS's temporal controller over the project's time range, in steps of `step_days`."""
    nav = QgsTemporalNavigationObject()
    nav.setTemporalExtents(project.timeSettings().temporalRange())
    nav.setFrameDuration(QgsInterval(step_days, QgsUnitTypes.TemporalDays))
    return nav


def check_animation(project: QgsProject, by_product: dict[str, list]) -> None:
    """In every frame of the controller (project step, and 1-day steps), each product draws at most one date,
    and exactly one inside the product's own period."""
    for step in (project.timeSettings().timeStep(), 1.0):
        nav = navigation(project, step)
        problems = []
        for frame_number in range(nav.totalFrameCount()):
            frame = nav.dateTimeRangeForFrameNumber(frame_number)
            for product, dated in by_product.items():
                drawn = [d for d, layer in dated if layer.temporalProperties().isVisibleInTemporalRange(frame)]
                inside = qdate(dated[0][0]) <= frame.begin() < qdate(dated[-1][0]).addDays(5)
                if len(drawn) > 1 or (inside and len(drawn) != 1):
                    problems.append(f"{frame.begin().toString(Qt.ISODate)} {product}: {drawn}")
        check(not problems, f"temporal controller, {nav.totalFrameCount()} frames of {step:g} d: one date per "
                            f"product in each frame {problems[:3] or ''}")


def check_netcdf(path: Path, variable: str, dates: list[dt.date], crs: str) -> None:
    print(f"--- {path}")
    mesh = QgsMeshLayer(str(path), path.stem, "mdal")
    extent = mesh.temporalProperties().timeExtent() if mesh.isValid() else QgsDateTimeRange()
    check(mesh.isValid() and mesh.dataProvider().temporalCapabilities().hasTemporalCapabilities()
          and extent.begin() == qdate(dates[0]) and extent.end() == qdate(dates[-1]),
          f"opens as a mesh layer (MDAL) with time {extent.begin().toString(Qt.ISODate)} .. "
          f"{extent.end().toString(Qt.ISODate)}")
    raster = QgsRasterLayer(f'NETCDF:"{path}":{variable}', variable, "gdal")
    names = [raster.dataProvider().generateBandName(b) for b in (1, 2)] if raster.isValid() else []
    check(raster.isValid() and raster.crs().authid() == crs and f"days since {dates[0]:%Y-%m-%d}" in names[0],
          f"opens as a raster in {raster.crs().authid()}, bands named {names}")


def render(project: QgsProject, date: dt.date, png: Path, *, step: int, steps: int) -> None:
    """The project's visible layers at `date`, in a layout with a title and the ramp's legend."""
    layout = QgsLayout(project)
    layout.initializeDefaults()
    tree = project.layerTreeRoot()
    visible = [node.layer() for node in tree.findLayers() if node.isVisible()]
    nav = navigation(project, project.timeSettings().timeStep())
    frame = next(r for r in map(nav.dateTimeRangeForFrameNumber, range(nav.totalFrameCount()))
                 if r.begin() == qdate(date))
    drawn = [layer for layer in visible if layer.temporalProperties().isVisibleInTemporalRange(frame)]
    check(len(drawn) == 1, f"at {date} exactly one layer is drawn: {[layer.name() for layer in drawn]}")
    extent = drawn[0].extent()
    width = 130.0
    height = width * extent.height() / extent.width()
    map_item = QgsLayoutItemMap(layout)
    map_item.attemptSetSceneRect(QRectF(5, 15, width, height))
    map_item.setLayers(visible)
    map_item.setIsTemporal(True)
    map_item.setTemporalRange(frame)
    map_item.setExtent(extent)
    map_item.setFrameEnabled(True)
    layout.addLayoutItem(map_item)
    title = QgsLayoutItemLabel(layout)
    title.setText(f"{tree.children()[0].name()}: NDVI on {date} (forecast step {step} of {steps})")
    title.setFont(QFont("DejaVu Sans", 12))
    title.attemptMove(QgsLayoutPoint(5, 4, QgsUnitTypes.LayoutMillimeters))
    title.attemptResize(QgsLayoutSize(width + 60, 9, QgsUnitTypes.LayoutMillimeters))
    layout.addLayoutItem(title)
    legend = QgsLayoutItemLegend(layout)
    legend.setAutoUpdateModel(False)
    legend.model().rootGroup().clear()
    node = legend.model().rootGroup().addLayer(drawn[0])
    node.setName(f"{date}: {drawn[0].name().split()[0]}")
    QgsMapLayerLegendUtils.setLegendNodeUserLabel(node, 0, "NDVI")  # instead of "Band 1: <long description>"
    legend.model().refreshLayerLegend(node)
    legend.setTitle("")
    legend.setLinkedMap(map_item)
    legend.attemptMove(QgsLayoutPoint(width + 8, 15, QgsUnitTypes.LayoutMillimeters))
    layout.addLayoutItem(legend)
    page_width = width + 60  # room for the legend (its size is only known once drawn)
    layout.pageCollection().page(0).setPageSize(QgsLayoutSize(page_width, height + 20, QgsUnitTypes.LayoutMillimeters))
    png.parent.mkdir(parents=True, exist_ok=True)
    settings = QgsLayoutExporter.ImageExportSettings()
    settings.dpi = 110
    settings.exportMetadata = False  # GDAL cannot add metadata to a PNG in place (an "ERROR 6" line otherwise)
    result = QgsLayoutExporter(layout).exportToImage(str(png), settings)
    check(result == QgsLayoutExporter.Success and png.stat().st_size > 10_000,
          f"rendered {png} ({png.stat().st_size if png.exists() else 0} bytes)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vegediff", default=str(ROOT / ".venv" / "bin" / "vegediff"))
    parser.add_argument("--workdir", type=Path, help="working directory (default: a temporary one)")
    parser.add_argument("--no-run", action="store_true", help="check the outputs already in --workdir")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "qgis-forecast.png")
    parser.add_argument("--render-step", type=int, default=8, help="forecast step (1-based) to render")
    args = parser.parse_args()
    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)
    app.initQgis()
    print(f"QGIS {Qgis.QGIS_VERSION}, GDAL {gdal.__version__}")
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        if not args.no_run:
            run_main_job(args.vegediff, workdir)
        tile = workdir / TILE
        dates, crs, units = netcdf_dates(tile / "forecast.nc", "ndvi_pred")
        print(f"forecast.nc: {len(dates)} dates {dates[0]} .. {dates[-1]} (time units '{units}'), CRS {crs}")
        forecast = check_project(tile / "forecast_cogs" / "forecast.qgs", crs=crs, forecast_dates=dates,
                                 forecast_product="ndvi_pred")
        check_project(tile / "ensemble_cogs" / "ensemble.qgs", crs=crs, forecast_dates=dates,
                      forecast_product="ndvi_mean")
        for path in sorted((tile / "evaluation" / "qgis").glob("*/evaluation.qgs")):
            check_project(path, crs=crs, forecast_dates=dates, forecast_product="forecast_forecast")
        check_netcdf(tile / "forecast.nc", "ndvi_pred", dates, crs)
        check_netcdf(tile / "ensemble.nc", "ndvi_mean", dates, crs)
        render(forecast, dates[args.render_step - 1], args.png, step=args.render_step, steps=len(dates))
        forecast.clear()  # layers must go before QGIS shuts down, or the interpreter's cleanup crashes
    print(f"{'all checks passed' if not FAILURES else f'{len(FAILURES)} check(s) failed'}", flush=True)
    del forecast
    gc.collect()
    app.exitQgis()
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
