"""Weights files: safetensors tensors plus the model config and provenance as metadata.

A file carries everything needed to rebuild its model (`ModelConfig` as JSON), so
``load_weights(path)`` needs nothing else. Metadata values are strings (a safetensors rule).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import atomic_file
from ..errors import InputNotFoundError, ModelError
from .presets import ModelConfig
from .vegediff import VegeDiff

FORMAT = "vegediff-weights/1"


def save_weights(model: VegeDiff, path: str | os.PathLike, *, metadata: dict[str, str] | None = None) -> Path:
    """Write `model` to `path` (atomic); `metadata` adds provenance such as training data (its `format` and
    `config`, e.g. copied from another file's metadata, never replace the model's own)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {**(metadata or {}), "format": FORMAT, "config": json.dumps(model.cfg.to_dict())}
    final = Path(path)
    with atomic_file(final) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return final


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_weights(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[VegeDiff, dict[str, str]]:
    """Rebuild the model stored in `path`; returns (model in eval mode, metadata)."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"weights file {path} does not exist", fix="pass `weights` PATH or reinstall vegediff")
    try:
        meta = read_metadata(path)
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable weights file ({exc})", fix="re-download or retrain it") from exc
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path} is not a vegediff weights file (format {meta.get('format')!r})",
                         fix="use a file written by `vegediff train`")
    try:
        model = VegeDiff(ModelConfig.from_dict(json.loads(meta["config"])))
    except (KeyError, TypeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise ModelError(f"{path} holds an invalid model configuration ({exc})",
                         fix="retrain or re-export the weights") from exc
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ModelError(f"{path} does not match its own config (missing {missing[:3]}, unexpected {unexpected[:3]})",
                         fix="retrain or re-export the weights")
    return model.to(device).eval(), meta


def file_digest(path: str | os.PathLike) -> str:
    """Short SHA-256 of a weights file, recorded in forecast outputs for provenance."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
