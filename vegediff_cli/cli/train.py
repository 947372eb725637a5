"""`vegediff train`: train the vegetation VAE, then the VegeNet denoiser, on real cubes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..training.settings import DiffusionTrainSettings, VAETrainSettings
from .options import JsonOpt, QuietOpt, emit_json, finite, setup

DataOpt = Annotated[list[Path], typer.Option("--data", "-d", help="Folder or file of training data (repeatable).")]
ExcludeOpt = Annotated[
    list[str] | None, typer.Option("--exclude", help="Hold out files whose name contains this text (repeatable).")
]
RunDirOpt = Annotated[Path, typer.Option(help="Folder for resumable checkpoints; a rerun resumes from it.")]
DeviceOpt = Annotated[str, typer.Option(help="auto (GPU when present), cpu or cuda.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the data sampling and the initial weights.", min=0, max=2**63 - 1)]

app = typer.Typer(help="Train the vegetation VAE (stage 1) and the VegeNet denoiser (stage 2).", no_args_is_help=True)


@app.command("vae")
def vae(
    data: DataOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Weights file to write (.safetensors).")],
    exclude: ExcludeOpt = None,
    preset: Annotated[str, typer.Option(help="Model size: small (CPU), paper (GPU), tiny (tests).")] = "small",
    steps: Annotated[int, typer.Option(min=1)] = VAETrainSettings.steps,
    batch: Annotated[int, typer.Option(min=1)] = VAETrainSettings.batch,
    crop: Annotated[int, typer.Option(min=16, help="Crop side in pixels, a multiple of 8.")] = VAETrainSettings.crop,
    seed: SeedOpt = 0,
    run_dir: RunDirOpt = Path("runs/vae"),
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Stage 1: train the VAE on every clear Sentinel-2 frame of the training data."""
    from ..model.device import pick_device
    from ..training.run import run_vae

    progress = setup(quiet)
    settings = VAETrainSettings(steps=steps, batch=batch, crop=crop, seed=seed)
    result = run_vae(data, exclude=exclude or [], preset_name=preset, settings=settings, run_dir=run_dir,
                     output=output, device=pick_device(device), progress=progress)
    if json_out:
        emit_json(result)


@app.command("diffusion")
def diffusion(
    data: DataOpt,
    init: Annotated[Path, typer.Option(help="Weights file with the trained VAE (from `vegediff train vae`).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Weights file to write (.safetensors).")],
    exclude: ExcludeOpt = None,
    steps: Annotated[int, typer.Option(min=1)] = DiffusionTrainSettings.steps,
    batch: Annotated[int, typer.Option(min=1)] = DiffusionTrainSettings.batch,
    lr: Annotated[float, typer.Option(min=0.0)] = DiffusionTrainSettings.lr,
    seed: SeedOpt = 0,
    run_dir: RunDirOpt = Path("runs/diffusion"),
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Stage 2: train the denoiser on latent sequences (VAE frozen); writes VAE + denoiser weights."""
    from ..model.device import pick_device
    from ..training.run import run_diffusion

    progress = setup(quiet)
    finite(lr, "--lr")
    settings = DiffusionTrainSettings(steps=steps, batch=batch, lr=lr, seed=seed)
    result = run_diffusion(data, init=init, exclude=exclude or [], settings=settings, run_dir=run_dir,
                           output=output, device=pick_device(device), progress=progress)
    if json_out:
        emit_json(result)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="train")
