"""Band mappings that make other Sentinel-2 series consistent with the model's B02 B03 B04 B8A L2A input.

- :func:`estimate_blue`: B02 from B03, B04, B8A where a series lacks it (the `nrt` package's 20 m
  series). A linear fit on clear L2A pixels of every training source that has all four bands.
- :func:`toa_to_l2a`: 8-bit top-of-atmosphere (L1C) reflectance -> the L2A scale, by a per-frame
  dark-object subtraction (Chavez 1988) to the dark-dense-vegetation levels of the L2A sources.

Both were fitted, and their errors measured, by ``scripts/fit_band_mappings.py``; its printout
is quoted in weights/MODEL_CARD.md ("Band mappings"). Pure numpy.
"""

from __future__ import annotations

import numpy as np

# B02 = a B03 + b B04 + c B8A + d, least squares on 168,000 clear L2A pixels of the training
# sources with all four bands (GreenEarthNet 34VCL, EarthNet2021x 29SND 2017, the 6 EarthNet2021
# samples, the Romanian forest at 20 m with its own 10 m B2 averaged to 20 m). Leaving each
# source out of the fit and predicting it: RMSE 0.005-0.010 reflectance, R2 0.87-0.96.
BLUE_FROM_GRN = (1.1270, -0.2043, -0.0587, 0.0001)


def estimate_blue(green: np.ndarray, red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """B02 reflectance estimated from B03, B04, B8A reflectance (any shape), never below 0."""
    a, b, c, d = BLUE_FROM_GRN
    return np.maximum(a * green + b * red + c * nir + d, 0.0).astype("float32")


# L2A reflectance of the darkest 1 % of clear growing-season pixels (dark dense vegetation, water,
# shadowed slopes), B02 B03 B04: the median over the L2A series of central and northern Europe
# (GreenEarthNet 34VCL, Romanian forest, Rhone valley; their range: B02 0.003-0.016, B03
# 0.017-0.036, B04 0.010-0.019).
DARK_OBJECT_L2A = (0.0080, 0.0195, 0.0139)
# Fraction of a frame's pixels that must look clear for its own dark-object level to be used;
# cloudier frames take the median level of the series' clearer frames.
MIN_DARK_SAMPLE = 0.2
DARK_PERCENTILE = 1.0


def dark_object_offsets(toa: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per frame and visible band, the path reflectance to subtract: (T, 3).

    toa (T, 4, H, W) B02 B03 B04 B8A top-of-atmosphere reflectance; candidate (T, H, W) pixels that
    may be clear. The offset is the frame's 1st percentile over candidate pixels minus the L2A
    dark-object level; frames with too few candidates take the median offset of the others.
    """
    t_count = toa.shape[0]
    offsets = np.full((t_count, 3), np.nan)
    for t in range(t_count):
        if candidate[t].mean() >= MIN_DARK_SAMPLE:
            values = toa[t, :3][:, candidate[t]]  # (3, N)
            offsets[t] = np.percentile(values, DARK_PERCENTILE, axis=1) - np.asarray(DARK_OBJECT_L2A)
    fallback = np.nanmedian(offsets, axis=0) if np.isfinite(offsets).any() else np.zeros(3)
    offsets = np.where(np.isfinite(offsets), offsets, fallback[None])
    return np.maximum(offsets, 0.0)


def toa_to_l2a(toa: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """(T, 4, H, W) B02 B03 B04 B8A TOA reflectance -> L2A-scale reflectance (float32, >= 0).

    Visible bands lose their per-frame path reflectance (dark-object subtraction); B8A is kept as
    it is: the atmosphere adds little in the near infrared, and the mapped series' peak NDVI then
    matches the L2A sources' (99th percentile 0.92 vs 0.89-0.93; a NIR gain of 1.1 would give 0.93).
    """
    offsets = dark_object_offsets(toa, candidate)  # (T, 3)
    out = toa.astype("float32").copy()
    out[:, :3] -= offsets[:, :, None, None].astype("float32")
    return np.maximum(out, 0.0)
