"""The training data index: what training needs to know of every file, without its arrays.

One :class:`SourceInfo` per file (a few hundred bytes: frame count, size, clear pixels per
frame, meteorology coverage, static layers, band sums) is all that training keeps in memory, so
memory does not grow with the number of files; windows and frames are read when a batch needs them.

The index is built once, each process describing its share of the files (and DataLoader
workers reading them in parallel), and cached as JSON keyed by each file's resolved path, size
and modification time: a rerun, a resumed run or another run on the same files reads it back, a
changed file is described again, and links to one file are read once.

A held-out season (training/validation.py: a series' frames from a date on, kept for validation)
is cut off when the file is described: the source's frames are the ones before the date (a
prefix, read as such by every stage), its description covers those frames only, and its key
names the date, so the latent cache never holds an encoding that saw the held-out frames.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import DataLoader, Dataset

from ..atomic import atomic_file
from ..config import CONTEXT_FRAMES, METEO_VARS, STEP_DAYS
from ..errors import CorruptInputError, NoValidDataError, UsageError
from ..model.domain import DomainEntry
from ..model.inputs import STATIC_ORDER
from ..progress import ProgressFactory, no_progress
from .parallel import Runtime, all_gather, shard
from .sequences import (
    Sequence,
    drop_finer_duplicates,
    load_frames,
    load_sequence,
    minicube_frames,
    series_footprint,
    source_kind,
)
from .toa_series import is_toa_series
from .windows import spatial_size, square

log = logging.getLogger("vegediff.train")

INDEX_VERSION = 3  # 2: static_layers; 3: latitude, first_date
VAE_MIN_CLEAR = 0.3  # frames at least this clear feed the VAE (stage 1)


@dataclass(frozen=True)
class SourceInfo:
    """One training file, described."""

    path: str  # as found (a link keeps its own name)
    kind: str  # "cube" (open_cube reads it), "series" (S2 L2A digital numbers), "toa" (8-bit L1C)
    frames: int  # T, frames on the 5-day grid
    height: int
    width: int
    phase: int | None  # minicubes: day of each 5-day block with Sentinel-2 (partial reads); else None
    square_clear: tuple[int, ...]  # (T,) clear pixels of each frame inside the side x side training square
    frame_clear: tuple[float, ...]  # (T,) clear fraction of each whole frame (VAE frames)
    conditioned: bool  # meteorology or static layers: trains both branches; else the unconditional one
    meteo_frames: tuple[int, ...] | None  # per E-OBS variable, frames where it has a value; None: no meteorology
    band_sum: tuple[float, ...]  # per band, over clear pixels of frames >= VAE_MIN_CLEAR clear (VAE statistics)
    band_sumsq: tuple[float, ...]
    band_count: int
    footprint: str | None  # L2A series: dates, count and bounds (a finer twin is dropped); else None
    resolution: float | None  # L2A series: pixel size in metres
    key: str  # resolved path | size | mtime [| before DATE]: identifies the content (latent cache, index cache)
    static_layers: tuple[str, ...] = ()  # static layers (STATIC_ORDER names) the file holds with values
    latitude: float | None = None  # degrees north of the centre (the model's date features)
    first_date: str | None = None  # date of frame 0; frame i is STEP_DAYS x i days later

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @property
    def side(self) -> int:
        """Square side the sequence trains at (windows.spatial_size)."""
        side = min(self.height, self.width)
        return int(max(16, min(128, side - side % 16)))

    @property
    def window_starts(self) -> int:
        """30-frame windows with at least one future frame inside the series (some may be all cloud)."""
        return max(1, self.frames - CONTEXT_FRAMES)

    def eligible_starts(self) -> np.ndarray:
        """Window starts whose future frames hold at least one clear pixel (the others teach nothing)."""
        clear = np.asarray(self.square_clear, dtype=np.int64)
        total = np.concatenate([[0], np.cumsum(clear)])
        starts = np.arange(self.window_starts)
        first, stop = np.minimum(starts + CONTEXT_FRAMES, self.frames), np.minimum(starts + 30, self.frames)
        return starts[total[stop] - total[first] > 0]

    def vae_frames(self, crop: int) -> np.ndarray:
        """Frames the VAE draws crops from: clear enough, and at least `crop` pixels on each side."""
        if min(self.height, self.width) < crop:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(np.asarray(self.frame_clear) >= VAE_MIN_CLEAR)


def file_key(path: Path) -> str:
    real = Path(os.path.realpath(path))
    stat = real.stat()
    return f"{real}|{stat.st_size}|{stat.st_mtime_ns}"


def source_key(path: Path, before: str | None = None) -> str:
    """file_key, naming the held-out cut-off date when the source trains on its frames before it."""
    return file_key(path) + (f"|before {before}" if before else "")


def describe(path: Path, before: str | None = None) -> SourceInfo | None:
    """Read one file whole and describe it; None when it is no training source. With `before` (a
    date), the source is its frames before that date (a held-out season), None if there are none."""
    kind = source_kind(path)
    if kind is None:
        return None
    minicube = minicube_frames(path) if kind == "cube" else None
    seq = load_frames(path, 0, minicube[0], phase=minicube[1]) if minicube else load_sequence(path)
    if before is not None:
        kept = np.asarray(seq.times < pd.Timestamp(before))
        count = int(kept.sum())
        if not kept[:count].all():  # the stages read frames 0..frames-1: only a prefix can be kept
            raise CorruptInputError(f"{path}: frame dates are not in order", fix="sort the file's time axis")
        if count == 0:
            return None
        seq = load_frames(path, 0, count, phase=minicube[1]) if minicube else _prefix(seq, count)
    found = series_footprint(path) if kind == "series" else None
    return _info(seq, path=path, kind=kind, phase=minicube[1] if minicube else None,
                 footprint=None if found is None else json.dumps(found[0]), resolution=None if found is None else found[1],
                 key=source_key(path, before))


def _prefix(seq: Sequence, count: int) -> Sequence:
    meteo = None if seq.meteo is None else seq.meteo[:count]
    return Sequence(seq.name, seq.frames[:count], seq.valid[:count], seq.times[:count], meteo, seq.static, seq.latitude)


def _info(seq: Sequence, *, path: Path, kind: str, phase: int | None, footprint: str | None,
          resolution: float | None, key: str) -> SourceInfo:
    t, _, height, width = seq.frames.shape
    _, square_valid = square(seq, spatial_size(seq))
    frame_clear = seq.valid.reshape(t, -1).mean(axis=1)
    vae = frame_clear >= VAE_MIN_CLEAR
    pixels = np.nan_to_num(seq.frames[vae]).transpose(1, 0, 2, 3)[:, seq.valid[vae]].astype(np.float64)  # (4, N)
    meteo_frames = None
    if seq.has_meteo:
        present = np.isfinite(seq.meteo).any(axis=2)  # (T, vars)
        meteo_frames = tuple(int(n) for n in present.sum(axis=0))
    return SourceInfo(
        path=str(path), kind=kind, frames=int(t), height=int(height), width=int(width), phase=phase,
        square_clear=tuple(int(n) for n in square_valid.reshape(t, -1).sum(axis=1)),
        frame_clear=tuple(float(f) for f in frame_clear),
        conditioned=bool(seq.has_meteo or any(name in seq.static for name in STATIC_ORDER)),
        meteo_frames=meteo_frames,
        static_layers=tuple(name for name in STATIC_ORDER if name in seq.static and np.isfinite(seq.static[name]).any()),
        band_sum=tuple(pixels.sum(axis=1).tolist()), band_sumsq=tuple((pixels**2).sum(axis=1).tolist()),
        band_count=int(pixels.shape[1]), footprint=footprint, resolution=resolution, key=key,
        latitude=round(float(seq.latitude), 4), first_date=f"{seq.times[0]:%Y-%m-%d}",
    )


def candidates(roots: list[Path]) -> list[Path]:
    """Files under `roots` that may be training sources, by name alone (cheap on large trees)."""
    found: list[Path] = []
    for root in map(Path, roots):
        if not root.exists():
            raise UsageError(f"`data` {root} does not exist", fix="pass folders or files of training data")
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        found.extend(p for p in files if "reference_predictions" not in p.parts and _may_be_source(p))
    return found


def _may_be_source(path: Path) -> bool:
    if path.suffix == ".npz":
        return path.name.startswith("context_")
    return path.suffix == ".nc" or is_toa_series(path)


class _Describe(Dataset):
    def __init__(self, items: list[tuple[Path, str | None]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        info = describe(*self.items[i])
        return None if info is None else dataclasses.asdict(info)


def build_index(
    paths: list[Path], *, cache: Path | None, runtime: Runtime, workers: int = 0,
    progress: ProgressFactory = no_progress, held_out_seasons: dict[str, str] | None = None,
) -> list[SourceInfo]:
    """SourceInfo of every training source among `paths` (in order), the 10 m twins of 20 m series
    dropped; files not yet in `cache` are described by all processes, each its share. A file whose
    stem `held_out_seasons` names (stem -> date) is described by its frames before that date."""
    known = _read_cache(cache)
    befores = [(held_out_seasons or {}).get(p.stem) for p in paths]
    keys = [source_key(p, before) for p, before in zip(paths, befores, strict=True)]
    todo = sorted({k: (p, before) for k, p, before in zip(keys, paths, befores, strict=True)
                   if k not in known}.items())  # links: read once
    mine = shard(todo, runtime)
    described: dict[str, dict | None] = {}
    if todo:
        log.info("index: describing %d file(s) (%d cached)", len(todo), len(paths) - len(todo))
    loader = DataLoader(_Describe([item for _, item in mine]), batch_size=None, num_workers=workers,
                        collate_fn=lambda item: item)
    with progress(len(mine), "index training data") as bar:
        for (key, _), info in zip(mine, loader, strict=True):
            described[key] = info
            bar.update(1)
    for part in all_gather(runtime, described):
        known.update(part)
    if todo and runtime.main and cache is not None:
        _write_cache(cache, known)
    infos = []
    for key, path in zip(keys, paths, strict=True):
        entry = known.get(key)
        if entry is not None:
            infos.append(SourceInfo(**{**entry, "path": str(path), **_tuples(entry)}))
    by_path = {Path(info.path): info for info in infos}
    kept = drop_finer_duplicates(list(by_path), footprint=lambda p: _footprint_of(by_path[p]))
    return [by_path[p] for p in kept]


def _footprint_of(info: SourceInfo):
    return None if info.footprint is None else (info.footprint, info.resolution)


def _tuples(entry: dict) -> dict:
    names = ("square_clear", "frame_clear", "meteo_frames", "static_layers", "band_sum", "band_sumsq")
    return {n: None if entry.get(n) is None else tuple(entry[n]) for n in names if n in entry}


def _read_cache(cache: Path | None) -> dict[str, dict | None]:
    if cache is None or not cache.exists():
        return {}
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        log.warning("index: %s is unreadable; describing every file again", cache)
        return {}
    if data.get("version") != INDEX_VERSION:
        return {}
    return data.get("files", {})


def _write_cache(cache: Path, known: dict[str, dict | None]) -> None:
    with atomic_file(cache) as tmp:
        tmp.write_text(json.dumps({"version": INDEX_VERSION, "files": known}))


def select_sources(
    data: list[Path], exclude: list[str], *, runtime: Runtime, cache: Path | None, workers: int = 0,
    progress: ProgressFactory = no_progress, held_out_seasons: dict[str, str] | None = None,
) -> list[SourceInfo]:
    """The indexed training sources under `data` whose file name contains none of `exclude`; a series
    named in `held_out_seasons` (file stem -> date) without its frames from that date on."""
    paths = candidates(data)
    for pattern in exclude:
        if not any(pattern in p.name for p in paths):
            raise UsageError(f"`exclude` '{pattern}' matches no training file", fix="check the hold-out name")
    kept = [p for p in paths if not any(pattern in p.name for pattern in exclude)]
    sources = build_index(kept, cache=cache, runtime=runtime, workers=workers, progress=progress,
                          held_out_seasons=held_out_seasons) if kept else []
    if not sources:
        raise NoValidDataError(f"no training data found under {', '.join(map(str, data))}",
                               fix="pass folders with cubes, minicubes or Sentinel-2 series via `data`")
    names = [s.name for s in sources]
    log.info("training on %d sources: %s", len(sources),
             ", ".join(names) if len(names) <= 20 else ", ".join(names[:20]) + ", ...")
    return sources


def meteo_coverage(sources: list[SourceInfo]) -> dict[str, float]:
    """Per E-OBS variable: the fraction of the conditioned sequences' frames where it has a value.

    Stored in weights files (`meteo_coverage`); a forecast ignores variables the denoiser hardly
    saw (pipeline/forecast/model.py), instead of feeding it values it never learned to read.
    """
    with_meteo = [s for s in sources if s.meteo_frames is not None]
    frames = sum(s.frames for s in with_meteo)
    if not frames:
        return {v: 0.0 for v in METEO_VARS}
    return {v: round(sum(s.meteo_frames[i] for s in with_meteo) / frames, 4) for i, v in enumerate(METEO_VARS)}


def static_coverage(sources: list[SourceInfo]) -> dict[str, float]:
    """Per static layer: the fraction of the conditioned sequences' frames whose file holds it.

    Stored in weights files (`static_coverage`); like a meteorological variable, a layer the denoiser
    hardly saw is left out of forecasts (pipeline/forecast/model.py). The shipped recipe's conditioned
    sequences are six EarthNet2021 samples (one DEM) and one GreenEarthNet cube (all five layers), so
    land cover and geomorphons were seen with a single site's sequences.
    """
    conditioned = [s for s in sources if s.conditioned]
    frames = sum(s.frames for s in conditioned)
    if not frames:
        return {name: 0.0 for name in STATIC_ORDER}
    return {name: round(sum(s.frames for s in conditioned if name in s.static_layers) / frames, 4)
            for name in STATIC_ORDER}


def training_domain(sources: list[SourceInfo]) -> list[DomainEntry]:
    """Per sequence: its latitude, the forecast starts of its training windows and whether it was
    conditioned (model/domain.py).

    Stored in weights files (`training_domain`); a forecast of a cube far from every entry in latitude
    or season says that it lies outside what the weights learned."""
    entries = []
    for s in sources:
        if s.latitude is None or s.first_date is None:
            continue
        starts = s.eligible_starts()
        if not len(starts):
            continue
        first = pd.Timestamp(s.first_date) + pd.Timedelta(days=STEP_DAYS * (int(starts.min()) + CONTEXT_FRAMES))
        last = pd.Timestamp(s.first_date) + pd.Timedelta(days=STEP_DAYS * (int(starts.max()) + CONTEXT_FRAMES))
        entries.append(DomainEntry(s.name, float(s.latitude), first.date(), last.date(), s.conditioned))
    return entries


def band_statistics(sources: list[SourceInfo]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and standard deviation of the clear pixels of every VAE frame (VAEConfig.band_mean/std)."""
    count = sum(s.band_count for s in sources)
    if not count:
        raise NoValidDataError("no frame of the training data is clear enough for the VAE",
                               fix=f"add data with frames at least {VAE_MIN_CLEAR:.0%} clear")
    total = np.sum([s.band_sum for s in sources if s.band_count], axis=0)
    squares = np.sum([s.band_sumsq for s in sources if s.band_count], axis=0)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return tuple(np.round(mean, 5).tolist()), tuple(np.round(std, 5).tolist())


def fingerprint(sources: list[SourceInfo]) -> str:
    """Identifies the data order's input: the files and their windows (a checkpoint records it)."""
    digest = hashlib.sha256()
    for s in sources:
        digest.update(f"{s.key}|{s.frames}|{s.square_clear}\n".encode())
    return digest.hexdigest()[:16]

