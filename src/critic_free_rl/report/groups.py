"""Group runs by configuration (algorithm x reward), pooling seeds.

Two runs belong to the same configuration when their resolved configs agree on every
key except seeds and bookkeeping (run directory, overwrite, extra). A configuration is
named ``<algorithm>-<reward>``, followed by ``key=value`` for any other setting that
differs between runs of the same algorithm and reward (an extra sweep axis such as
``algorithm.kl_coef``), so nothing different is silently pooled.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from critic_free_rl.report.events import Run

#: config keys that vary between the seeds of one configuration
SEED_KEYS = frozenset({"trainer.seed", "rollout.seed"})
#: config keys that never make two runs different configurations
BOOKKEEPING_KEYS = frozenset({"run_dir", "overwrite", "resume", "experiment"})
BOOKKEEPING_PREFIXES = ("extra.",)


@dataclass
class Curve:
    """A metric over training steps: mean over seeds and the seeds' min / max."""

    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass
class Group:
    """One configuration and the runs (seeds) that share it."""

    label: str
    runs: list[Run]

    @property
    def algorithm(self) -> str:
        return str(self.runs[0].config.get("algorithm.name", "?"))

    @property
    def variant(self) -> str:
        """The label without its algorithm: the reward shape and any extra setting."""
        return self.label.removeprefix(f"{self.algorithm}-")

    def finals(self, tag: str, last_n: int = 1) -> list[float]:
        """Per run that logged ``tag``: the mean of its last ``last_n`` logged values."""
        return [v for v in (r.tail_mean(tag, last_n) for r in self.runs) if v is not None]

    def curve(self, tag: str) -> Optional[Curve]:
        """Per-step mean / min / max of ``tag`` over the runs that logged that step."""
        by_step: dict[int, list[float]] = defaultdict(list)
        for r in self.runs:
            for step, value in r.scalars.get(tag, []):
                by_step[step].append(value)
        if not by_step:
            return None
        steps = sorted(by_step)
        vals = [np.asarray(by_step[s]) for s in steps]
        return Curve(np.asarray(steps), np.array([v.mean() for v in vals]), np.array([v.min() for v in vals]), np.array([v.max() for v in vals]))


def _identity(run: Run) -> dict[str, Any]:
    return {k: v for k, v in run.config.items()
            if k not in SEED_KEYS and k not in BOOKKEEPING_KEYS and not k.startswith(BOOKKEEPING_PREFIXES)}


def _base(ident: dict[str, Any]) -> str:
    return f"{ident.get('algorithm.name', '?')}-{ident.get('reward.name', '?')}"


def group_runs(runs: list[Run]) -> list[Group]:
    """Configurations in label order, each with its runs: the arms ``compare`` wrote into
    the runs (``extra.arm``) when every run has one, else by differing settings."""
    if runs and all(r.config.get("extra.arm") for r in runs):
        arms: dict[str, list[Run]] = defaultdict(list)
        for run in runs:
            arms[str(run.config["extra.arm"])].append(run)
        return [Group(label, arms[label]) for label in sorted(arms)]
    idents = [_identity(r) for r in runs]
    values: dict[tuple[str, str], set[str]] = defaultdict(set)
    for ident in idents:
        for k, v in ident.items():
            values[(_base(ident), k)].add(repr(v))
    extra_keys = sorted({k for (_, k), vs in values.items() if len(vs) > 1})
    groups: dict[str, list[Run]] = defaultdict(list)
    for run, ident in zip(runs, idents):
        label = ",".join([_base(ident)] + [f"{k}={ident.get(k)}" for k in extra_keys])
        groups[label].append(run)
    return [Group(label, groups[label]) for label in sorted(groups)]
