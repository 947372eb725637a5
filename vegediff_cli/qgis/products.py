"""What each COG of a step is: its product (from the file name), title, colour ramp and visibility.

COG names follow docs/cube-format.md: ``{product}_{YYYY-MM-DD}.tif`` for one date of a time
series (forecast, ensemble statistics, probabilities, observed frames) and ``{product}.tif`` for
a map without a date (evaluate's per-pixel scores).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from .ramps import ERROR, NDVI, PROBABILITY, SPREAD, Ramp

DATED = re.compile(r"^(?P<product>.+)_(?P<date>\d{4}-\d{2}-\d{2})\.tif$")
OBSERVED = "observed_ndvi"  # clear-sky NDVI of the cube's frames (context, or evaluate's targets)
FORECAST_PREFIX = "forecast_"  # evaluate: forecast_<name>_<date>.tif, the NDVI of one scored forecast
RMSE_PREFIX = "rmse_"  # evaluate: rmse_<name>.tif, per-pixel RMSE of one forecast or baseline


@dataclass(frozen=True)
class Product:
    """How one product's layers appear in a project."""

    key: str  # file-name prefix, e.g. "ndvi_pred", "prob_ndvi_below_0.30"
    title: str  # group name in the layer tree
    ramp: Ramp
    shown: bool  # checked (drawn) when the project opens
    rank: int  # order in the layer tree, top first (QGIS draws the top layer last, over the others)


def parse_cog_name(name: str) -> tuple[str, dt.date | None] | None:
    """(product, date) of a COG file name; date None for an undated map; None for a non-COG name."""
    if not name.endswith(".tif") or name.startswith("."):
        return None
    match = DATED.match(name)
    if match:
        try:
            return match["product"], dt.date.fromisoformat(match["date"])
        except ValueError:
            return name[:-4], None
    return name[:-4], None


_FIXED = {
    "ndvi_pred": ("NDVI forecast (ensemble mean)", NDVI, True, 0),
    "ndvi_mean": ("NDVI ensemble mean", NDVI, True, 0),
    "ndvi_std": ("NDVI spread (ensemble standard deviation)", SPREAD, False, 1),
    "ndvi_p10": ("NDVI 10th percentile of the members", NDVI, False, 2),
    "ndvi_p50": ("NDVI median of the members", NDVI, False, 3),
    "ndvi_p90": ("NDVI 90th percentile of the members", NDVI, False, 4),
    OBSERVED: ("Observed NDVI (clear sky)", NDVI, True, 9),
}


def product_for(key: str) -> Product:
    """The product of a file-name prefix; unknown prefixes get the NDVI ramp and start hidden."""
    if key in _FIXED:
        return Product(key, *_FIXED[key])
    if key.startswith("prob_ndvi_below_"):
        return Product(key, f"P(NDVI < {key.rsplit('_', 1)[-1]})", PROBABILITY, False, 5)
    if key.startswith("prob_ndvi_drop_"):
        return Product(key, f"P(NDVI drops by more than {key.rsplit('_', 1)[-1]})", PROBABILITY, False, 6)
    if key.startswith(FORECAST_PREFIX):
        return Product(key, f"NDVI forecast: {key[len(FORECAST_PREFIX):]}", NDVI, True, 0)
    if key.startswith(RMSE_PREFIX):
        return Product(key, f"RMSE per pixel: {key[len(RMSE_PREFIX):]}", ERROR, False, 7)
    return Product(key, key, NDVI, False, 8)
