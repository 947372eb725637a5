"""Training entry points used by `vegediff train`: data selection, both stages, weights files.

Each entry point runs in one process or, under `torchrun`, in every process of the run (see
parallel.py); only rank 0 writes the weights file. A run stopped by its budget writes no weights
file: its result says `completed: false`, and the same command resumes it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelError
from ..model.ensemble import single_denoiser
from ..model.presets import ModelConfig, preset
from ..model.vegediff import VegeDiff
from ..model.weights import load_weights, save_weights
from ..progress import ProgressFactory, no_progress
from ..resources import check_model_size
from .diffusion_train import DiffusionTrainSettings, train_diffusion
from .engine import LoopResult, peak_memory_mib
from .index import meteo_coverage, select_sources, static_coverage, training_domain
from .order import split_batch
from .parallel import Runtime, processes
from .vae_train import VAETrainSettings, train_vae

log = logging.getLogger("vegediff.train")

DATA_LICENCES = (
    "Sentinel-2: Copernicus open data; E-OBS: non-commercial research and education only; "
    "EarthNet2021 / EarthNet2021x: CC-BY-NC-SA-4.0; ESA WorldCover, Geomorpho90m: CC-BY-4.0"
)


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


def _summary(stage: str, output: Path, result: LoopResult, settings, runtime: Runtime, files: list[str]) -> dict:
    return {
        "output": str(output) if result.completed else None, "stage": stage, "completed": result.completed,
        "step": result.step, "steps": settings.steps,
        "final_loss": float(np.mean(result.losses[-100:])) if result.losses else float("nan"),
        "processes": runtime.world, "global_batch": settings.batch,
        "windows_per_s": round(result.windows_per_s, 3),
        "peak_memory_mib": {k: round(v, 1) for k, v in peak_memory_mib().items()},
        "trained_on": files if len(files) <= 100 else files[:100] + [f"... {len(files) - 100} more"],
        "sources": len(files),
    }


def run_vae(
    data: list[Path], *, exclude: list[str], preset_name: str, settings: VAETrainSettings,
    run_dir: Path, output: Path, device: torch.device | str, progress: ProgressFactory = no_progress,
    index_cache: Path | None = None, held_out_seasons: dict[str, str] | None = None,
) -> dict:
    """Stage 1 on the sources under `data`; writes `output` (VAE, its statistics, the preset's untrained denoiser).
    A series named in `held_out_seasons` (file stem -> date) trains on its frames before that date only."""
    with processes(device) as runtime:
        split_batch(settings.batch, settings.micro_batch, runtime.world)  # a bad split fails before any reading
        run_dir.mkdir(parents=True, exist_ok=True)
        sources = select_sources(data, exclude, runtime=runtime, cache=index_cache or run_dir / "data-index.json",
                                 workers=settings.workers, progress=progress,
                                 held_out_seasons=held_out_seasons)
        files = [Path(s.path).name for s in sources]
        model, result = train_vae(sources, cfg=preset(preset_name), settings=settings, run_dir=run_dir,
                                  runtime=runtime, progress=progress)
        if result.completed and runtime.main:
            save_weights(model, output, metadata=_metadata("vae", files, exclude, result.losses,
                                                           {"vae_settings": vars_of(settings),
                                                            "held_out_seasons": held_out_seasons or {}}))
        return _summary("vae", output, result, settings, runtime, files)


def run_diffusion(
    data: list[Path], *, init: Path, exclude: list[str], settings: DiffusionTrainSettings,
    run_dir: Path, output: Path, device: torch.device | str, progress: ProgressFactory = no_progress,
    denoiser: ModelConfig | None = None, latent_cache: Path | None = None, index_cache: Path | None = None,
    held_out_seasons: dict[str, str] | None = None,
) -> dict:
    """Train the denoiser on the VAE of `init`. The denoiser starts from `init`'s own, or, with
    `denoiser`, from scratch (seeded) with that config's VegeNet and diffusion settings (its VAE
    part is ignored: the VAE and its latent statistics are `init`'s). Latents are cached in
    `latent_cache` (default: <run_dir>/latents; a folder shared by runs with the same VAE). A series
    named in `held_out_seasons` (file stem -> date) trains on its frames before that date only (validation)."""
    with processes(device) as runtime:
        split_batch(settings.batch, settings.micro_batch, runtime.world)
        run_dir.mkdir(parents=True, exist_ok=True)
        sources = select_sources(data, exclude, runtime=runtime, cache=index_cache or run_dir / "data-index.json",
                                 workers=settings.workers, progress=progress,
                                 held_out_seasons=held_out_seasons)
        files = [Path(s.path).name for s in sources]
        model, meta = _load_init(init, runtime.device)
        if denoiser is not None:
            check_model_size(denoiser, source=f"`preset` {denoiser.name}", copies=4)
            torch.manual_seed(settings.seed)
            model = with_new_denoiser(model, denoiser).to(runtime.device)
        model, result = train_diffusion(model, sources, settings=settings, run_dir=run_dir, runtime=runtime,
                                        latent_cache=latent_cache, progress=progress)
        if result.completed and runtime.main:
            extra = {"diffusion_settings": vars_of(settings),
                     "vae_trained_on": json.loads(meta.get("trained_on", "[]")),
                     "held_out_seasons": held_out_seasons or {},
                     "meteo_coverage": meteo_coverage(sources), "static_coverage": static_coverage(sources),
                     "training_domain": [entry.as_dict() for entry in training_domain(sources)],
                     "processes": runtime.world}
            save_weights(model, output, metadata=_metadata("vae+diffusion", files, exclude, result.losses, extra))
        return _summary("diffusion", output, result, settings, runtime, files)


def with_new_denoiser(model: VegeDiff, denoiser: ModelConfig) -> VegeDiff:
    """`model`'s trained VAE with a freshly initialised denoiser of `denoiser`'s VegeNet and diffusion config."""
    cfg = dataclasses.replace(model.cfg, name=denoiser.name, vegenet=denoiser.vegenet, diffusion=denoiser.diffusion,
                              denoisers=1)
    fresh = VegeDiff(cfg)
    fresh.vae.load_state_dict(model.vae.state_dict())
    return fresh


def _load_init(path: Path, device: torch.device):
    """The --init weights, their declared model size checked before it is built (vegediff_cli/resources.py)."""
    from ..model.weights import read_metadata

    try:
        cfg = ModelConfig.from_dict(json.loads(read_metadata(path)["config"]))
    except Exception:  # noqa: BLE001 - load_weights below names the problem (missing, unreadable, foreign)
        cfg = None
    if cfg is not None:
        check_model_size(cfg, source=str(path), copies=4)  # weights, gradients and two AdamW moments
    try:
        model, meta = load_weights(path, device=device)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path} is not usable weights ({reason})",
                         fix="pass the weights file written by `vegediff train vae`") from exc
    if model.cfg.denoisers > 1:  # a combined file (model/ensemble.py): training goes on with its first denoiser
        log.info("%s holds %d denoisers; training uses the first", path, model.cfg.denoisers)
        model = single_denoiser(model)
    return model, meta


def vars_of(settings) -> dict:
    return dataclasses.asdict(settings)
