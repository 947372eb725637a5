"""Which windows make each step's batch: a seeded order that is a pure function of the step.

The global batch of step s is the same whatever the number of processes, DataLoader workers or
restarts: process r of N takes its slice of it, and a resumed run continues at step s with
exactly the windows an uninterrupted run would have drawn. Every batch holds windows of one
spatial size (the model's tokens are per size); a share `series_fraction` of the steps draws
from the sizes other than the main one (the long 20 m series, the 10 x 10 px Rhone valley).

Two samplings:
- "sqrt" (the shipped recipe): windows are drawn with replacement, a sequence in proportion to
  the square root of its window count, so long series count but do not drown short cubes;
- "epoch": every window of a size once per epoch, in a new seeded permutation each epoch
  (large homogeneous data sets such as GreenEarthNet's training split).
Only windows whose future frames hold a clear pixel are ever drawn (the index knows which).
The dihedral transform of each window is drawn per step as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler

from ..errors import NoValidDataError, UsageError
from .index import SourceInfo
from .parallel import Runtime
from .settings import SAMPLINGS

_GROUP, _PICK, _SQRT, _TRANSFORM, _PERMUTATION = 1, 2, 3, 4, 5  # independent streams of one seed


@dataclass(frozen=True)
class _Group:
    """The eligible windows of one spatial size."""

    source: np.ndarray  # (W,) source index of each window
    start: np.ndarray  # (W,) first frame of each window
    first: np.ndarray  # (S,) offset of each source's windows in the arrays above
    count: np.ndarray  # (S,) eligible windows per source
    members: np.ndarray  # (S,) source indices of the group
    sqrt_weight: np.ndarray  # (S,) probability of each source under "sqrt"


def _group(sources: list[SourceInfo], members: list[int]) -> _Group:
    starts = [sources[i].eligible_starts() for i in members]
    count = np.array([len(s) for s in starts], dtype=np.int64)
    all_starts = np.array([sources[i].window_starts for i in members], dtype=np.float64)
    # the old recipe drew a sequence by sqrt(all its windows), then redrew cloudy windows: the same odds
    weight = np.sqrt(all_starts) * count / all_starts
    return _Group(source=np.repeat(np.array(members, dtype=np.int64), count),
                  start=np.concatenate(starts).astype(np.int64) if starts else np.zeros(0, np.int64),
                  first=np.concatenate([[0], np.cumsum(count)[:-1]]), count=count,
                  members=np.array(members, dtype=np.int64), sqrt_weight=weight / weight.sum())


class WindowOrder:
    """The global batch of every step: (side, [(source, start, dihedral k), ...])."""

    def __init__(self, sources: list[SourceInfo], *, batch: int, steps: int, seed: int, series_fraction: float,
                 sampling: str = "sqrt") -> None:
        if sampling not in SAMPLINGS:
            raise UsageError(f"sampling '{sampling}' is not one of {', '.join(SAMPLINGS)}")
        by_side: dict[int, list[int]] = {}
        for i, source in enumerate(sources):
            if len(source.eligible_starts()):
                by_side.setdefault(source.side, []).append(i)
        if not by_side:
            raise NoValidDataError("no training window has a clear future frame",
                                   fix="add data with clear observations after the first 10 frames")
        self.groups = {side: _group(sources, members) for side, members in by_side.items()}
        self.main = max(self.groups, key=lambda side: sum(sources[i].conditioned for i in by_side[side]) * 1000 + side)
        self.others = sorted(side for side in self.groups if side != self.main)
        self.batch, self.steps, self.seed, self.sampling = batch, steps, seed, sampling
        sides = np.full(steps, self.main, dtype=np.int64)
        if self.others:
            coins = np.random.default_rng([seed, _GROUP]).random(steps) < series_fraction
            picks = np.random.default_rng([seed, _PICK]).integers(len(self.others), size=steps)
            sides[coins] = np.asarray(self.others)[picks[coins]]
        self._sides = sides
        # steps before s that drew from each size: where its stream of windows stands at step s
        self._before = {side: np.concatenate([[0], np.cumsum(sides == side)]) for side in self.groups}  # (steps + 1,)
        self._permutations: dict[tuple[int, int], np.ndarray] = {}

    def side(self, step: int) -> int:
        return int(self._sides[step])

    def windows(self, side: int) -> int:
        return int(len(self.groups[side].source))

    def batch_of(self, step: int) -> tuple[int, list[tuple[int, int, int]]]:
        """The global batch of `step`: its side and (source, start, k) per window."""
        side = self.side(step)
        group = self.groups[side]
        if self.sampling == "epoch":
            stream = self._before[side][step] * self.batch + np.arange(self.batch)
            n = len(group.source)
            picked = np.array([self._permutation(side, int(i // n))[i % n] for i in stream])
        else:
            rng = np.random.default_rng([self.seed, _SQRT, step])
            chosen = rng.choice(len(group.members), size=self.batch, p=group.sqrt_weight)
            picked = group.first[chosen] + np.floor(rng.random(self.batch) * group.count[chosen]).astype(np.int64)
        k = np.random.default_rng([self.seed, _TRANSFORM, step]).integers(8, size=self.batch)
        return side, [(int(group.source[w]), int(group.start[w]), int(t)) for w, t in zip(picked, k, strict=True)]

    def _permutation(self, side: int, epoch: int) -> np.ndarray:
        key = (side, epoch)
        if key not in self._permutations:
            if len(self._permutations) > 4:
                self._permutations.clear()
            rng = np.random.default_rng([self.seed, _PERMUTATION, side, epoch])
            self._permutations[key] = rng.permutation(len(self.groups[side].source))
        return self._permutations[key]

    def position(self, step: int) -> dict:
        """Where the order stands before `step`: epochs of windows drawn per size (a checkpoint stores it)."""
        epochs = {str(side): round(float(self._before[side][step] * self.batch / self.windows(side)), 6)
                  for side in sorted(self.groups)}
        return {"sampling": self.sampling, "global_batch": self.batch, "main_side": self.main, "epochs": epochs}

    def steps_per_epoch(self) -> float:
        """Steps in which the main size's windows are each drawn once on average."""
        share = float(np.mean(self._sides == self.main)) if self.steps else 1.0
        return self.windows(self.main) / self.batch / max(share, 1e-9)


