"""Settings of both training stages: frozen dataclasses without torch, so the CLI can show their
defaults in `--help` without loading the training code."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLINGS = ("sqrt", "epoch")  # window orders of stage 2 (order.py)


@dataclass(frozen=True)
class VAETrainSettings:
    steps: int = 4000  # optimiser steps
    batch: int = 16  # crops per step (the global batch, over all processes)
    crop: int = 48  # crop side in pixels (fully convolutional; 48 fits the 20 m Romanian series)
    lr: float = 2e-4  # AdamW learning rate
    kl_weight: float = 1e-6  # weight of the summed KL term (latent diffusion's first stage)
    ndvi_weight: float = 1.0  # weight of the NDVI L1 term
    seed: int = 0
    checkpoint_every: int = 250  # steps between resumable checkpoints
    precision: str = "auto"  # autocast: auto (bf16 on GPUs and CPUs with native bf16), fp32, bf16
    micro_batch: int = 0  # crops per forward/backward on a process (0: its whole share); smaller accumulates
    workers: int = 0  # DataLoader worker processes per training process (0: read in the training process)
    budget_steps: int = 0  # stop (resumable) after this many steps in this invocation (0: no limit)
    budget_seconds: float = 0.0  # stop (resumable) after this much wall time in this invocation (0: no limit)
    log_every: int = 10  # steps between lines of <run_dir>/vae-log.jsonl
    statistics_files: int = 2000  # files whose latents give the latent statistics (a seeded sample; 0: all)


@dataclass(frozen=True)
class DiffusionTrainSettings:
    steps: int = 4000  # optimiser steps
    batch: int = 8  # windows per step (the global batch, over all processes)
    lr: float = 3e-4  # peak AdamW learning rate
    warmup: int = 200  # linear warm-up steps, then cosine decay to 10 %
    weight_decay: float = 0.01
    ema_decay: float = 0.999  # EMA of weights used for sampling
    series_fraction: float = 0.25  # share of batches drawn from other spatial sizes (e.g. 20 m series)
    seed: int = 0
    checkpoint_every: int = 200  # steps between resumable checkpoints
    keep_every: int = 0  # also keep a copy of the checkpoint every this many steps (0: none), for model selection
    precision: str = "auto"  # autocast: auto (bf16 on GPUs and CPUs with native bf16), fp32, bf16
    sampling: str = "sqrt"  # window order: "sqrt" (the shipped recipe, with replacement) or "epoch" (order.py)
    micro_batch: int = 0  # windows per forward/backward on a process (0: its whole share); smaller accumulates
    workers: int = 0  # DataLoader worker processes per training process (0: read in the training process)
    budget_steps: int = 0  # stop (resumable) after this many steps in this invocation (0: no limit)
    budget_seconds: float = 0.0  # stop (resumable) after this much wall time in this invocation (0: no limit)
    log_every: int = 10  # steps between lines of <run_dir>/diffusion-log.jsonl
