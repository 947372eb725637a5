"""Fit and check the band mappings of vegediff_cli/training/band_models.py and the clear-sky test.

Prints, from ../shared/data (never the test cube):
1. the B02 ~ B03 + B04 + B8A + 1 least-squares fit on clear (SCL 4, 5 / valid) pixels of every
   source with all four bands, and its error when each source is left out of the fit;
2. the dark-object (1st percentile) L2A levels of the central/northern European series, which the
   L1C series is brought to, and the peak NDVI (99th percentile) of the mapped L1C series against
   the L2A sources';
3. the agreement of training/clear_sky.detect_clear with each L2A source's own mask.

    python scripts/fit_band_mappings.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.train_weights import HOLDOUT, SHARED  # noqa: E402
from vegediff_cli.config import BANDS, VALID  # noqa: E402
from vegediff_cli.cube.masks import clear_from_scl  # noqa: E402
from vegediff_cli.cube.readers import open_cube  # noqa: E402
from vegediff_cli.training.band_models import estimate_blue  # noqa: E402
from vegediff_cli.training.clear_sky import detect_clear  # noqa: E402
from vegediff_cli.training.sequences import load_sequence  # noqa: E402

SERIES = SHARED / "sentinel2_series"
GROWING = range(4, 10)  # April to September


def cube_pixels(path: Path, *, months=None, limit: int = 40_000) -> np.ndarray:
    ds = open_cube(path).load()
    frames = np.stack([ds[b].values for b in BANDS], axis=1).astype("float32")
    valid = ds[VALID].values.astype(bool) & np.isfinite(frames).all(axis=1)
    if months is not None:
        valid &= pd.DatetimeIndex(ds["time"].values).month.isin(months)[:, None, None]
    pixels = frames.transpose(0, 2, 3, 1)[valid]
    return pixels[np.random.default_rng(0).permutation(len(pixels))[:limit]]


def romania(*, months=None, limit: int = 40_000, classes=(4, 5)) -> np.ndarray:
    """The 20 m series with the true B2 of its 10 m twin (same acquisitions) averaged to 20 m."""
    coarse, fine = xr.open_dataset(SERIES / "romania_forest_2015-2021_20m.nc"), xr.open_dataset(SERIES / "romania_forest_2015-2021_10m.nc")
    t, h, w = coarse["B3"].shape
    blue = fine["B2"].values.reshape(t, h, 2, w, 2).mean(axis=(2, 4))
    bgrn = np.stack([blue, coarse["B3"].values, coarse["B4"].values, coarse["B8A"].values], axis=-1) * 1e-4
    keep = np.isin(coarse["SCL"].values, classes) & np.isfinite(bgrn).all(axis=-1)
    if months is not None:
        keep &= coarse["time"].dt.month.isin(months).values[:, None, None]
    pixels = bgrn[keep]
    return pixels[np.random.default_rng(0).permutation(len(pixels))[:limit]]


def blue_fit() -> None:
    sources = {
        "GreenEarthNet 34VCL": cube_pixels(SHARED / "greenearthnet" / "MJJ2021_minicube_241_34VCL_59.04_17.96.nc"),
        "EarthNet2021x 29SND": cube_pixels(next((SHARED / "earthnet2021x").glob("*.nc"))),
        "EarthNet2021 samples": np.concatenate([cube_pixels(p, limit=8_000)
                                                for p in sorted((SHARED / "earthnet2021" / "context").glob("*.npz"))]),
        "Romanian forest 20 m": romania(),
    }

    def design(x: np.ndarray) -> np.ndarray:
        return np.column_stack([x[:, 1], x[:, 2], x[:, 3], np.ones(len(x))])

    pooled = np.concatenate(list(sources.values()))
    coef, *_ = np.linalg.lstsq(design(pooled), pooled[:, 0], rcond=None)
    print(f"1. B02 = {coef[0]:.4f} B03 {coef[1]:+.4f} B04 {coef[2]:+.4f} B8A {coef[3]:+.4f}  ({len(pooled)} pixels)")
    for name, pixels in sources.items():
        rest = np.concatenate([v for k, v in sources.items() if k != name])
        c, *_ = np.linalg.lstsq(design(rest), rest[:, 0], rcond=None)
        error = design(pixels) @ c - pixels[:, 0]
        r2 = 1 - error.var() / pixels[:, 0].var()
        print(f"   left out {name:22s} RMSE {np.sqrt(np.mean(error ** 2)):.4f}  bias {error.mean():+.4f}  R2 {r2:.3f}")


def dark_levels_and_peak_ndvi() -> None:
    rhone = xr.open_dataset(SERIES / "france_rhone_2017-2019_20m.nc")
    keep = np.isin(rhone["SCL"].values, (4, 5)) & rhone["time"].dt.month.isin(GROWING).values[:, None, None]
    green, red, nir = (rhone[b].values * 1e-4 for b in ("B3", "B4", "B8A"))
    references = {
        "GreenEarthNet 34VCL": cube_pixels(SHARED / "greenearthnet" / "MJJ2021_minicube_241_34VCL_59.04_17.96.nc",
                                           months=GROWING, limit=10**7),
        "Romanian forest": romania(months=GROWING, limit=10**7),
        "Rhone valley (B02 estimated)": np.stack([estimate_blue(green, red, nir), green, red, nir], axis=-1)[keep],
    }
    print("2. dark-object (1st percentile) L2A levels B02 B03 B04 B8A, and peak NDVI (99th percentile), Apr-Sep:")
    for name, pixels in references.items():
        pixels = pixels[np.isfinite(pixels).all(axis=1)]
        ndvi = (pixels[:, 3] - pixels[:, 2]) / (pixels[:, 3] + pixels[:, 2])
        print(f"   {name:30s} {np.round(np.percentile(pixels, 1, axis=0), 4)}  NDVI p99 {np.percentile(ndvi, 99):.3f}")
    seq = load_sequence(SERIES / "32UQC_2020_L1C_rgbn_uint8.npy")
    season = seq.times.month.isin(GROWING)
    pixels = seq.frames[season].transpose(0, 2, 3, 1)[seq.valid[season]]
    ndvi = (pixels[:, 3] - pixels[:, 2]) / (pixels[:, 3] + pixels[:, 2])
    print(f"   {'32UQC L1C, mapped':30s} {np.round(np.percentile(pixels, 1, axis=0), 4)}  NDVI p99 {np.percentile(ndvi, 99):.3f}"
          f"  ({seq.valid.mean():.0%} of pixel-frames clear)")


def clear_sky_agreement() -> None:
    print("3. clear-sky test against each source's own mask (pixels of observed frames):")
    coarse, fine = xr.open_dataset(SERIES / "romania_forest_2015-2021_20m.nc"), xr.open_dataset(SERIES / "romania_forest_2015-2021_10m.nc")
    t, h, w = coarse["B3"].shape
    blue = fine["B2"].values.reshape(t, h, 2, w, 2).mean(axis=(2, 4))
    cases = {"Romanian forest (SCL)": (np.stack([blue, *(coarse[b].values for b in ("B3", "B4", "B8A"))], 1) * 1e-4,
                                       clear_from_scl(coarse["SCL"].values))}
    rhone = xr.open_dataset(SERIES / "france_rhone_2017-2019_20m.nc")
    g, r, n = (rhone[b].values * 1e-4 for b in ("B3", "B4", "B8A"))
    cases["Rhone valley (SCL)"] = (np.stack([estimate_blue(g, r, n), g, r, n], 1), clear_from_scl(rhone["SCL"].values))
    cubes = [SHARED / "greenearthnet" / "MJJ2021_minicube_241_34VCL_59.04_17.96.nc", next((SHARED / "earthnet2021x").glob("*.nc")),
             *sorted((SHARED / "earthnet2021" / "context").glob("*.npz"))]
    for path in cubes:
        if HOLDOUT in path.name:
            continue
        ds = open_cube(path).load()
        cases[f"{path.stem[:22]}..{path.stem[-8:]} (cube mask)"] = (np.stack([ds[b].values for b in BANDS], 1).astype("float32"),
                                                  ds[VALID].values.astype(bool))
    for name, (bgrn, truth) in cases.items():
        present = np.isfinite(bgrn).all(axis=1).any(axis=(1, 2))
        found = detect_clear(bgrn, present)
        observed = present[:, None, None] & np.isfinite(bgrn).all(axis=1)
        t_, f_ = truth[observed], found[observed]
        print(f"   {name:46s} agreement {np.mean(t_ == f_):.3f}  clear-precision {(t_ & f_).sum() / max(f_.sum(), 1):.3f}"
              f"  clear-recall {(t_ & f_).sum() / max(t_.sum(), 1):.3f}  (truth {t_.mean():.0%} clear)")


if __name__ == "__main__":
    blue_fit()
    dark_levels_and_peak_ndvi()
    clear_sky_agreement()
