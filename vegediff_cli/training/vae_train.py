"""Stage 1: train the vegetation VAE on every clear Sentinel-2 frame (paper Sec. III-B).

Loss on clear pixels only: L1 of standardised BGRN reflectance + L1 of NDVI (the quantity the
benchmark scores) + a small KL term. Band statistics come from the data index (sums over the
clear pixels of every frame at least 30 % clear); latent statistics are measured after
training, so that diffusion sees unit-variance latents. Crops are read lazily, one frame at a
time, by DataLoader workers; the loop is engine.py's (one process or many, resumable).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import NoValidDataError
from ..model.inputs import gap_fill
from ..model.presets import ModelConfig
from ..model.vae import VegetationVAE, kl_divergence
from ..model.vegediff import VegeDiff
from ..progress import ProgressFactory, no_progress
from .diffusion_train import loop_settings
from .engine import LoopResult, Trainer
from .index import SourceInfo, band_statistics, fingerprint
from .latent_cache import draw_seed
from .order import StepBatches, split_batch
from .parallel import Runtime, all_sum, shard
from .sequences import Sequence, load_frames
from .settings import VAETrainSettings
from .windows import dihedral, spatial_size, square

log = logging.getLogger("vegediff.train")


def _ndvi(x: torch.Tensor) -> torch.Tensor:
    red, nir = x[:, 2], x[:, 3]
    return (nir - red) / (nir + red).abs().clamp(min=1e-3)


def vae_loss(vae: VegetationVAE, frames: torch.Tensor, valid: torch.Tensor, settings: VAETrainSettings, *,
             forward=None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Masked L1 + NDVI L1 + KL; `forward` is the (possibly DDP-wrapped) `vae`, `noise` the posterior draws."""
    reconstruction, mean, logvar = (forward or vae)(frames, noise)
    weight = valid.sum().clamp(min=1.0)
    band_error = (vae.standardise(reconstruction) - vae.standardise(frames)).abs() * valid
    ndvi_error = (_ndvi(reconstruction) - _ndvi(frames)).abs() * valid[:, 0]
    loss = band_error.sum() / (weight * frames.shape[1]) + settings.ndvi_weight * ndvi_error.sum() / weight
    return loss + settings.kl_weight * kl_divergence(mean, logvar).mean()


