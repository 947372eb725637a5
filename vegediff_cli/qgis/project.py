"""A QGIS project (.qgs) of raster layers in groups, with time ranges for the temporal controller.

The XML follows what QGIS 3.22 saves (``QgsProject::write``): the layer tree (``layer-tree-group``),
the layers (``projectlayers/maplayer``, each with its renderer ``pipe`` from styles.py and its
``temporal`` fixed range), the project CRS, a default view extent and ``ProjectTimeSettings``
(range and step of the animation). Paths are relative to the project file (``Paths/Absolute`` is
false), so the folder can be moved or copied to another machine as a whole.

Time ranges: QGIS draws a layer when its fixed range overlaps the temporal controller's current
frame. The controller's frames are [start + k step, start + (k + 1) step), but QGIS 3.22 tests
the overlap with both ends of both ranges included (``QgsTemporalRange::overlaps`` ignores the
frame's open end), so a layer starting exactly at a frame's end would be drawn in that frame too,
under its predecessor. A dated layer therefore covers [its date + 1 s, the next date of its
product - 1 s]: in every frame of the project's time range (which starts on a date, in steps
of the product's cadence or of whole days) exactly one date of each product is drawn.
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from .ramps import Ramp
from .styles import QGIS_VERSION, number, renderer_pipe, to_text

ISO = "%Y-%m-%dT%H:%M:%SZ"  # Qt::ISODate in UTC, as QGIS writes temporal ranges


@dataclass(frozen=True)
class CrsInfo:
    """A coordinate reference system in the terms of QGIS's ``spatialrefsys`` element."""

    wkt: str  # WKT2 (lossless; QGIS prefers it over the other fields when no internal srsid is given)
    proj4: str
    authid: str  # "EPSG:32629", or "" when the CRS has no authority code
    description: str
    geographic: bool


@dataclass(frozen=True)
class RasterLayer:
    """One single-band raster file of the project."""

    layer_id: str  # unique in the project
    name: str  # shown in the layer tree
    source: str  # path relative to the project file, "./name.tif"
    crs: CrsInfo
    extent: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in `crs`
    ramp: Ramp
    time_range: tuple[dt.datetime, dt.datetime] | None = None  # inclusive, UTC; None: drawn at every time


@dataclass(frozen=True)
class LayerGroup:
    """A group of the layer tree: one product, usually one layer per date."""

    name: str
    layers: tuple[RasterLayer, ...]
    shown: bool = True  # checked when the project opens


@dataclass(frozen=True)
class Project:
    """Everything a project file holds: groups inside one top-level group named `title`."""

    title: str
    groups: tuple[LayerGroup, ...]
    crs: CrsInfo
    extent: tuple[float, float, float, float]  # initial view, in `crs`
    time_step_days: float = 5.0  # step of the temporal controller


MARGIN = dt.timedelta(seconds=1)  # keeps a layer's range off the frame boundaries (see the module docstring)


def date_ranges(dates: Sequence[dt.date], *, cadence_days: float) -> list[tuple[dt.datetime, dt.datetime]]:
    """[date + 1 s, next date - 1 s] for each of the sorted `dates`; the last lasts `cadence_days`."""
    starts = [dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC) for d in dates]
    ends = [*starts[1:], starts[-1] + dt.timedelta(days=cadence_days)] if starts else []
    return [(start + MARGIN, end - MARGIN) for start, end in zip(starts, ends, strict=True)]


def time_extent(project: Project) -> tuple[dt.datetime, dt.datetime] | None:
    """The animation's range: from the first date to the end of the last date's range (whole seconds)."""
    ranges = [layer.time_range for group in project.groups for layer in group.layers if layer.time_range]
    if not ranges:
        return None
    return min(r[0] for r in ranges) - MARGIN, max(r[1] for r in ranges) + MARGIN


def _text(parent: ET.Element, tag: str, text: str = "", **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, **attrs)
    element.text = text
    return element


def _spatialrefsys(parent: ET.Element, crs: CrsInfo) -> None:
    srs = ET.SubElement(parent, "spatialrefsys")
    _text(srs, "wkt", crs.wkt)
    _text(srs, "proj4", crs.proj4)
    _text(srs, "authid", crs.authid)
    _text(srs, "description", crs.description)
    _text(srs, "geographicflag", "true" if crs.geographic else "false")


def _extent(parent: ET.Element, tag: str, extent: tuple[float, float, float, float]) -> None:
    element = ET.SubElement(parent, tag)
    for name, value in zip(("xmin", "ymin", "xmax", "ymax"), extent, strict=True):
        _text(element, name, number(value))


