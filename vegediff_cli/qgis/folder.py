"""One call for a step's COG folder: a QGIS project of every COG in it, and a QML style per product.

    write_folder_project(folder, name="forecast", title="vegediff forecast 29SND")

writes ``folder/forecast.qgs`` (one top-level group, one sub-group per product, one layer per
date with its time range) and ``folder/styles/<product>.qml``. The steps call it on their
temporary COG folder before it is renamed into place (cube/cog.py export_cogs), so the project
appears together with the COGs or not at all.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import statistics
import warnings
from pathlib import Path

import pyproj
import rasterio

from ..atomic import atomic_file
from ..errors import OutputError
from .products import Product, parse_cog_name, product_for
from .project import CrsInfo, LayerGroup, Project, RasterLayer, date_ranges, project_xml
from .styles import qml_document

STYLES = "styles"
DEFAULT_CADENCE_DAYS = 5.0  # the cube's frame step (config.FRAME_DAYS)


def crs_info(crs: rasterio.crs.CRS) -> CrsInfo:
    """QGIS's description of a rasterio CRS."""
    proj = pyproj.CRS.from_user_input(crs.to_wkt())
    authority = proj.to_authority()
    with warnings.catch_warnings():  # PROJ strings lose datum details; QGIS reads the WKT first
        warnings.simplefilter("ignore", UserWarning)
        proj4 = proj.to_proj4() or ""
    return CrsInfo(wkt=proj.to_wkt(), proj4=proj4, authid=":".join(authority) if authority else "",
                   description=proj.name, geographic=proj.is_geographic)


def _cadence(dates: list[dt.date]) -> float:
    steps = [(b - a).days for a, b in zip(dates, dates[1:], strict=False)]
    return float(statistics.median(steps)) if steps else DEFAULT_CADENCE_DAYS


def _layer_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _read_grid(path: Path) -> tuple[CrsInfo, tuple[float, float, float, float]]:
    with rasterio.open(path) as src:
        if src.crs is None:
            raise OutputError(f"{path} has no CRS; a QGIS project cannot place it", fix="write COGs with a CRS")
        bounds = src.bounds
        return crs_info(src.crs), (bounds.left, bounds.bottom, bounds.right, bounds.top)


def collect_groups(folder: Path) -> tuple[list[LayerGroup], list[Product], CrsInfo, tuple[float, float, float, float]]:
    """Every COG of `folder` as layers grouped by product (layer tree order), the products, CRS and extent."""
    found: dict[str, list[tuple[dt.date | None, str]]] = {}
    for entry in sorted(os.listdir(folder)):
        parsed = parse_cog_name(entry)
        if parsed is not None:
            found.setdefault(parsed[0], []).append((parsed[1], entry))
    if not found:
        raise OutputError(f"{folder} holds no COG for a QGIS project", fix="write the COGs first")
    products = sorted((product_for(key) for key in found), key=lambda p: (p.rank, p.key))
    groups, crs, extent = [], None, None
    for product in products:
        entries = sorted(found[product.key], key=lambda item: (item[0] is not None, item[0] or dt.date.min))
        dates = [d for d, _ in entries if d is not None]
        ranges = iter(date_ranges(dates, cadence_days=_cadence(dates)))
        layers = []
        for date, file_name in entries:
            layer_crs, bounds = _read_grid(folder / file_name)
            crs = crs or layer_crs
            extent = bounds if extent is None else (min(extent[0], bounds[0]), min(extent[1], bounds[1]),
                                                    max(extent[2], bounds[2]), max(extent[3], bounds[3]))
            label = f"{product.key} {date:%Y-%m-%d}" if date else product.key
            layers.append(RasterLayer(layer_id=_layer_id(label), name=label, source=f"./{file_name}", crs=layer_crs,
                                      extent=bounds, ramp=product.ramp, time_range=next(ranges) if date else None))
        groups.append(LayerGroup(product.title, tuple(layers), shown=product.shown))
    return groups, products, crs, extent


def run_title(step: str, output: Path) -> str:
    """"vegediff forecast 29SND" for <workdir>/29SND/forecast.nc, else "vegediff forecast <file stem>"."""
    name = output.parent.name if output.name == f"{step}.nc" and output.parent.name else output.stem
    return f"vegediff {step} {name}"


def write_folder_project(folder: str | os.PathLike, *, name: str, title: str) -> Path:
    """Write ``folder/<name>.qgs`` over the COGs in `folder`, and ``folder/styles/<product>.qml``; returns the project."""
    folder = Path(folder)
    groups, products, crs, extent = collect_groups(folder)
    cadences = [c for c in map(_cadence_of, groups) if c is not None]
    project = Project(title=title, groups=tuple(groups), crs=crs, extent=extent,
                      time_step_days=min(cadences, default=DEFAULT_CADENCE_DAYS))
    for product in products:
        with atomic_file(folder / STYLES / f"{product.key}.qml") as tmp:
            tmp.write_text(qml_document(product.ramp), encoding="utf-8")
    path = folder / f"{name}.qgs"
    with atomic_file(path) as tmp:
        tmp.write_text(project_xml(project), encoding="utf-8")
    return path


def _cadence_of(group: LayerGroup) -> float | None:
    starts = [layer.time_range[0].date() for layer in group.layers if layer.time_range]
    return _cadence(starts) if len(starts) > 1 else None
