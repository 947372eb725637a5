"""Clear-sky mask for Sentinel-2 series that come without one (pure numpy + scipy.ndimage).

For the 8-bit L1C series of ../shared/data (32UQC 2020): four bands, no SWIR, no cirrus band, no
Scene Classification Layer. A multi-temporal test in the spirit of Tmask (Zhu & Woodcock 2014),
on L2A-scale B02 B03 B04 B8A reflectance:

- cloud, haze, snow: blue well above the pixel's own clear-sky level (its 25th percentile over
  the series) and spectrally flat (blue >= 0.75 red: bright soils are redder), or blue > 0.2;
- shadow: darker than the pixel's median in B03, B04 and B8A (B8A below 0.7 x median), counted
  only in frames that hold clouds (seasonally dark forest is not a shadow);
- clouds grow by 2 px and shadows by 1 px; a frame with more than half of its pixels flagged
  is dropped whole (what is left of it is mostly haze).

Checked against the Scene Classification Layer / GreenEarthNet masks of the L2A training sources
(``scripts/fit_band_mappings.py``; weights/MODEL_CARD.md, "Band mappings"): 77-95 % pixel
agreement; of the pixels it calls clear, 93-100 % are clear by SCL, except the very cloudy
Swedish cube (70 %).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

HAZE = 0.03  # blue above the pixel's clear-sky level that marks cloud or haze (reflectance)
BRIGHT = 0.2  # blue above which a pixel is cloud or snow whatever its history
FLAT = 0.75  # cloud and haze: blue >= FLAT x red (bare soil is redder)
DARK = 0.7  # shadow: B8A below DARK x the pixel's median B8A (and darker in B03, B04)
SHADOW_NEEDS_CLOUD = 0.01  # shadows are looked for only in frames with this cloud fraction
CLOUD_GROW, SHADOW_GROW = 2, 1  # dilation of the masks, px
MAX_FLAGGED = 0.5  # frames with more flagged pixels are dropped whole


def detect_clear(bgrn: np.ndarray, present: np.ndarray) -> np.ndarray:
    """(T, 4, H, W) L2A-scale B02 B03 B04 B8A and (T,) new-acquisition flags -> (T, H, W) clear flags."""
    blue, green, red, nir = bgrn[:, 0], bgrn[:, 1], bgrn[:, 2], bgrn[:, 3]
    observed = present[:, None, None] & np.isfinite(bgrn).all(axis=1)
    if not observed.any():
        return observed
    with warnings.catch_warnings():  # never-observed pixels: all-NaN slices give NaN, as intended
        warnings.simplefilter("ignore", RuntimeWarning)
        clear_blue = np.nanpercentile(np.where(observed, blue, np.nan), 25, axis=0)  # (H, W)
        cloud = ((blue - clear_blue > HAZE) & (blue > 0.05) & (blue >= FLAT * red)) | (blue > BRIGHT)
        kept = observed & ~cloud

        def median(band: np.ndarray) -> np.ndarray:
            return np.nanmedian(np.where(kept, band, np.nan), axis=0)

        shadow = (nir < DARK * median(nir)) & (green < median(green)) & (red < median(red)) & (blue < clear_blue + 0.01)
    flagged = np.zeros_like(observed)
    square = np.ones((3, 3), dtype=bool)
    for t in range(bgrn.shape[0]):
        grown = ndimage.binary_dilation(cloud[t], square, iterations=CLOUD_GROW) if cloud[t].any() else cloud[t]
        if cloud[t].mean() >= SHADOW_NEEDS_CLOUD and shadow[t].any():
            grown = grown | ndimage.binary_dilation(shadow[t], square, iterations=SHADOW_GROW)
        flagged[t] = grown
    counts = np.maximum(observed.sum(axis=(1, 2)), 1)
    share = (flagged & observed).sum(axis=(1, 2)) / counts  # (T,)
    return observed & ~flagged & (share <= MAX_FLAGGED)[:, None, None]
