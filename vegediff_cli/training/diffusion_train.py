"""Stage 2: train the VegeNet denoiser on VAE latents of real sequences (paper Sec. III-D).

Sequences with meteorology or static layers train both branches (10 % condition dropout);
series without either (plain Sentinel-2 time series) train the unconditional branch only; the
date features are never dropped. The VAE is frozen: every sequence is encoded once, under its
8 dihedral transforms, into the latent cache (latent_cache.py), and the windows of each step
(order.py) are read from it by DataLoader workers. The loop (engine.py) runs on one process or
many (torchrun), resumable from the run folder.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..diffusion.training import diffusion_loss
from ..model.vegediff import VegeDiff
from ..progress import ProgressFactory, no_progress
from .engine import LoopResult, LoopSettings, Trainer
from .index import SourceInfo, fingerprint
from .latent_cache import LatentWindows, build_latent_cache
from .order import StepBatches, WindowOrder, split_batch
from .parallel import Runtime
from .settings import DiffusionTrainSettings

log = logging.getLogger("vegediff.train")


def learning_rate(step: int, settings: DiffusionTrainSettings) -> float:
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def loop_settings(settings) -> LoopSettings:
    """The engine's part of a stage's settings."""
    return LoopSettings(steps=settings.steps, batch=settings.batch, micro_batch=settings.micro_batch,
                        precision=settings.precision, checkpoint_every=settings.checkpoint_every,
                        keep_every=getattr(settings, "keep_every", 0), budget_steps=settings.budget_steps,
                        budget_seconds=settings.budget_seconds, log_every=settings.log_every)


def train_diffusion(
    model: VegeDiff,
    sources: list[SourceInfo],
    *,
    settings: DiffusionTrainSettings,
    run_dir: Path,
    runtime: Runtime,
    latent_cache: Path | None = None,
    progress: ProgressFactory = no_progress,
) -> tuple[VegeDiff, LoopResult]:
    """Train (or resume) the denoiser of `model` (its VAE frozen); EMA weights at the end of the schedule."""
    _, micro_batches = split_batch(settings.batch, settings.micro_batch, runtime.world)
    model = model.to(runtime.device).eval()
    for p in model.vae.parameters():
        p.requires_grad_(False)
    folder = latent_cache or run_dir / "latents"
    stems = build_latent_cache(model, sources, folder, runtime=runtime, workers=settings.workers, progress=progress)
    order = WindowOrder(sources, batch=settings.batch, steps=settings.steps, seed=settings.seed,
                        series_fraction=settings.series_fraction, sampling=settings.sampling)
    log.info("diffusion: %d windows of side %d (+ %s), %.0f steps per epoch, %d process(es) x %d micro-batch(es)",
             order.windows(order.main), order.main, {s: order.windows(s) for s in order.others} or "no other size",
             order.steps_per_epoch(), runtime.world, micro_batches)
    data_id = fingerprint(sources)

    def position(step: int) -> dict:
        return {**order.position(step), "data": data_id}

    net = model.vegenet
    trainer = Trainer("diffusion", net, state_key="vegenet", runtime=runtime, run_dir=run_dir,
                      settings=loop_settings(settings), lr=lambda step: learning_rate(step, settings),
                      weight_decay=settings.weight_decay, ema_decay=settings.ema_decay, progress=progress)
    start = trainer.resume(position)
    plan = StepBatches(lambda step: order.batch_of(step)[1], batch=settings.batch, micro_batch=settings.micro_batch,
                       first=start, last=settings.steps, runtime=runtime)
    windows = LatentWindows(folder, stems, seed=settings.seed, train_steps=model.cfg.diffusion.train_steps)
    loader = DataLoader(windows, batch_sampler=plan, num_workers=settings.workers,
                        pin_memory=runtime.device.type == "cuda", persistent_workers=False)
    dates = bool(net.cfg.date_channels)

    def loss(denoiser: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        context, future = model.to_diffusion_space(batch["context"], batch["future"])
        return diffusion_loss(
            denoiser, future, context=context, meteo=batch["meteo"], static=batch["static"],
            loss_mask=batch["weights"], conditioned=batch["conditioned"], alphas_cumprod=model.alphas_cumprod,
            cfg=model.cfg.diffusion, dates=batch["dates"] if dates else None, timesteps=batch["timestep"],
            noise=batch["noise"], dropout_draw=batch["dropout_draw"],
        )

    result = trainer.fit(loader, loss, micro_batches=micro_batches, position=position)
    if result.completed:
        net.load_state_dict(trainer.ema.state_dict())
    return model.eval(), result
