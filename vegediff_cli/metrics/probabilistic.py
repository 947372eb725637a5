"""Scores of ensemble (member) forecasts: fair CRPS, spread-skill ratio, rank histogram, reliability.

Pure numpy. Samples are flattened: ``observed (N,)``, ``members (N, M)``;
only finite observations are passed in. :class:`EnsembleSums` keeps sums and counts so that the
scores of many row blocks and many cubes pool exactly.

- Fair CRPS (Ferro 2014): mean|x_i - y| - sum_{i,j}|x_i - x_j| / (2 M (M - 1)); unbiased for the
  CRPS of the distribution the M members are drawn from, so ensembles of different sizes compare.
  Equal to scoringrules' ``crps_ensemble(..., estimator="fair")`` (checked in tests/test_metrics.py).
- Spread-skill ratio (Fortin et al. 2014): sqrt((M + 1) / M * mean ensemble variance) / RMSE of the
  ensemble mean; 1 for a calibrated ensemble, < 1 under-dispersive, > 1 over-dispersive.
- Rank histogram (Talagrand): rank of the observation among the members, M + 1 bins, ties broken
  at random; flat for a calibrated ensemble, U-shaped when under-dispersive.
- Reliability: forecast probabilities binned (0-0.1, ..., 0.9-1) against the observed frequency
  of the event; Brier score = mean (p - o)^2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RELIABILITY_BINS = 10


def crps_fair(observed: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Fair CRPS per sample: observed (N,), members (N, M) with M >= 2 (Ferro 2014, eq. 3).

    The spread term uses sorted members, sum_{i,j}|x_i - x_j| = 2 sum_k (2k - M - 1) x_(k), so memory
    and time grow with N M, not N M^2 (scoringrules' "fair" estimator, which the tests compare
    against, builds the (N, M, M) differences: gigabytes on a tile).
    """
    members = np.asarray(members, dtype="float64")
    observed = np.asarray(observed, dtype="float64")
    m = members.shape[-1]
    if m < 2:
        raise ValueError("the fair CRPS needs at least 2 members")
    error = np.abs(members - observed[..., None]).mean(axis=-1)
    weights = 2.0 * np.arange(1, m + 1) - m - 1.0  # (M,)
    pair_sum = 2.0 * (np.sort(members, axis=-1) * weights).sum(axis=-1)
    return error - pair_sum / (2.0 * m * (m - 1))


def ensemble_variance(members: np.ndarray) -> np.ndarray:
    """Unbiased (ddof=1) variance over the member axis (last)."""
    return np.var(np.asarray(members, dtype="float64"), axis=-1, ddof=1)


def spread_skill_ratio(observed: np.ndarray, members: np.ndarray) -> float:
    """sqrt((M + 1) / M * mean variance) / RMSE of the ensemble mean."""
    members = np.asarray(members, dtype="float64")
    m = members.shape[-1]
    spread = np.sqrt((m + 1) / m * ensemble_variance(members).mean())
    skill = np.sqrt(((members.mean(axis=-1) - observed) ** 2).mean())
    return float(spread / skill)