class FrameCrops(Dataset):
    """Random augmented crops of clear frames; an item (step, slot) draws its own crop from its seed.

    A frame is drawn uniformly among the frames at least 30 % clear; a crop less than half clear
    is drawn again. Minicubes and this tool's cubes are read one frame at a time, other sources
    (small series, EarthNet2021 samples) whole; the last few are kept per worker.
    """

    MAX_DRAWS = 10_000
    KEPT = 8  # frames or small sources kept per worker (a redrawn frame is not read again)

    def __init__(self, sources: list[SourceInfo], *, crop: int, seed: int, latent: tuple[int, int, int]) -> None:
        frames = [(i, int(t)) for i, s in enumerate(sources) for t in s.vae_frames(crop)]
        if not frames:
            raise NoValidDataError(f"no training frame is both {crop} px wide and 30 % clear",
                                   fix="pass a smaller `crop` or data with clearer frames")
        self.pool = np.array(frames, dtype=np.int64)  # (N, 2): source, frame
        self.sources, self.crop, self.seed, self.latent = sources, crop, seed, latent
        self._kept: OrderedDict[tuple[int, int], Sequence] = OrderedDict()

    def __len__(self) -> int:
        return len(self.pool)

    def _frame(self, source: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        info = self.sources[source]
        if info.phase is not None or (info.kind == "cube" and info.path.endswith(".nc")):
            key, first, stop = (source, t), t, t + 1  # one frame
        else:
            key, first, stop = (source, -1), 0, info.frames  # the whole source
        if key not in self._kept:
            self._kept[key] = load_frames(Path(info.path), first, stop, phase=info.phase)
            while len(self._kept) > self.KEPT:
                self._kept.popitem(last=False)
        self._kept.move_to_end(key)
        seq = self._kept[key]
        return seq.frames[t - first], seq.valid[t - first]

    def __getitem__(self, item: tuple[int, int]) -> dict[str, torch.Tensor]:
        step, slot = item
        rng = np.random.default_rng([self.seed, 7, step, slot])
        c = self.crop
        for _ in range(self.MAX_DRAWS):
            source, t = self.pool[int(rng.integers(len(self.pool)))]
            frame, valid = self._frame(int(source), int(t))
            h, w = valid.shape
            y, x = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
            clear = valid[y : y + c, x : x + c]
            if clear.mean() < 0.5:
                continue
            k = int(rng.integers(8))
            generator = torch.Generator().manual_seed(draw_seed(self.seed, step, slot))
            return {"frames": torch.from_numpy(dihedral(np.nan_to_num(frame[:, y : y + c, x : x + c]), k)),
                    "valid": torch.from_numpy(dihedral(clear[None], k).astype("float32")),
                    "noise": torch.randn(self.latent, generator=generator)}
        raise NoValidDataError(f"no {c} px crop at least half clear in {self.MAX_DRAWS} draws",
                               fix="pass a smaller `crop` or data with clearer frames")


class _Filled(Dataset):
    def __init__(self, sources: list[SourceInfo]) -> None:
        self.sources = sources

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> np.ndarray:
        info = self.sources[i]
        seq = load_frames(Path(info.path), 0, info.frames, phase=info.phase)
        return gap_fill(*square(seq, spatial_size(seq)))


@torch.no_grad()
def latent_statistics(model: VegeDiff, sources: list[SourceInfo], *, runtime: Runtime, workers: int = 0,
                      limit: int = 0, seed: int = 0, progress: ProgressFactory = no_progress) -> tuple[tuple, tuple]:
    """Per-channel mean and std of the raw latents of the gap-filled training frames (all files, or a
    seeded sample of `limit`), each process encoding its share."""
    chosen = sources
    if limit and len(sources) > limit:
        picks = np.sort(np.random.default_rng([seed, 8]).choice(len(sources), size=limit, replace=False))
        chosen = [sources[i] for i in picks]
    mine = shard(chosen, runtime)
    channels = model.cfg.vae.latent_channels
    count, total, squares = 0.0, np.zeros(channels), np.zeros(channels)
    loader = DataLoader(_Filled(mine), batch_size=None, num_workers=workers, collate_fn=lambda item: item)
    with progress(len(mine), "latent statistics") as bar:
        for filled in loader:
            for start in range(0, filled.shape[0], 32):
                mean, _ = model.vae.encode_distribution(torch.from_numpy(filled[start : start + 32]).to(runtime.device))
                values = mean.transpose(0, 1).flatten(1).double().cpu().numpy()  # (C, N)
                count += values.shape[1]
                total += values.sum(axis=1)
                squares += (values**2).sum(axis=1)
            bar.update(1)
    summed = all_sum(runtime, [count, *total, *squares])
    count, total, squares = summed[0], np.array(summed[1 : 1 + channels]), np.array(summed[1 + channels :])
    mean = total / count
    std = np.sqrt(np.maximum((squares - count * mean**2) / max(count - 1.0, 1.0), 0.0))
    return tuple(mean.tolist()), tuple(std.tolist())


def train_vae(
    sources: list[SourceInfo],
    *,
    cfg: ModelConfig,
    settings: VAETrainSettings,
    run_dir: Path,
    runtime: Runtime,
    progress: ProgressFactory = no_progress,
) -> tuple[VegeDiff, LoopResult]:
    """Train (or resume) the VAE; returns the model with latent statistics set (when the schedule
    is complete), and the loop's result."""
    _, micro_batches = split_batch(settings.batch, settings.micro_batch, runtime.world)
    band_mean, band_std = band_statistics(sources)
    cfg = dataclasses.replace(cfg, vae=dataclasses.replace(cfg.vae, band_mean=band_mean, band_std=band_std))
    crops = FrameCrops(sources, crop=settings.crop, seed=settings.seed,
                       latent=(cfg.vae.latent_channels, settings.crop // cfg.vae.downsample,
                               settings.crop // cfg.vae.downsample))
    log.info("VAE: %d training frames, band mean %s std %s", len(crops), band_mean, band_std)
    torch.manual_seed(settings.seed)
    model = VegeDiff(cfg).to(runtime.device)
    data_id = fingerprint(sources)

    def position(step: int) -> dict:
        return {"global_batch": settings.batch, "crop": settings.crop, "data": data_id}

    trainer = Trainer("vae", model.vae, state_key="vae", runtime=runtime, run_dir=run_dir,
                      settings=loop_settings(settings), lr=lambda step: settings.lr, weight_decay=0.0,
                      progress=progress)
    start = trainer.resume(position)
    plan = StepBatches(lambda step: [()] * settings.batch, batch=settings.batch, micro_batch=settings.micro_batch,
                       first=start, last=settings.steps, runtime=runtime)
    loader = DataLoader(crops, batch_sampler=plan, num_workers=settings.workers,
                        pin_memory=runtime.device.type == "cuda")

    def loss(vae: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return vae_loss(model.vae, batch["frames"], batch["valid"], settings, forward=vae, noise=batch["noise"])

    result = trainer.fit(loader, loss, micro_batches=micro_batches, position=position)
    if not result.completed:
        return model.eval(), result
    model.eval()
    latent_mean, latent_std = latent_statistics(model, sources, runtime=runtime, workers=settings.workers,
                                                limit=settings.statistics_files, seed=settings.seed, progress=progress)
    final_cfg = dataclasses.replace(cfg, vae=dataclasses.replace(cfg.vae, latent_mean=latent_mean, latent_std=latent_std))
    final = VegeDiff(final_cfg).to(runtime.device)
    final.load_state_dict(model.state_dict())  # the VAE, and the same seeded untrained denoiser on a resumed run
    return final.eval(), result
