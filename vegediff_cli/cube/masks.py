"""Pixel masks and indices: clear-sky validity from SCL, NDVI, vegetation classes (pure numpy)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xarray as xr

from ..config import BANDS, DEFAULT_CLEAR_SCL, DLMASK, LANDCOVER, NIR, RED, SCL, VALID, VEGETATION_CLASSES

NDVI_EPS = 1e-8  # as in GreenEarthNet: (nir - red) / (nir + red + 1e-8)


def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """Normalised difference vegetation index, NaN where either band is NaN."""
    red = np.asarray(red, dtype="float32")
    nir = np.asarray(nir, dtype="float32")
    return (nir - red) / (nir + red + NDVI_EPS)


def cube_ndvi(ds: xr.Dataset) -> xr.DataArray:
    """NDVI (time, y, x) of a cube, NaN where the frame is not valid."""
    values = ndvi(ds[RED].values, ds[NIR].values)
    values = np.where(ds[VALID].values.astype(bool), values, np.nan)
    return xr.DataArray(values, coords=ds[RED].coords, dims=ds[RED].dims, name="ndvi")


def clear_from_scl(
    scl: np.ndarray,
    *,
    dlmask: np.ndarray | None = None,
    clear_classes: Iterable[int] = DEFAULT_CLEAR_SCL,
) -> np.ndarray:
    """GreenEarthNet's validity rule: SCL in the clear classes and (if given) dlmask < 1."""
    scl = np.asarray(scl)
    clear = np.isin(np.nan_to_num(scl, nan=0).astype("int64"), list(clear_classes))
    if dlmask is not None:
        clear &= np.nan_to_num(np.asarray(dlmask), nan=99.0) < 1
    return clear


def valid_from_sources(
    bands: np.ndarray,
    *,
    scl: np.ndarray | None = None,
    dlmask: np.ndarray | None = None,
    cloud: np.ndarray | None = None,
    clear_classes: Iterable[int] = DEFAULT_CLEAR_SCL,
) -> np.ndarray:
    """Valid (T, H, W) from whatever quality layers a source has; bands (T, 4, H, W) must be finite.

    `cloud` is a binary "bad quality" layer (1 = masked), as in EarthNet2021 samples.
    """
    valid = np.isfinite(bands).all(axis=1)
    if scl is not None:
        valid &= clear_from_scl(scl, dlmask=dlmask, clear_classes=clear_classes)
    elif dlmask is not None:
        valid &= np.nan_to_num(np.asarray(dlmask), nan=99.0) < 1
    if cloud is not None:
        valid &= np.nan_to_num(np.asarray(cloud), nan=1.0) < 0.5
    return valid


def recompute_valid(ds: xr.Dataset, *, clear_classes: Iterable[int] = DEFAULT_CLEAR_SCL) -> xr.Dataset:
    """Re-derive ``valid_mask`` from the cube's own SCL/dlmask with another class set."""
    if SCL not in ds:
        return ds
    bands = np.stack([ds[b].values for b in BANDS], axis=1)
    dl = ds[DLMASK].values if DLMASK in ds else None
    valid = valid_from_sources(bands, scl=ds[SCL].values, dlmask=dl, clear_classes=clear_classes)
    out = ds.copy()
    out[VALID] = (ds[VALID].dims, valid.astype("uint8"), ds[VALID].attrs)
    out[VALID].attrs["clear_scl_classes"] = " ".join(str(c) for c in clear_classes)
    return out


def vegetation_mask(landcover: np.ndarray, classes: Iterable[int] = VEGETATION_CLASSES) -> np.ndarray:
    """True where ESA WorldCover is one of the vegetation classes (tree, shrub, grass, crop)."""
    return np.isin(np.nan_to_num(np.asarray(landcover), nan=0).astype("int64"), list(classes))


def has_landcover(ds: xr.Dataset) -> bool:
    return LANDCOVER in ds and bool(np.isfinite(ds[LANDCOVER].values).any())
