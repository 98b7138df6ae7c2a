"""Confidence intervals of a comparison from per-problem outcomes: pure functions on arrays.

The data of one arm is ``Y [S, N]``: ``Y[s, p] = 1`` when the run of seed ``s`` answered
held-out problem ``p`` correctly at its final evaluation (every run of a comparison is
evaluated on the same ``N`` problems, in the same order). The arm's accuracy is
``mean_s mean_p Y[s, p]``.

**Resampling scheme** (a two-way bootstrap: seeds and problems are crossed, so both are
resampled, each with replacement, and every replicate uses one problem sample for all of
its seeds). With ``rng = numpy.random.default_rng(seed)``, replicate ``b = 0 .. B-1``
draws, in this order for the whole batch of replicates::

    seed_idx = rng.integers(0, S, size=(B, S))      # S seeds with replacement, per replicate
    prob_idx = rng.integers(0, N, size=(B, N))      # N problems with replacement, per replicate
    stat[b]  = mean_{i, j} Y[seed_idx[b, i], prob_idx[b, j]]

and the 95% interval is the 2.5 and 97.5 percentiles of ``stat`` (numpy's default
linear interpolation). The paired difference of two arms of one algorithm takes
``D = Y_a - Y_b`` over the seeds both have (seed blocks: the same seed ran both arms in one
block) and bootstraps ``D`` the same way; an interval that excludes 0 marks a difference
the data supports at the 95% level. Every interval of a report uses
:data:`BOOTSTRAP_SEED` and :data:`BOOTSTRAP_REPLICATES`, so recomputing one gives the same
numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SEED = 0
BOOTSTRAP_REPLICATES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval."""

    estimate: float
    low: float
    high: float
    seeds: int
    problems: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def format(self, digits: int = 3, signed: bool = False) -> str:
        f = f"{{:{'+' if signed else ''}.{digits}f}}"
        return f"{f.format(self.estimate)} [{f.format(self.low)}, {f.format(self.high)}]"


def bootstrap_means(y: np.ndarray, replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``[replicates]`` bootstrap means of ``y [S, N]`` under the module's scheme."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or 0 in y.shape:
        raise ValueError(f"outcomes must be a non-empty [seeds, problems] array, got shape {y.shape}")
    s, n = y.shape
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, s, size=(replicates, s))
    prob_idx = rng.integers(0, n, size=(replicates, n))
    # mean over (seed_idx x prob_idx) = mean over drawn seeds of the row means over drawn problems
    return np.stack([y[seed_idx[b]][:, prob_idx[b]].mean() for b in range(replicates)])


def interval(y: np.ndarray, replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED) -> Interval:
    """Mean of ``y [S, N]`` with its 95% two-way bootstrap interval."""
    y = np.asarray(y, dtype=np.float64)
    stats = bootstrap_means(y, replicates, seed)
    alpha = (1 - LEVEL) / 2
    low, high = np.percentile(stats, [100 * alpha, 100 * (1 - alpha)])
    return Interval(float(y.mean()), float(low), float(high), y.shape[0], y.shape[1])


def paired_difference(a: dict[int, np.ndarray], b: dict[int, np.ndarray], replicates: int = BOOTSTRAP_REPLICATES,
                      seed: int = BOOTSTRAP_SEED) -> Interval:
    """``a - b`` over the seeds both arms ran (``{seed: outcomes [N]}``, the same problems
    in the same order), with its interval; ValueError when they share no seed."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError(f"no common seed block (seeds {sorted(a)} against {sorted(b)})")
    d = np.stack([np.asarray(a[s], dtype=np.float64) - np.asarray(b[s], dtype=np.float64) for s in common])
    return interval(d, replicates, seed)
