"""Cube arrays -> model inputs (pure numpy): gap filling, meteorology and static normalisation.

Shared by training and forecasting so that both see exactly the same inputs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import GEOMORPHONS, LANDCOVER, METEO_MEAN, METEO_STATS, METEO_STD, METEO_VARS, STATIC_LAYERS

# Static layers in model order: three DEMs, land cover, geomorphons (paper: 5 channels).
STATIC_ORDER = STATIC_LAYERS  # channel order of the static input
DEM_CENTRE_M, DEM_SCALE_M = 500.0, 500.0


def gap_fill(frames: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace invalid pixels by the last valid value before them (causal forward fill).

    frames (T, C, H, W), valid (T, H, W). Pixels with no earlier valid value take the first
    later one; pixels never valid take the frame's (or else the sequence's) median of valid
    pixels. The result is finite everywhere as long as any pixel was ever valid.
    """
    t_count = frames.shape[0]
    out = np.where(valid[:, None], frames, np.nan).astype("float32")
    last = np.full(frames.shape[1:], np.nan, dtype="float32")
    for t in range(t_count):  # forward fill
        fresh = np.isfinite(out[t])
        last = np.where(fresh, out[t], last)
        out[t] = last
    first = np.full(frames.shape[1:], np.nan, dtype="float32")
    for t in range(t_count - 1, -1, -1):  # backward fill of leading gaps
        fresh = np.isfinite(out[t])
        first = np.where(fresh, out[t], first)
        out[t] = np.where(fresh, out[t], first)
    if np.isnan(out).any():
        overall = np.nanmedian(np.where(valid[:, None], frames, np.nan), axis=(0, 2, 3))  # (C,)
        overall = np.where(np.isfinite(overall), overall, 0.0)
        out = np.where(np.isnan(out), overall[None, :, None, None], out)
    return out


def last_valid_index(valid: np.ndarray) -> np.ndarray:
    """Per pixel, the index of the last valid frame, -1 where none: (H, W)."""
    t_count = valid.shape[0]
    idx = np.where(valid, np.arange(t_count)[:, None, None], -1)
    return idx.max(axis=0)


def standardise_meteo(meteo: np.ndarray | None, frames: int) -> np.ndarray:
    """(T, 8 vars, 3 stats) in E-OBS units -> (T, 24) standardised; missing values -> 0 (= the mean)."""
    if meteo is None:
        return np.zeros((frames, len(METEO_VARS) * len(METEO_STATS)), dtype="float32")
    mean = np.array([METEO_MEAN[v] for v in METEO_VARS], dtype="float32")[None, :, None]
    std = np.array([METEO_STD[v] for v in METEO_VARS], dtype="float32")[None, :, None]
    z = (meteo.astype("float32") - mean) / std
    z = np.clip(np.nan_to_num(z, nan=0.0), -6.0, 6.0)
    return z.reshape(meteo.shape[0], -1)


def normalise_static(layers: dict[str, np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """Static layers -> (5, H, W) model input and whether any real layer was present.

    DEMs are centred on 500 m and scaled by 500 m; a missing DEM copies an available one;
    land cover is class / 100 and geomorphons class / 10 (0 where unknown).
    """
    dems = [layers.get(name) for name in STATIC_ORDER[:3]]
    available = next((d for d in dems if d is not None and np.isfinite(d).any()), None)
    out = np.zeros((len(STATIC_ORDER), *shape), dtype="float32")
    for i, dem in enumerate(dems):
        source = dem if dem is not None and np.isfinite(dem).any() else available
        if source is not None:
            filled = np.nan_to_num(source, nan=float(np.nanmean(source)))
            out[i] = (filled - DEM_CENTRE_M) / DEM_SCALE_M
    for i, (name, scale) in enumerate(((LANDCOVER, 100.0), (GEOMORPHONS, 10.0)), start=3):
        layer = layers.get(name)
        if layer is not None:
            out[i] = np.nan_to_num(layer, nan=0.0) / scale
    present = any(layers.get(name) is not None for name in STATIC_ORDER)
    return out, present


def latent_weights(valid: np.ndarray, factor: int) -> np.ndarray:
    """Fraction of valid pixels in each factor x factor cell: (T, H, W) -> (T, 1, H/f, W/f)."""
    t, h, w = valid.shape
    cells = valid.reshape(t, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
    return cells[:, None].astype("float32")


DATE_CHANNELS = 3  # sin and cos of the day of year, latitude / 90
YEAR_DAYS = 365.25


def date_features(dates: pd.DatetimeIndex | np.ndarray, latitude: float) -> np.ndarray:
    """(T,) frame dates and the site's latitude (degrees) -> (T, 3) float32 model date features.

    The day of year as a point on the unit circle (31 December and 1 January are neighbours) and
    the latitude scaled to [-1, 1], so that the same date can mean green-up in one place and
    senescence in another.
    """
    day = pd.DatetimeIndex(dates).day_of_year.to_numpy(dtype="float64") - 1.0
    angle = 2.0 * np.pi * day / YEAR_DAYS
    lat = np.full_like(angle, float(np.clip(latitude, -90.0, 90.0)) / 90.0)
    return np.stack([np.sin(angle), np.cos(angle), lat], axis=-1).astype("float32")
