"""Constants and frozen settings shared by every layer (no I/O, no torch)."""

from __future__ import annotations

from dataclasses import dataclass

# --- Sentinel-2 bands -------------------------------------------------------------------
# Model input order is BGRN (paper Sec. III-A): blue, green, red, narrow NIR at 20 m.
BANDS: tuple[str, ...] = ("s2_B02", "s2_B03", "s2_B04", "s2_B8A")
# Reflectance per stored unit: Sentinel-2 L2A digital numbers (BOA_QUANTIFICATION_VALUE = 10000) and the
# int16 bands of cubes, fetch parts and forecasts (lossless at Sentinel-2's precision).
REFLECTANCE_SCALE = 1e-4
RED, NIR = "s2_B04", "s2_B8A"
SCL = "s2_SCL"
DLMASK = "s2_dlmask"  # GreenEarthNet's deep-learning cloud mask (0 = clear sky)
VALID = "valid_mask"  # this project's per-pixel usable flag (1 = clear observation)

# GreenEarthNet's clear classes of the Scene Classification Layer:
# 1 saturated, 2 dark area, 4 vegetation, 5 bare soil, 6 water, 7 unclassified.
DEFAULT_CLEAR_SCL: tuple[int, ...] = (1, 2, 4, 5, 6, 7)

# --- Time axis ----------------------------------------------------------------------------
STEP_DAYS = 5  # one frame every 5 days; frame t aggregates meteorology of days t-4..t
CONTEXT_FRAMES = 10
HORIZON_FRAMES = 20
SEQUENCE_FRAMES = CONTEXT_FRAMES + HORIZON_FRAMES
CHIP_SIZE = 128  # pixels per side of one model chip (20 m -> 2.56 km)
# Default minimum overlap of neighbouring chips, blended smoothly (docs/forecast.md, "Tiling"). 16 px, not
# 32: on a 1024^2 mosaic of real chips no seam shows at either (|dNDVI/dx| at chip edges / elsewhere:
# 0.966 / 0.968 at 16, 0.959 / 0.970 at 32), while at 32 61 % of the pixels lie in overlaps, where
# blending independent members lowers their spread by 19 % (16: 23 % of the pixels), and a full tile
# needs 3249 chips instead of 2401 (issue 13).
CHIP_OVERLAP = 16
PIXEL_SIZE_M = 20.0

# --- Meteorology (E-OBS naming, GreenEarthNet units) ---------------------------------------
METEO_VARS: tuple[str, ...] = ("tg", "tn", "tx", "rr", "pp", "hu", "fg", "qq")
METEO_STATS: tuple[str, ...] = ("mean", "min", "max")
METEO_UNITS: dict[str, str] = {
    "tg": "degC", "tn": "degC", "tx": "degC", "rr": "mm", "pp": "hPa",
    "hu": "%", "fg": "m s-1", "qq": "W m-2",
}
METEO_LONG_NAMES: dict[str, str] = {
    "tg": "daily mean 2 m air temperature",
    "tn": "daily minimum 2 m air temperature",
    "tx": "daily maximum 2 m air temperature",
    "rr": "daily precipitation amount",
    "pp": "daily mean sea level pressure",
    "hu": "daily mean relative humidity",
    "fg": "daily mean 10 m wind speed",
    "qq": "daily mean surface downwelling shortwave radiation",
}
# Standardisation used by GreenEarthNet and VegeDiff (shared/data/README.md).
METEO_MEAN: dict[str, float] = {
    "tg": 8.907, "fg": 2.733, "hu": 77.54, "pp": 1014.33,
    "qq": 126.48, "rr": 1.771, "tn": 4.771, "tx": 13.568,
}
METEO_STD: dict[str, float] = {
    "tg": 9.756, "fg": 1.487, "hu": 13.511, "pp": 10.263,
    "qq": 97.055, "rr": 4.148, "tn": 9.045, "tx": 11.082,
}
METEO_CHANNELS = len(METEO_VARS) * len(METEO_STATS)  # 24, the adaLN condition per frame


def meteo_name(var: str) -> str:
    """Cube variable name of one E-OBS quantity, e.g. ``eobs_tg``."""
    return f"eobs_{var}"


# --- Static layers -------------------------------------------------------------------------
STATIC_LAYERS: tuple[str, ...] = ("cop_dem", "nasa_dem", "alos_dem", "esawc_lc", "geom_cls")
DEM_LAYERS: tuple[str, ...] = STATIC_LAYERS[:3]
LANDCOVER = "esawc_lc"
GEOMORPHONS = "geom_cls"
# ESA WorldCover classes scored by GreenEarthNet (tree, shrub, grass, crop).
VEGETATION_CLASSES: dict[int, str] = {10: "tree", 20: "shrub", 30: "grass", 40: "crop"}

# --- Ensemble products ---------------------------------------------------------------------
DEFAULT_BELOW: tuple[float, ...] = (0.3, 0.5)  # sparse / stressed vegetation, and below a healthy canopy
DEFAULT_DROP: tuple[float, ...] = (0.1, 0.2)  # a marked and a severe loss of greenness

# --- Forecast outputs ----------------------------------------------------------------------
DEFAULT_KEEP_HISTORY = 1  # earlier forecasts kept per tile (history/<start>/), for evaluate --tile


@dataclass(frozen=True)
class SamplerSettings:
    """How `forecast` draws samples (paper Sec. III-D defaults)."""

    sampler: str = "euler"  # "euler" (paper) or "dpmpp2m" (DPM-Solver++(2M), faster)
    steps: int = 10  # denoising steps
    guidance_scale: float = 2.0  # classifier-free guidance weight w: eps_u + w (eps_c - eps_u)
    # initial noise += context_mix * mean(context latents); None: what the weights were trained with
    # (DiffusionConfig.train_context_mix), else the paper's 0.1
    context_mix: float | None = None