def observation_ranks(observed: np.ndarray, members: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Rank 0..M of each observation among its members; ties get a uniformly drawn rank among them."""
    members = np.asarray(members, dtype="float64")
    obs = np.asarray(observed, dtype="float64")[..., None]
    below = (members < obs).sum(axis=-1)
    ties = (members == obs).sum(axis=-1)
    return below + rng.integers(0, ties + 1)


def rank_histogram(observed: np.ndarray, members: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Counts of observation ranks, shape (M + 1,)."""
    m = np.asarray(members).shape[-1]
    return np.bincount(observation_ranks(observed, members, rng=rng), minlength=m + 1)


@dataclass
class ReliabilityCounts:
    """Per probability bin: samples, summed forecast probability, events observed; plus the Brier sum."""

    n: np.ndarray = field(default_factory=lambda: np.zeros(RELIABILITY_BINS, dtype="int64"))
    prob_sum: np.ndarray = field(default_factory=lambda: np.zeros(RELIABILITY_BINS))
    events: np.ndarray = field(default_factory=lambda: np.zeros(RELIABILITY_BINS, dtype="int64"))
    brier_sum: float = 0.0

    def add(self, probability: np.ndarray, event: np.ndarray) -> None:
        """probability (N,) in [0, 1] of the event; event (N,) bool, what happened."""
        p = np.clip(np.asarray(probability, dtype="float64"), 0.0, 1.0)
        o = np.asarray(event, dtype=bool)
        bins = np.minimum((p * RELIABILITY_BINS).astype("int64"), RELIABILITY_BINS - 1)
        self.n += np.bincount(bins, minlength=RELIABILITY_BINS)
        self.prob_sum += np.bincount(bins, weights=p, minlength=RELIABILITY_BINS)
        self.events += np.bincount(bins, weights=o, minlength=RELIABILITY_BINS).astype("int64")
        self.brier_sum += float(((p - o) ** 2).sum())

    def merge(self, other: ReliabilityCounts) -> ReliabilityCounts:
        return ReliabilityCounts(self.n + other.n, self.prob_sum + other.prob_sum, self.events + other.events,
                                 self.brier_sum + other.brier_sum)

    def summary(self) -> dict:
        """Brier score, base rate and the reliability curve (bins with samples only)."""
        total = int(self.n.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            forecast = self.prob_sum / self.n
            observed = self.events / self.n
        edges = np.linspace(0.0, 1.0, RELIABILITY_BINS + 1)
        return {
            "samples": total,
            "brier": self.brier_sum / total if total else None,
            "base_rate": float(self.events.sum() / total) if total else None,
            "bins": [
                {"lower": round(float(edges[i]), 6), "upper": round(float(edges[i + 1]), 6), "samples": int(self.n[i]),
                 "mean_probability": float(forecast[i]), "observed_frequency": float(observed[i])}
                for i in range(RELIABILITY_BINS) if self.n[i] > 0
            ],
        }


@dataclass
class EnsembleSums:
    """Pooled sums of the member scores of one forecast (any number of blocks and cubes)."""

    members: int  # ensemble size M
    samples: int = 0  # (pixel, step) pairs with a valid observation
    crps_sum: float = 0.0
    variance_sum: float = 0.0  # sum of unbiased ensemble variances
    squared_error_sum: float = 0.0  # sum of (ensemble mean - observation)^2
    ranks: np.ndarray | None = None  # (M + 1,) rank histogram counts
    reliability: dict[str, ReliabilityCounts] = field(default_factory=dict)  # event name -> counts
    abs_error_sum: float = 0.0  # sum of |ensemble mean - observation|: the CRPS of the mean as a point forecast

    def add_members(self, observed: np.ndarray, members: np.ndarray, *, rng: np.random.Generator) -> None:
        """observed (N,) finite; members (N, M)."""
        members = np.clip(np.asarray(members, dtype="float64"), -1.0, 1.0)
        if members.shape[-1] != self.members:
            raise ValueError(f"expected {self.members} members, got {members.shape[-1]}")
        if observed.size == 0:
            return
        self.samples += observed.size
        self.crps_sum += float(crps_fair(observed, members).sum())
        self.variance_sum += float(ensemble_variance(members).sum())
        self.squared_error_sum += float(((members.mean(axis=-1) - observed) ** 2).sum())
        self.abs_error_sum += float(np.abs(members.mean(axis=-1) - observed).sum())
        counts = rank_histogram(observed, members, rng=rng)
        self.ranks = counts if self.ranks is None else self.ranks + counts

    def add_probability(self, event: str, probability: np.ndarray, happened: np.ndarray) -> None:
        self.reliability.setdefault(event, ReliabilityCounts()).add(probability, happened)

    def merge(self, other: EnsembleSums) -> EnsembleSums:
        if other.members != self.members and self.samples and other.samples:
            raise ValueError(f"cannot pool {self.members}-member and {other.members}-member scores")
        members = self.members if self.samples else other.members
        ranks = other.ranks if self.ranks is None else self.ranks if other.ranks is None else self.ranks + other.ranks
        reliability = dict(self.reliability)
        for name, counts in other.reliability.items():
            reliability[name] = reliability[name].merge(counts) if name in reliability else counts
        return EnsembleSums(members, self.samples + other.samples, self.crps_sum + other.crps_sum,
                            self.variance_sum + other.variance_sum, self.squared_error_sum + other.squared_error_sum,
                            ranks, reliability, self.abs_error_sum + other.abs_error_sum)

    def summary(self) -> dict:
        """crps (fair), spread, rmse and mae of the ensemble mean, spread-skill ratio, rank histogram, reliability."""
        out: dict = {"members": self.members or None, "samples": self.samples}
        if self.samples:
            m = self.members
            spread = float(np.sqrt((m + 1) / m * self.variance_sum / self.samples))
            skill = float(np.sqrt(self.squared_error_sum / self.samples))
            out.update({
                "crps": self.crps_sum / self.samples,
                "spread": spread,
                "rmse_ensemble_mean": skill,
                "mae_ensemble_mean": self.abs_error_sum / self.samples,
                "spread_skill_ratio": spread / skill if skill > 0 else None,
                "rank_histogram": [int(c) for c in self.ranks] if self.ranks is not None else None,
            })
        if self.reliability:
            out["reliability"] = {name: counts.summary() for name, counts in sorted(self.reliability.items())}
        return out
