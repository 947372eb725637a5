"""`vegediff train`: train the vegetation VAE, then the VegeNet denoiser, on real cubes.

One process: `vegediff train diffusion ...`. Several (GPUs, or CPU processes): the same command
under torchrun, e.g. `torchrun --standalone --nproc-per-node 4 -m vegediff_cli train diffusion ...`;
--batch is the global batch either way (docs/train.md).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..training.settings import SAMPLINGS, DiffusionTrainSettings, VAETrainSettings
from .options import JsonOpt, QuietOpt, emit_json, finite, setup, with_options

DataOpt = Annotated[list[Path], typer.Option("--data", "-d", help="Folder or file of training data (repeatable).")]
ExcludeOpt = Annotated[
    list[str] | None, typer.Option("--exclude", help="Hold out files whose name contains this text (repeatable).")
]
RunDirOpt = Annotated[Path, typer.Option(help="Folder for resumable checkpoints and the log; a rerun resumes from it.")]
DeviceOpt = Annotated[str, typer.Option(help="auto (GPU when present), cpu or cuda; under torchrun each process "
                                             "takes the GPU of its local rank.")]
MicroOpt = Annotated[int, typer.Option("--micro-batch", min=0, help="Items per forward/backward on each process "
                                       "(0: its whole share of --batch); smaller values accumulate gradients.")]
WorkersOpt = Annotated[int, typer.Option(min=0, help="DataLoader worker processes per training process (0: none).")]
PrecisionOpt = Annotated[str, typer.Option(help="Autocast: auto (bf16 on GPUs and CPUs with native bf16), fp32, bf16.")]
BudgetStepsOpt = Annotated[int, typer.Option("--budget-steps", min=0, help="Stop after this many steps in this run "
                                             "(checkpointed; rerun to resume). 0: no limit.")]
BudgetTimeOpt = Annotated[float, typer.Option("--budget-time", min=0.0, help="Stop after this many seconds "
                                              "(checkpointed; rerun to resume). 0: no limit.")]
LogEveryOpt = Annotated[int, typer.Option("--log-every", min=1, help="Steps between lines of RUN_DIR/<stage>-log.jsonl "
                                          "(loss, learning rate, windows per second, epochs).")]
IndexOpt = Annotated[Path | None, typer.Option("--index-cache", help="JSON file describing the training files, "
                                               "reusable by other runs (default: RUN_DIR/data-index.json).")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the data order and the initial weights.", min=0, max=2**63 - 1)]



@dataclasses.dataclass(frozen=True)
class TrainRunOptions:
    """How a training run runs: the options both stages share (cli/options.with_options)."""

    seed: SeedOpt = 0
    device: DeviceOpt = "auto"
    precision: PrecisionOpt = "auto"
    workers: WorkersOpt = 0
    budget_steps: BudgetStepsOpt = 0
    budget_time: BudgetTimeOpt = 0.0
    log_every: LogEveryOpt = 10
    index_cache: IndexOpt = None

    def settings(self) -> dict:
        """The fields of VAETrainSettings / DiffusionTrainSettings these options set."""
        return {"seed": self.seed, "precision": self.precision, "workers": self.workers,
                "budget_steps": self.budget_steps, "budget_seconds": self.budget_time, "log_every": self.log_every}


app = typer.Typer(help="Train the vegetation VAE (stage 1) and the VegeNet denoiser (stage 2).", no_args_is_help=True)


def _emit(result: dict, json_out: bool) -> None:
    from ..training.parallel import is_main_process

    if json_out and is_main_process():  # under torchrun, one summary from rank 0
        emit_json(result)


@app.command("vae")
@with_options(TrainRunOptions, into="run")
def vae(
    data: DataOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Weights file to write (.safetensors).")],
    exclude: ExcludeOpt = None,
    preset: Annotated[str, typer.Option(help="Model size: small (CPU), paper (GPU), tiny (tests).")] = "small",
    steps: Annotated[int, typer.Option(min=1)] = VAETrainSettings.steps,
    batch: Annotated[int, typer.Option(min=1, help="Crops per step over all processes.")] = VAETrainSettings.batch,
    crop: Annotated[int, typer.Option(min=16, help="Crop side in pixels, a multiple of 8.")] = VAETrainSettings.crop,
    micro_batch: MicroOpt = 0,
    run_dir: RunDirOpt = Path("runs/vae"),
    run: TrainRunOptions = TrainRunOptions(),
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Stage 1: train the VAE on every clear Sentinel-2 frame of the training data."""
    from ..model.device import check_precision
    from ..model.presets import preset as preset_config
    from ..training.run import run_vae

    progress = setup(quiet)
    preset_config(preset)
    check_precision(run.precision)
    finite(run.budget_time, "--budget-time")
    settings = VAETrainSettings(steps=steps, batch=batch, crop=crop, micro_batch=micro_batch, **run.settings())
    result = run_vae(data, exclude=exclude or [], preset_name=preset, settings=settings, run_dir=run_dir,
                     output=output, device=run.device, progress=progress, index_cache=run.index_cache)
    _emit(result, json_out)


