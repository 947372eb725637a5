"""Which weights a forecast uses, and whether they fit the cube: checked before any work starts."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from ...config import BANDS, METEO_CHANNELS, STATIC_LAYERS
from ...errors import InputNotFoundError, ModelError
from ...model.domain import DomainEntry, read_domain
from ...model.presets import ModelConfig
from ...model.shipped import ENV_WEIGHTS, SHIPPED_WEIGHTS, default_weights, shipped_weights  # noqa: F401 (re-exported)
from ...model.vegediff import VegeDiff
from ...model.weights import load_weights, read_metadata
from ...resources import check_model_size
from .calibration import SpreadCalibration, calibration_from_metadata

STATIC_CHANNELS = len(STATIC_LAYERS)  # static layers of a cube, in model/inputs.py STATIC_ORDER


def resolve_weights(path: str | os.PathLike | None) -> Path:
    """The weights file to use; a one-line error naming every way to provide one when it is missing."""
    chosen = Path(path) if path is not None else default_weights()
    if not chosen.exists():
        how = "`weights`" if path is not None else (f"${ENV_WEIGHTS}" if os.environ.get(ENV_WEIGHTS) else "the shipped weights")
        raise InputNotFoundError(
            f"weights file {chosen} ({how}) does not exist",
            fix=f"pass `weights` PATH, set {ENV_WEIGHTS}, or train weights with `vegediff train`")
    return chosen


PAPER_GUIDANCE = 2.0  # classifier-free guidance scale of the paper (Sec. III-D)


def default_guidance(weights: str | os.PathLike | None) -> float:
    """The guidance scale recorded in the weights (`recommended_guidance`, chosen on validation data
    by scripts/select_weights.py), else the paper's. Unreadable or missing weights: the paper's
    (the run itself then reports the weights problem)."""
    try:
        value = read_metadata(resolve_weights(weights)).get("recommended_guidance")
        scale = float(value) if value is not None else PAPER_GUIDANCE
        return scale if math.isfinite(scale) and scale >= 0 else PAPER_GUIDANCE
    except Exception:  # noqa: BLE001 - a missing or foreign file is reported by the forecast itself
        return PAPER_GUIDANCE


MIN_METEO_COVERAGE = 0.5  # a variable present in fewer of the training frames is left out of forecasts


def ignored_meteo_variables(weights: str | os.PathLike) -> tuple[str, ...]:
    """E-OBS variables the denoiser saw in fewer than MIN_METEO_COVERAGE of its conditioned training
    frames (the file's `meteo_coverage`; none for files without it). A forecast sets them to the
    E-OBS mean, as in training, rather than feeding values the model never learned to read: the
    shipped weights saw humidity, wind and radiation in 1 of 7 conditioned sequences."""
    return _low_coverage(weights, "meteo_coverage", MIN_METEO_COVERAGE)


def _low_coverage(weights: str | os.PathLike, key: str, threshold: float) -> tuple[str, ...]:
    """Names whose fraction in the weights' `key` metadata (JSON: name -> fraction) is below `threshold`,
    in the stored order; none without the key."""
    text = _metadata(weights).get(key, "{}")
    try:
        coverage = json.loads(text)
        return tuple(str(name) for name, fraction in coverage.items() if float(fraction) < threshold)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelError(f"{weights} has malformed metadata: {key} {text[:80]!r}",
                         fix="re-export the weights with `vegediff train` or scripts/select_weights.py") from exc


MIN_STATIC_COVERAGE = MIN_METEO_COVERAGE  # a static layer held by fewer of the training frames is left out too


def ignored_static_layers(weights: str | os.PathLike) -> tuple[str, ...]:
    """Static layers the denoiser saw in fewer than MIN_STATIC_COVERAGE of its conditioned training frames
    (the file's `static_coverage`; none for files without it). A forecast leaves them out, as training
    did for the sequences without them (model/inputs.normalise_static: a missing DEM copies an available
    one, a missing land cover or geomorphons layer is 0): the shipped weights saw land cover and
    geomorphons with one site's sequences only (1 of 7), and the validation cube is forecast better
    without them (weights/MODEL_CARD.md)."""
    low = _low_coverage(weights, "static_coverage", MIN_STATIC_COVERAGE)
    return tuple(name for name in STATIC_LAYERS if name in low)


def training_domain(weights: str | os.PathLike) -> list[DomainEntry] | None:
    """The training sequences' latitudes, forecast starts and whether they carried weather (the file's
    `training_domain`, model/domain.py); None for files without it."""
    try:
        return read_domain(_metadata(weights))
    except ValueError as exc:
        raise ModelError(f"{weights} has malformed metadata: {exc}",
                         fix="re-export the weights with `vegediff train` or scripts/add_training_domain.py") from exc


def _metadata(path: str | os.PathLike) -> dict[str, str]:
    try:
        return read_metadata(path)
    except Exception as exc:  # safetensors raises its own error type for files that are not safetensors
        raise ModelError(f"{path} is not a readable weights file ({str(exc)[:160]})",
                         fix="re-download or retrain it") from exc


def spread_calibration(weights: str | os.PathLike, horizon: int) -> SpreadCalibration | None:
    """How the weights widen their members per forecast step (fitted on validation data by
    scripts/select_weights.py, pipeline/forecast/calibration.py); None for files without a calibration."""
    return calibration_from_metadata(read_metadata(weights), horizon)


def model_config(path: str | os.PathLike) -> ModelConfig:
    """The config stored in a weights file, read without loading its tensors, checked against the cube format."""
    meta = _metadata(path)
    try:
        cfg = ModelConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path} is not a vegediff weights file ({type(exc).__name__}: {str(exc)[:160]})",
                         fix="use a file written by `vegediff train`") from exc
    check_model_size(cfg, source=str(path))  # before any tensor: a config may declare a huge model
    check_compatible(cfg, source=str(path))
    return cfg


def check_compatible(cfg: ModelConfig, *, source: str) -> None:
    """Weights must read the cube's 4 bands, 24 meteorology channels and 5 static layers."""
    problems = []
    if cfg.vae.in_channels != len(BANDS):
        problems.append(f"{cfg.vae.in_channels} input bands (the cube has {len(BANDS)}: {' '.join(BANDS)})")
    if cfg.vegenet.meteo_channels != METEO_CHANNELS:
        problems.append(f"{cfg.vegenet.meteo_channels} meteorology channels (the cube has {METEO_CHANNELS})")
    if cfg.vegenet.static_channels != STATIC_CHANNELS:
        problems.append(f"{cfg.vegenet.static_channels} static layers (the cube has {STATIC_CHANNELS})")
    if problems:
        raise ModelError(f"{source} does not match the cube: the model expects {'; '.join(problems)}",
                         fix="use weights trained on B02 B03 B04 B8A cubes, e.g. the shipped vegediff-small")


def load_model(path: str | os.PathLike, device: torch.device) -> VegeDiff:
    """Load and check weights onto `device` (eval mode), VAE convolutions in channels-last layout.

    Channels-last lets oneDNN (CPU) and cuDNN (GPU) run the VAE's 3 x 3 convolutions without
    layout conversions: on this project's 2-core CPU, decoding 20 frames takes 30 % less time
    (0.88 -> 0.62 CPU s per chip, small preset; results equal to 1e-6).
    """
    model_config(path)  # fails fast, with the cube-specific message, before reading tensors
    try:
        model, _ = load_weights(path, device=device)
    except RuntimeError as exc:  # tensors of other shapes than the config declares
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path} holds tensors that do not fit its own config ({reason})",
                         fix="retrain or re-export the weights") from exc
    bad = [name for name, tensor in model.state_dict().items()
           if tensor.dtype.is_floating_point and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise ModelError(f"{path} holds NaN or infinite weights ({len(bad)} tensors, first {bad[0]})",
                         fix="the training diverged or the file is damaged: use another weights file")
    model.vae.to(memory_format=torch.channels_last)
    return model
