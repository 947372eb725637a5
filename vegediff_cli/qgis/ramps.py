"""Colour ramps of the products: NDVI, ensemble spread, event probabilities and score maps.

Each ramp is a list of (value, colour) stops interpolated linearly by QGIS; values beyond the
first or last stop take the end colour (QGIS's "clip" off). Colours are ColorBrewer schemes
(Brewer, colorbrewer2.org), which stay readable for the common forms of colour blindness.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ramp:
    """An interpolated colour ramp over [stops[0].value, stops[-1].value]."""

    name: str  # shown in QGIS's legend title and used as the QML file name
    stops: tuple[tuple[float, str], ...]  # (value, "#rrggbb"), values increasing
    label_precision: int = 2  # decimals of the legend labels

    @property
    def minimum(self) -> float:
        return self.stops[0][0]

    @property
    def maximum(self) -> float:
        return self.stops[-1][0]


# Bare soil and water brown, sparse vegetation pale, dense canopy dark green (BrBG's brown half, then YlGn).
NDVI = Ramp("ndvi", (
    (-0.2, "#8c510a"), (0.0, "#d8b365"), (0.2, "#f6e8c3"), (0.4, "#c2e699"),
    (0.6, "#78c679"), (0.8, "#238443"), (1.0, "#004529"),
))

# Ensemble standard deviation of NDVI: 0 white, 0.2 (very uncertain) dark purple (Purples).
SPREAD = Ramp("ndvi_spread", (
    (0.0, "#fcfbfd"), (0.05, "#dadaeb"), (0.1, "#9e9ac8"), (0.15, "#6a51a3"), (0.2, "#3f007d"),
), label_precision=3)

# Probability of an event (NDVI below a threshold, NDVI drop): 0 pale yellow, 1 dark brown (YlOrBr).
PROBABILITY = Ramp("probability", (
    (0.0, "#ffffe5"), (0.25, "#fee391"), (0.5, "#fe9929"), (0.75, "#cc4c02"), (1.0, "#662506"),
))

# Per-pixel RMSE of NDVI: 0 pale, 0.3 and above dark red (YlOrRd).
ERROR = Ramp("ndvi_rmse", (
    (0.0, "#ffffcc"), (0.05, "#fed976"), (0.1, "#fd8d3c"), (0.2, "#e31a1c"), (0.3, "#800026"),
), label_precision=3)

RAMPS: dict[str, Ramp] = {ramp.name: ramp for ramp in (NDVI, SPREAD, PROBABILITY, ERROR)}