@app.command("diffusion")
@with_options(TrainRunOptions, into="run")
def diffusion(
    data: DataOpt,
    init: Annotated[Path, typer.Option(help="Weights file with the trained VAE (from `vegediff train vae`).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Weights file to write (.safetensors).")],
    exclude: ExcludeOpt = None,
    preset: Annotated[str | None, typer.Option(help="Start a fresh denoiser of this preset (small, paper, tiny) "
                                               "on --init's VAE; default: --init's own denoiser.")] = None,
    steps: Annotated[int, typer.Option(min=1)] = DiffusionTrainSettings.steps,
    batch: Annotated[int, typer.Option(min=1, help="Windows per step over all processes.")] = DiffusionTrainSettings.batch,
    micro_batch: MicroOpt = 0,
    lr: Annotated[float, typer.Option(min=0.0)] = DiffusionTrainSettings.lr,
    warmup: Annotated[int, typer.Option(min=1, help="Linear warm-up steps.")] = DiffusionTrainSettings.warmup,
    sampling: Annotated[str, typer.Option(help="Window order: sqrt (sequences by the square root of their windows, "
                                          "with replacement) or epoch (each window once per epoch).")] = "sqrt",
    series_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of steps drawn from spatial sizes "
                                                   "other than the main one.")] = DiffusionTrainSettings.series_fraction,
    keep_every: Annotated[int, typer.Option(min=0, help="Keep a checkpoint every N steps for selection.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(min=1)] = DiffusionTrainSettings.checkpoint_every,
    run_dir: RunDirOpt = Path("runs/diffusion"),
    latent_cache: Annotated[Path | None, typer.Option(help="Folder of encoded latents, shareable by runs with the "
                                                      "same VAE (default: RUN_DIR/latents).")] = None,
    run: TrainRunOptions = TrainRunOptions(),
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Stage 2: train the denoiser on latent sequences (VAE frozen); writes VAE + denoiser weights."""
    from ..model.device import check_precision
    from ..model.presets import preset as preset_config
    from ..training.run import run_diffusion

    progress = setup(quiet)
    check_precision(run.precision)
    finite(lr, "--lr")
    finite(run.budget_time, "--budget-time")
    finite(series_fraction, "--series-fraction")
    if sampling not in SAMPLINGS:
        raise UsageError(f"--sampling '{sampling}' is not one of {', '.join(SAMPLINGS)}")
    denoiser = preset_config(preset) if preset else None
    settings = DiffusionTrainSettings(steps=steps, batch=batch, micro_batch=micro_batch, lr=lr, warmup=warmup,
                                      sampling=sampling, series_fraction=series_fraction, keep_every=keep_every,
                                      checkpoint_every=checkpoint_every, **run.settings())
    result = run_diffusion(data, init=init, exclude=exclude or [], settings=settings, run_dir=run_dir,
                           output=output, device=run.device, progress=progress, denoiser=denoiser,
                           latent_cache=latent_cache, index_cache=run.index_cache)
    _emit(result, json_out)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="train")
