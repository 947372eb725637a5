"""Stage 2: train the VegeNet denoiser on VAE latents of real sequences (paper Sec. III-D).

Sequences with meteorology or static layers train both branches (10 % condition dropout);
series without either (plain Sentinel-2 time series) train the unconditional branch only.
The VAE is frozen; latents of all augmentations are computed once up front.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ..diffusion.training import diffusion_loss
from ..model.device import autocast
from ..model.vegediff import VegeDiff
from ..progress import ProgressFactory, no_progress
from .checkpoint import EMA, load_checkpoint, restore, restore_rng, rng_state, save_checkpoint
from .sequences import Sequence
from .settings import DiffusionTrainSettings
from .windows import EncodedSequence, encode_sequence, sample_batch

log = logging.getLogger("vegediff.train")


def learning_rate(step: int, settings: DiffusionTrainSettings) -> float:
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def group_by_size(encoded: list[EncodedSequence]) -> dict[int, list[EncodedSequence]]:
    groups: dict[int, list[EncodedSequence]] = defaultdict(list)
    for seq in encoded:
        groups[seq.latents.shape[-1]].append(seq)
    return dict(groups)


def train_diffusion(
    model: VegeDiff,
    sequences: list[Sequence],
    *,
    settings: DiffusionTrainSettings,
    run_dir: Path,
    device: torch.device,
    progress: ProgressFactory = no_progress,
) -> tuple[VegeDiff, list[float]]:
    """Train (or resume) the denoiser of `model` (its VAE is used frozen); EMA weights at the end."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = model.to(device).eval()
    for p in model.vae.parameters():
        p.requires_grad_(False)
    with progress(len(sequences), "encode sequences") as bar:
        encoded = []
        for seq in sequences:
            encoded.append(encode_sequence(seq, model, device=device))
            bar.update(1)
    groups = group_by_size(encoded)
    main_size = max(groups, key=lambda size: sum(s.conditioned for s in groups[size]) * 1000 + size)
    others = [size for size in groups if size != main_size]
    log.info("diffusion: groups %s", {size: [s.name for s in g] for size, g in groups.items()})

    net = model.vegenet
    net.train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    ema = EMA(net, settings.ema_decay)
    checkpoint_path = run_dir / "diffusion.ckpt"
    losses: list[float] = []
    start = 0
    state = load_checkpoint(checkpoint_path)
    if state is not None:
        restore(net, state, "vegenet", checkpoint_path)
        restore(ema, state, "ema", checkpoint_path)
        restore(optimiser, state, "optimiser", checkpoint_path)
        restore_rng(rng, state["rng"])
        start, losses = state["step"], state["losses"]
        ema.updates = start
        log.info("diffusion: resuming at step %d", start)

    with progress(settings.steps, "train diffusion") as bar:
        bar.update(start)
        for step in range(start, settings.steps):
            size = others[int(rng.integers(len(others)))] if others and rng.random() < settings.series_fraction else main_size
            batch = {k: v.to(device) for k, v in sample_batch(groups[size], settings.batch, rng).items()}
            context, future = model.to_diffusion_space(batch["context"], batch["future"])
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(step, settings)
            with autocast(device, settings.precision):
                loss = diffusion_loss(
                    net, future, context=context, meteo=batch["meteo"], static=batch["static"],
                    loss_mask=batch["weights"], conditioned=batch["conditioned"],
                    alphas_cumprod=model.alphas_cumprod, cfg=model.cfg.diffusion,
                    dates=batch["dates"] if net.cfg.date_channels else None,
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimiser.step()
            ema.update(net)
            losses.append(float(loss.detach()))
            bar.update(1)
            keep = bool(settings.keep_every) and (step + 1) % settings.keep_every == 0
            if keep or (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps:
                state = {"vegenet": net.state_dict(), "ema": ema.state_dict(), "optimiser": optimiser.state_dict(),
                         "rng": rng_state(rng), "step": step + 1, "losses": losses}
                save_checkpoint(checkpoint_path, state)
                if keep:
                    save_checkpoint(run_dir / f"diffusion-step{step + 1:06d}.ckpt", state)
                log.info("diffusion step %d: loss %.4f (mean of last 100)", step + 1, float(np.mean(losses[-100:])))
    net.load_state_dict(ema.state_dict())
    return model.eval(), losses