def _maplayer(layer: RasterLayer) -> ET.Element:
    element = ET.Element("maplayer", type="raster", styleCategories="AllStyleCategories", hasScaleBasedVisibilityFlag="0",
                         minScale="1e+08", maxScale="0", autoRefreshEnabled="0", autoRefreshTime="0",
                         refreshOnNotifyEnabled="0", refreshOnNotifyMessage="")
    _extent(element, "extent", layer.extent)
    _text(element, "id", layer.layer_id)
    _text(element, "datasource", layer.source)
    _text(ET.SubElement(element, "keywordList"), "value")
    _text(element, "layername", layer.name)
    _spatialrefsys(ET.SubElement(element, "srs"), layer.crs)
    _text(element, "provider", "gdal")
    ET.SubElement(ET.SubElement(element, "noData"), "noDataList", bandNo="1", useSrcNoData="1")
    styles = ET.SubElement(element, "map-layer-style-manager", current="default")
    ET.SubElement(styles, "map-layer-style", name="default")
    flags = ET.SubElement(element, "flags")
    for flag, value in (("Identifiable", "1"), ("Removable", "1"), ("Searchable", "1"), ("Private", "0")):
        _text(flags, flag, value)
    temporal = ET.SubElement(element, "temporal", enabled="1" if layer.time_range else "0", mode="0", fetchMode="0")
    fixed = ET.SubElement(temporal, "fixedRange")
    _text(fixed, "start", layer.time_range[0].strftime(ISO) if layer.time_range else "")
    _text(fixed, "end", layer.time_range[1].strftime(ISO) if layer.time_range else "")
    element.append(renderer_pipe(layer.ramp))
    _text(element, "blendMode", "0")
    return element


def _tree(parent: ET.Element, project: Project) -> None:
    root = ET.SubElement(parent, "layer-tree-group")
    ET.SubElement(ET.SubElement(root, "customproperties"), "Option")
    top = ET.SubElement(root, "layer-tree-group", name=project.title, checked="Qt::Checked", expanded="1")
    ET.SubElement(ET.SubElement(top, "customproperties"), "Option")
    for group in project.groups:
        node = ET.SubElement(top, "layer-tree-group", name=group.name,
                             checked="Qt::Checked" if group.shown else "Qt::Unchecked", expanded="0")
        ET.SubElement(ET.SubElement(node, "customproperties"), "Option")
        for layer in group.layers:  # layers stay checked: ticking the group shows the product
            leaf = ET.SubElement(node, "layer-tree-layer", id=layer.layer_id, name=layer.name, source=layer.source,
                                 providerKey="gdal", checked="Qt::Checked", expanded="0")
            ET.SubElement(ET.SubElement(leaf, "customproperties"), "Option")


def project_xml(project: Project) -> str:
    """The .qgs text of `project`."""
    root = ET.Element("qgis", version=QGIS_VERSION, projectname=project.title)
    ET.SubElement(root, "homePath", path="")
    _text(root, "title", project.title)
    _spatialrefsys(ET.SubElement(root, "projectCrs"), project.crs)
    _tree(root, project)
    layers = [layer for group in project.groups for layer in group.layers]
    projectlayers = ET.SubElement(root, "projectlayers")
    for layer in layers:
        projectlayers.append(_maplayer(layer))
    order = ET.SubElement(root, "layerorder")
    for layer in layers:
        ET.SubElement(order, "layer", id=layer.layer_id)
    properties = ET.SubElement(root, "properties")
    _text(ET.SubElement(properties, "Paths"), "Absolute", "false", type="bool")
    _text(ET.SubElement(properties, "SpatialRefSys"), "ProjectionsEnabled", "1", type="int")
    canvas = ET.SubElement(root, "mapcanvas", name="theMapCanvas", annotationsVisible="1")
    _text(canvas, "units", "degrees" if project.crs.geographic else "meters")
    _extent(canvas, "extent", project.extent)
    _text(canvas, "rotation", "0")
    _spatialrefsys(ET.SubElement(canvas, "destinationsrs"), project.crs)
    view = ET.SubElement(root, "ProjectViewSettings", UseProjectScales="0", rotation="0")
    ET.SubElement(view, "Scales")
    xmin, ymin, xmax, ymax = project.extent
    default = ET.SubElement(view, "DefaultViewExtent", xmin=number(xmin), ymin=number(ymin), xmax=number(xmax),
                            ymax=number(ymax))
    _spatialrefsys(default, project.crs)
    times = ET.SubElement(root, "ProjectTimeSettings", timeStepUnit="d", timeStep=number(project.time_step_days),
                          frameRate="1", cumulativeTemporalRange="0")
    extent = time_extent(project)
    if extent is not None:
        span = ET.SubElement(times, "TemporalRange")
        _text(span, "start", extent[0].strftime(ISO))
        _text(span, "end", extent[1].strftime(ISO))
    return to_text(root)
