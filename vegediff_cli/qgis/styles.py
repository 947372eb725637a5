"""Raster styles as QGIS writes them: the renderer ``<pipe>`` of a layer, and QML style files.

A layer is drawn with QGIS's "singleband pseudocolor" renderer: band 1 through an interpolated
colour ramp (ramps.py) with fixed limits, so every date of a product has the same colours and
the animation compares like with like. The element names and attributes are those QGIS 3.22
saves (``QgsSingleBandPseudoColorRenderer::writeXml``); a QML file is the same ``<pipe>`` under a
``<qgis>`` root, loadable with Layer Properties > Symbology > Style > Load Style.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .ramps import Ramp

QGIS_VERSION = "3.22.0-Białowieża"  # the oldest release whose project format these files follow
DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def number(value: float) -> str:
    """A float as QGIS writes it: no trailing zeros, no exponent for ordinary values."""
    return f"{value:.10g}"


def _rgba(colour: str) -> str:
    """'#rrggbb' -> 'r,g,b,255', the colour form of QGIS's colour ramp properties."""
    red, green, blue = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"{red},{green},{blue},255"


def _gradient(ramp: Ramp) -> ET.Element:
    """The ``[source]`` gradient, so QGIS's style panel shows (and can edit) the ramp itself."""
    span = ramp.maximum - ramp.minimum
    inner = ":".join(f"{number((value - ramp.minimum) / span)};{_rgba(colour)}" for value, colour in ramp.stops[1:-1])
    props = {"color1": _rgba(ramp.stops[0][1]), "color2": _rgba(ramp.stops[-1][1]), "discrete": "0",
             "rampType": "gradient", "stops": inner}
    element = ET.Element("colorramp", name="[source]", type="gradient")
    options = ET.SubElement(element, "Option", type="Map")
    for key, value in props.items():
        ET.SubElement(options, "Option", name=key, type="QString", value=value)
    for key, value in props.items():  # the older property form, read by QGIS before 3.20
        ET.SubElement(element, "prop", k=key, v=value)
    return element


def renderer_pipe(ramp: Ramp) -> ET.Element:
    """The ``<pipe>`` of a one-band float raster drawn through `ramp` (nodata transparent)."""
    pipe = ET.Element("pipe")
    provider = ET.SubElement(pipe, "provider")
    ET.SubElement(provider, "resampling", enabled="false", maxOversampling="2",
                  zoomedInResamplingMethod="nearestNeighbour", zoomedOutResamplingMethod="nearestNeighbour")
    renderer = ET.SubElement(pipe, "rasterrenderer", type="singlebandpseudocolor", band="1", opacity="1",
                             alphaBand="-1", nodataColor="", classificationMin=number(ramp.minimum),
                             classificationMax=number(ramp.maximum))
    ET.SubElement(renderer, "rasterTransparency")
    limits = ET.SubElement(renderer, "minMaxOrigin")
    for tag, text in (("limits", "None"), ("extent", "WholeRaster"), ("statAccuracy", "Estimated"),
                      ("cumulativeCutLower", "0.02"), ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")):
        ET.SubElement(limits, tag).text = text  # "None": the ramp's fixed limits, never recomputed per date
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader",
                           colorRampType="INTERPOLATED", classificationMode="1", clip="0",
                           minimumValue=number(ramp.minimum), maximumValue=number(ramp.maximum),
                           labelPrecision=str(ramp.label_precision))
    shader.append(_gradient(ramp))
    for value, colour in ramp.stops:
        ET.SubElement(shader, "item", value=number(value), label=f"{value:.{ramp.label_precision}f}",
                      color=colour, alpha="255")
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", invertColors="0", colorizeOn="0",
                  colorizeRed="255", colorizeGreen="128", colorizeBlue="128", colorizeStrength="100")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"
    return pipe


def qml_document(ramp: Ramp) -> str:
    """A QML style file (text) drawing a layer through `ramp`."""
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology", hasScaleBasedVisibilityFlag="0",
                      minScale="1e+08", maxScale="0")
    root.append(renderer_pipe(ramp))
    ET.SubElement(root, "blendMode").text = "0"
    return to_text(root)


def to_text(root: ET.Element) -> str:
    """Indented XML with QGIS's doctype line."""
    ET.indent(root, space="  ")
    return DOCTYPE + ET.tostring(root, encoding="unicode") + "\n"