class StepBatches(Sampler):
    """This process's micro-batches of item descriptors, step after step.

    `plan(step)` gives the global batch (tuples); each item is extended with (step, slot), its
    place in the global batch, which seeds its own random draws (noise, timestep, crop): so the
    numbers do not depend on which process or worker computes it.
    """

    def __init__(self, plan: Callable[[int], list[tuple]], *, batch: int, micro_batch: int, first: int, last: int,
                 runtime: Runtime) -> None:
        self.per_process = split_batch(batch, micro_batch, runtime.world)[0]
        self.micro = micro_batch or self.per_process
        self.plan, self.first, self.last, self.rank = plan, first, last, runtime.rank

    def __len__(self) -> int:
        return (self.last - self.first) * (self.per_process // self.micro)

    def __iter__(self) -> Iterator[list[tuple]]:
        for step in range(self.first, self.last):
            items = self.plan(step)
            low = self.rank * self.per_process
            for begin in range(low, low + self.per_process, self.micro):
                yield [(*items[slot], step, slot) for slot in range(begin, begin + self.micro)]


def split_batch(batch: int, micro_batch: int, world: int) -> tuple[int, int]:
    """(windows per process per step, micro-batches per step); a UsageError when it does not divide."""
    if batch % world:
        raise UsageError(f"`batch` {batch} does not split evenly over {world} processes",
                         fix=f"pass a global batch that is a multiple of {world}")
    per_process = batch // world
    micro = micro_batch or per_process
    if per_process % micro:
        raise UsageError(f"{per_process} windows per process do not split into micro-batches of {micro}",
                         fix="pass a `micro_batch` that divides the batch per process")
    return per_process, per_process // micro
