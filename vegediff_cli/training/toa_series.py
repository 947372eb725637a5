"""8-bit top-of-atmosphere Sentinel-2 series -> a training sequence on the L2A scale.

The file ``<TILE>_<YEAR>_L1C_rgbn_uint8.npy`` (../shared/data/sentinel2_series: 32UQC 2020, a
central European crop year) holds (H, W, 4, T) uint8 values of L1C reflectance x 255, bands R G B
NIR, with neither dates nor a cloud mask. Turned into a :class:`Sequence`:

- dates: the T frames are taken as evenly spaced from 1 January to 30 November of the year (the
  data set's README gives only "2020-01..11"; an assumption, stated in the model card), then put
  on the model's 5-day grid like any irregular series;
- pixels that are 0 in every band hold no data (the first frame is all zeros);
- frames identical to the one before are repeats of it (the file fills dates without a new
  acquisition with the previous frame), not observations: they count as missing;
- NIR is taken as B8A, blue as B02 (the file says NIR, not which band);
- reflectance: dark-object subtraction to the L2A scale (band_models.toa_to_l2a);
- clear sky: the multi-temporal test of clear_sky.detect_clear.
The companion ``*_valid_pixels.npy`` (2 x T numbers without documentation) is not used.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CorruptInputError
from .band_models import toa_to_l2a
from .clear_sky import detect_clear

NAME = re.compile(r"^(?P<tile>\d{1,2}[C-X][A-Z]{2})_(?P<year>\d{4})_L1C_rgbn_uint8$")
RGBN_TO_BGRN = [2, 1, 0, 3]
CANDIDATE_BLUE_TOA = 0.14  # TOA blue below this may be clear: the sample for the dark-object levels


def is_toa_series(path: Path) -> bool:
    return path.suffix == ".npy" and NAME.match(path.stem) is not None


def frame_dates(year: int, count: int) -> pd.DatetimeIndex:
    """`count` dates evenly spaced from 1 January to 30 November of `year` (whole days)."""
    return pd.date_range(f"{year}-01-01", f"{year}-11-30", periods=count).normalize()


def new_acquisitions(toa: np.ndarray) -> np.ndarray:
    """(T,) False for frames identical to their predecessor (repeats), True otherwise."""
    fresh = np.ones(toa.shape[0], dtype=bool)
    fresh[1:] = [not np.array_equal(toa[t], toa[t - 1]) for t in range(1, toa.shape[0])]
    return fresh


def tile_latitude(tile: str) -> float:
    """Latitude of an MGRS tile's centre."""
    from pyproj import Transformer

    from ..geo import tile_grid

    grid = tile_grid(tile)
    left, bottom, right, top = grid.bounds
    _, latitude = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(
        0.5 * (left + right), 0.5 * (bottom + top))
    return float(latitude)


def read_toa_series(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DatetimeIndex, float]:
    """-> (L2A-scale reflectance (T, 4, H, W) BGRN, clear (T, H, W), new acquisitions (T,), dates, latitude)."""
    match = NAME.match(path.stem)
    if match is None:
        raise CorruptInputError(f"{path.name} is not named <TILE>_<YEAR>_L1C_rgbn_uint8.npy",
                                fix="rename it so that the tile and year can be read")
    raw = np.load(path, allow_pickle=False)
    if raw.ndim != 4 or raw.shape[2] != 4 or raw.dtype != np.uint8:
        raise CorruptInputError(f"{path.name} holds {raw.dtype} {raw.shape}, not (H, W, 4, T) uint8",
                                fix="pass R G B NIR top-of-atmosphere reflectance x 255 as (H, W, 4, T) uint8")
    toa = raw.transpose(3, 2, 0, 1)[:, RGBN_TO_BGRN].astype("float32") / 255.0  # (T, 4, H, W)
    fresh = new_acquisitions(toa)
    toa[np.repeat((toa == 0).all(axis=1, keepdims=True), 4, axis=1)] = np.nan  # 0 in every band: no data
    candidate = fresh[:, None, None] & (toa[:, 0] < CANDIDATE_BLUE_TOA)
    reflectance = toa_to_l2a(toa, candidate)
    clear = detect_clear(reflectance, fresh)
    dates = frame_dates(int(match["year"]), toa.shape[0])
    return reflectance, clear, fresh, dates, tile_latitude(match["tile"])
