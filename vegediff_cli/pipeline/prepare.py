"""prepare: any accepted input -> analysis-ready cube (mask, meteorology, static layers)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import xarray as xr

from ..config import DEFAULT_CLEAR_SCL, VALID
from ..cube.masks import recompute_valid
from ..cube.readers import open_cube
from ..errors import NoValidDataError


def prepare_cube(
    source: str | os.PathLike,
    *,
    clear_classes: Iterable[int] = DEFAULT_CLEAR_SCL,
) -> xr.Dataset:
    """Read `source` (cube, minicube or EarthNet2021 sample) and re-derive its valid mask."""
    cube = open_cube(Path(source)).load()
    classes = tuple(clear_classes)
    if classes != DEFAULT_CLEAR_SCL:
        cube = recompute_valid(cube, clear_classes=classes)
    if not np.asarray(cube[VALID].values).any():
        raise NoValidDataError(
            f"{source} has no clear observation in any frame",
            fix="widen the date range or the accepted SCL classes (--clear-classes)",
        )
    return cube
