"""Training entry points used by `vegediff train`: data selection, both stages, weights files."""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelError, NoValidDataError, UsageError
from ..model.presets import ModelConfig, preset
from ..model.vegediff import VegeDiff
from ..model.weights import load_weights, save_weights
from ..progress import ProgressFactory, no_progress
from .diffusion_train import DiffusionTrainSettings, train_diffusion
from .sequences import Sequence, discover, load_sequence, meteo_coverage
from .vae_train import VAETrainSettings, train_vae
from .validation import training_part

log = logging.getLogger("vegediff.train")

DATA_LICENCES = (
    "Sentinel-2: Copernicus open data; E-OBS: non-commercial research and education only; "
    "EarthNet2021 / EarthNet2021x: CC-BY-NC-SA-4.0; ESA WorldCover, Geomorpho90m: CC-BY-4.0"
)


def select_sequences(data: list[Path], exclude: list[str], held_out_seasons: dict[str, str] | None = None
                     ) -> tuple[list[Sequence], list[str]]:
    """Load every training source under `data` whose file name contains none of `exclude`; a series
    named in `held_out_seasons` (file stem -> date) loses its frames from that date on (validation)."""
    paths = discover(data)
    kept = [p for p in paths if not any(pattern in p.name for pattern in exclude)]
    if not kept:
        raise NoValidDataError(f"no training data found under {', '.join(map(str, data))}",
                               fix="pass folders with cubes, minicubes or Sentinel-2 series via --data")
    for pattern in exclude:
        if not any(pattern in p.name for p in paths):
            raise UsageError(f"--exclude '{pattern}' matches no training file", fix="check the hold-out name")
    sequences = [training_part(load_sequence(p), held_out_seasons or {}) for p in kept]
    log.info("training on %d sequences: %s", len(sequences), ", ".join(s.name for s in sequences))
    return sequences, [p.name for p in kept]


def _metadata(stage: str, files: list[str], exclude: list[str], losses: list[float], extra: dict) -> dict[str, str]:
    return {
        "stage": stage,
        "trained_on": json.dumps(files),
        "held_out": json.dumps(exclude),
        "final_loss": f"{np.mean(losses[-100:]):.5f}" if losses else "nan",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_licences": DATA_LICENCES,
        **{k: json.dumps(v) for k, v in extra.items()},
    }


def run_vae(
    data: list[Path], *, exclude: list[str], preset_name: str, settings: VAETrainSettings,
    run_dir: Path, output: Path, device: torch.device, progress: ProgressFactory = no_progress,
    held_out_seasons: dict[str, str] | None = None,
) -> dict:
    sequences, files = select_sequences(data, exclude, held_out_seasons)
    run_dir.mkdir(parents=True, exist_ok=True)
    model, losses = train_vae(sequences, cfg=preset(preset_name), settings=settings, run_dir=run_dir,
                              device=device, progress=progress)
    save_weights(model, output, metadata=_metadata("vae", files, exclude, losses, {"vae_settings": vars_of(settings)}))
    return {"output": str(output), "stage": "vae", "steps": settings.steps, "final_loss": float(np.mean(losses[-100:])),
            "trained_on": files}


def run_diffusion(
    data: list[Path], *, init: Path, exclude: list[str], settings: DiffusionTrainSettings,
    run_dir: Path, output: Path, device: torch.device, progress: ProgressFactory = no_progress,
    denoiser: ModelConfig | None = None,
    held_out_seasons: dict[str, str] | None = None,
) -> dict:
    """Train the denoiser on the VAE of `init`. The denoiser starts from `init`'s own, or, with
    `denoiser`, from scratch with that config's VegeNet and diffusion settings (its VAE part is
    ignored: the VAE and its latent statistics are `init`'s)."""
    sequences, files = select_sequences(data, exclude, held_out_seasons)
    run_dir.mkdir(parents=True, exist_ok=True)
    model, meta = _load_init(init, device)
    if denoiser is not None:
        model = with_new_denoiser(model, denoiser).to(device)
    model, losses = train_diffusion(model, sequences, settings=settings, run_dir=run_dir, device=device,
                                    progress=progress)
    extra = {"diffusion_settings": vars_of(settings), "vae_trained_on": json.loads(meta.get("trained_on", "[]")),
             "held_out_seasons": held_out_seasons or {},
             "meteo_coverage": meteo_coverage(sequences)}
    save_weights(model, output, metadata=_metadata("vae+diffusion", files, exclude, losses, extra))
    return {"output": str(output), "stage": "diffusion", "steps": settings.steps,
            "final_loss": float(np.mean(losses[-100:])), "trained_on": files}


def with_new_denoiser(model: VegeDiff, denoiser: ModelConfig) -> VegeDiff:
    """`model`'s trained VAE with a freshly initialised denoiser of `denoiser`'s VegeNet and diffusion config."""
    cfg = dataclasses.replace(model.cfg, name=denoiser.name, vegenet=denoiser.vegenet, diffusion=denoiser.diffusion)
    fresh = VegeDiff(cfg)
    fresh.vae.load_state_dict(model.vae.state_dict())
    return fresh


def _load_init(path: Path, device: torch.device):
    """The --init weights, their declared model size checked before it is built (vegediff_cli/resources.py)."""
    from ..model.weights import read_metadata
    from ..resources import check_model_size

    try:
        cfg = ModelConfig.from_dict(json.loads(read_metadata(path)["config"]))
    except Exception:  # noqa: BLE001 - load_weights below names the problem (missing, unreadable, foreign)
        cfg = None
    if cfg is not None:
        check_model_size(cfg, source=str(path), copies=4)  # weights, gradients and two AdamW moments
    try:
        return load_weights(path, device=device)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path} is not usable weights ({reason})",
                         fix="pass the weights file written by `vegediff train vae`") from exc


def vars_of(settings) -> dict:
    import dataclasses

    return dataclasses.asdict(settings)
