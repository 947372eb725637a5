"""Latents of the training sequences on disk: the frozen VAE's encoding, computed once per file.

Why a cache and not encoding each batch on the training step: encoding a 30-frame window costs
more than training on it (small preset 16.2 vs 13.5 GFLOP per window, paper preset 1.94 vs
1.35 TFLOP; measured CPU times in benchmarks/train_throughput.py and docs/train.md), so
encoding in the step would more than halve the throughput, every epoch. The cache encodes
each file's frames once per dihedral transform (8 x T frames, fewer than one epoch of windows
re-encodes: 20 windows x 30 frames for a 30-frame cube) and training then reads 30 latent
frames per window. This is what the in-memory recipe did, on disk, so memory stays flat.

Per source (`<stem>` hashes the file's content key, its square side and the VAE's weights, so
a cache folder can be shared by runs and a changed file or VAE gets new entries):
  <stem>.latents.npy  (8, T, C, h, w) float32: the gap-filled frames under the 8 transforms
  <stem>.aux.npz      weights (T, 1, h, w) clear fraction per latent cell; meteo (T, 24)
                      standardised; dates (T + 30, 3); static (5, S, S); conditioned ()
Files appear atomically (latents last), so a killed build resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from ..atomic import atomic_file
from ..config import CONTEXT_FRAMES, SEQUENCE_FRAMES, STEP_DAYS
from ..model.inputs import date_features, gap_fill, latent_weights, normalise_static, standardise_meteo
from ..model.vegediff import VegeDiff
from ..progress import ProgressFactory, no_progress
from .index import SourceInfo
from .parallel import Runtime, barrier, shard
from .sequences import Sequence, load_frames
from .windows import dihedral, spatial_size, square

log = logging.getLogger("vegediff.train")

CACHE_VERSION = 1


def vae_fingerprint(model: VegeDiff) -> str:
    """Hash of the VAE's config (latent statistics included) and weights."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(model.cfg.vae), sort_keys=True).encode())
    for name, tensor in sorted(model.vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_stem(source: SourceInfo, vae: str) -> str:
    return hashlib.sha256(f"{CACHE_VERSION}|{source.key}|{source.side}|{vae}".encode()).hexdigest()[:32]


def prepare(seq: Sequence, factor: int) -> dict[str, np.ndarray]:
    """Everything of a sequence the denoiser trains on, except the latents (then encoded from `filled`)."""
    side = spatial_size(seq)
    frames, valid = square(seq, side)
    static, has_static = normalise_static({k: v[:side, :side] for k, v in seq.static.items()}, (side, side))
    after = seq.times[-1] + pd.to_timedelta(STEP_DAYS * np.arange(1, SEQUENCE_FRAMES + 1), unit="D")
    return {
        "filled": gap_fill(frames, valid),  # (T, 4, S, S)
        "weights": latent_weights(valid, factor),  # (T, 1, S/f, S/f)
        "meteo": standardise_meteo(seq.meteo, len(seq.times)),  # (T, 24)
        "dates": date_features(seq.times.append(after), seq.latitude),  # (T + 30, 3)
        "static": static,  # (5, S, S)
        "conditioned": np.array(seq.has_meteo or has_static),
    }


@torch.no_grad()
def encode_transforms(model: VegeDiff, filled: np.ndarray, device: torch.device) -> np.ndarray:
    """(T, 4, S, S) gap-filled frames -> (8, T, C, S/8, S/8) normalised latents, one per dihedral transform (fp32)."""
    out = []
    for k in range(8):
        frames = torch.from_numpy(dihedral(filled, k)).to(device)
        out.append(model.encode_frames(frames[None]).squeeze(0).float().cpu().numpy())
    return np.stack(out)


class _Prepared(Dataset):
    def __init__(self, sources: list[SourceInfo], factor: int) -> None:
        self.sources, self.factor = sources, factor

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        source = self.sources[i]
        return prepare(load_frames(Path(source.path), 0, source.frames, phase=source.phase), self.factor)


def build_latent_cache(
    model: VegeDiff, sources: list[SourceInfo], folder: Path, *, runtime: Runtime, workers: int = 0,
    progress: ProgressFactory = no_progress,
) -> list[str]:
    """Encode the sources missing from `folder` (each process its share); returns every source's stem."""
    vae = vae_fingerprint(model)
    stems = [cache_stem(s, vae) for s in sources]
    todo = sorted({stem: source for stem, source in zip(stems, sources, strict=True)
                   if not (folder / f"{stem}.latents.npy").exists()}.items())
    if todo:
        log.info("latent cache %s: encoding %d of %d sources", folder, len(todo), len(sources))
        folder.mkdir(parents=True, exist_ok=True)
    mine = shard(todo, runtime)
    model = model.eval()
    loader = DataLoader(_Prepared([source for _, source in mine], model.cfg.vae.downsample), batch_size=None,
                        num_workers=workers, collate_fn=lambda item: item)
    with progress(len(mine), "encode sequences") as bar:
        for (stem, _), prepared in zip(mine, loader, strict=True):
            latents = encode_transforms(model, prepared.pop("filled"), runtime.device)
            with atomic_file(folder / f"{stem}.aux.npz") as tmp:
                np.savez(tmp, **prepared)
            with atomic_file(folder / f"{stem}.latents.npy") as tmp:
                np.save(tmp, latents)
            bar.update(1)
    barrier(runtime)
    return stems


def draw_seed(seed: int, step: int, slot: int) -> int:
    """Seed of one batch item's random draws, from the run's seed and the item's place (step, slot)."""
    return int(np.random.SeedSequence([seed, step, slot]).generate_state(1, np.uint64)[0]) & (2**63 - 1)


class LatentWindows(Dataset):
    """Augmented 30-frame windows read from the latent cache, with their diffusion draws.

    An item is (source, start, k, step, slot); frames past the series end are zero with weight 0
    (a window needs only one future frame inside the series). The draws (timestep, noise,
    condition-dropout number) come from the item's own seed.
    """

    def __init__(self, folder: Path, stems: list[str], *, seed: int, train_steps: int) -> None:
        self.folder, self.stems, self.seed, self.train_steps = folder, stems, seed, train_steps

    def __len__(self) -> int:  # items are descriptors from StepBatches, not indices
        return len(self.stems)

    def __getitem__(self, item: tuple[int, int, int, int, int]) -> dict[str, torch.Tensor]:
        source, start, k, step, slot = item
        stem = self.stems[source]
        latents = np.load(self.folder / f"{stem}.latents.npy", mmap_mode="r")  # (8, T, C, h, w)
        frames = latents.shape[1]
        stop = min(frames, start + SEQUENCE_FRAMES)
        pad = SEQUENCE_FRAMES - (stop - start)
        window = np.array(latents[k, start:stop])
        del latents
        with np.load(self.folder / f"{stem}.aux.npz") as aux:
            weights = dihedral(aux["weights"][start:stop], k)
            meteo = aux["meteo"][start:stop]
            dates = aux["dates"][start : start + SEQUENCE_FRAMES]
            static = dihedral(aux["static"], k)
            conditioned = bool(aux["conditioned"])

        def padded(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x)

        latent = padded(window)
        generator = torch.Generator().manual_seed(draw_seed(self.seed, step, slot))
        future_shape = (SEQUENCE_FRAMES - CONTEXT_FRAMES, *latent.shape[1:])
        return {
            "context": latent[:CONTEXT_FRAMES],  # (K, C, h, w)
            "future": latent[CONTEXT_FRAMES:],  # (F, C, h, w)
            "weights": padded(weights)[CONTEXT_FRAMES:],  # (F, 1, h, w)
            "meteo": padded(meteo),  # (K + F, 24)
            "dates": torch.from_numpy(np.ascontiguousarray(dates)),  # (K + F, 3)
            "static": torch.from_numpy(static),  # (5, S, S)
            "conditioned": torch.tensor(conditioned),
            "timestep": torch.randint(0, self.train_steps, (), generator=generator),
            "noise": torch.randn(future_shape, generator=generator),
            "dropout_draw": torch.rand((), generator=generator),
        }
