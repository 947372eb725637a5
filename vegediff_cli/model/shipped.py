"""Which weights a run uses, and what they are: found and described without importing torch.

A wheel carries the shipped weights and model card inside the package (``vegediff_cli/weights/``,
copied there from the top-level ``weights/`` by ``setup.py`` at build time); a clone or editable
install reads ``weights/`` of the checkout. ``$VEGEDIFF_WEIGHTS`` overrides both.

A safetensors file starts with an 8-byte little-endian header length and a JSON header whose
``__metadata__`` holds the strings ``save_weights`` wrote (model/weights.py), so ``vegediff
--version`` and ``vegediff info --weights`` read them with the standard library alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

ENV_WEIGHTS = "VEGEDIFF_WEIGHTS"
SHIPPED_WEIGHTS = "vegediff-small.safetensors"
MODEL_CARD = "MODEL_CARD.md"
PACKAGED_DIR = "weights"  # inside the installed package (a wheel); top-level weights/ in a checkout
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on the JSON header


def shipped_weights_dir() -> Path:
    """The folder holding the shipped weights: inside the package when installed from a wheel, else the checkout's."""
    package = Path(__file__).resolve().parents[1]  # .../vegediff_cli
    packaged = package / PACKAGED_DIR
    if (packaged / SHIPPED_WEIGHTS).exists():
        return packaged
    return package.parent / PACKAGED_DIR


def shipped_weights() -> Path:
    """The shipped vegediff-small.safetensors (it may be missing in a broken install; callers check)."""
    return shipped_weights_dir() / SHIPPED_WEIGHTS


def default_weights() -> Path:
    """$VEGEDIFF_WEIGHTS when set, else the shipped weights."""
    env = os.environ.get(ENV_WEIGHTS)
    return Path(env) if env else shipped_weights()


def weights_source(path: str | os.PathLike | None) -> str:
    """How `path` was chosen, in the words of the options: --weights, $VEGEDIFF_WEIGHTS or shipped."""
    if path is not None:
        return "--weights"
    return f"${ENV_WEIGHTS}" if os.environ.get(ENV_WEIGHTS) else "shipped"


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (forecast outputs record its first 16 characters as ``weights_sha256``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def header_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file; ValueError when it is not one."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError("file is shorter than a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"header length {length} is not plausible")
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return {str(k): str(v) for k, v in (header.get("__metadata__") or {}).items()}


def _domain(meta: dict[str, str]) -> list[dict] | None:
    """The recorded training domain (model/domain.py), one dict per sequence; None when absent or unreadable."""
    from .domain import read_domain

    try:
        entries = read_domain(meta)
    except ValueError:
        return None
    return None if entries is None else [e.as_dict() for e in entries]


def _count(text: str | None) -> int | None:
    try:
        return len(json.loads(text)) if text else None
    except (ValueError, TypeError):
        return None


def _number(text: str | None) -> float | str | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return text


def describe_weights(path: str | os.PathLike, *, source: str = "shipped") -> dict:
    """What a weights file is: path, size, SHA-256, preset and a summary of its training metadata.

    Raises OSError when the file cannot be read and ValueError when it is not a safetensors file.
    """
    path = Path(path).resolve()
    meta = header_metadata(path)
    try:
        config = json.loads(meta.get("config", "{}"))
        preset, denoisers = config.get("name"), config.get("denoisers", 1)
        meteorology = config.get("vegenet", {}).get("meteorology", "absolute")  # files before the key: absolute
    except (ValueError, AttributeError):
        preset = denoisers = meteorology = None
    card = path.parent / MODEL_CARD
    return {
        "path": str(path),
        "source": source,
        "sha256": sha256(path),
        "size_bytes": path.stat().st_size,
        "format": meta.get("format"),
        "preset": preset,
        "denoisers": denoisers,  # model/ensemble.py: members are drawn by each in turn
        "meteorology": meteorology,  # model/presets.py VegeNetConfig.meteorology: how the weather enters
        "stage": meta.get("stage"),
        "created": meta.get("created"),
        "selected_step": meta.get("selected_step"),
        "selected_weights": meta.get("selected_weights"),
        "trained_on_sequences": _count(meta.get("trained_on")),
        "held_out": json.loads(meta["held_out"]) if meta.get("held_out", "").startswith("[") else meta.get("held_out"),
        "validation_cube": meta.get("validation_cube"),
        "validation_rmse": _number(meta.get("validation_rmse")),
        "validation_persistence_rmse": _number(meta.get("validation_persistence_rmse")),
        "validation_nse": _number(meta.get("validation_nse")),
        "recommended_guidance": _number(meta.get("recommended_guidance")),
        # metadata keys of pipeline/forecast/calibration.py (ADDED_KEY, SCALE_KEY)
        "training_domain": _domain(meta),  # model/domain.py: where and when the weights learned
        "spread_calibration": ("added variance per lead" if meta.get("spread_added_variance") else
                               "factor per lead" if meta.get("spread_inflation") else None),
        "data_licences": meta.get("data_licences"),
        "model_card": str(card) if card.exists() else None,
    }
