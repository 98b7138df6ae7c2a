"""The comparison table: final metrics per configuration, mean ± spread over seeds.

Held-out accuracies are a run's final evaluation. Training-batch metrics (steps per
response, length, repeated steps, responses cut at the token limit) are the mean over a
run's last :data:`TAIL_STEPS` steps: one batch holds 16 prompts, whose mix of short and
long problems moves these numbers more than a policy does from one step to the next. The spread is the sample
standard deviation over seeds (0 for a single seed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from critic_free_rl.report.groups import Group

WALL_TIME = "wall_seconds"
#: training steps averaged for the training-batch columns
TAIL_STEPS = 10


@dataclass(frozen=True)
class Column:
    """A table column: a TensorBoard tag (or :data:`WALL_TIME`), header, number format, and
    how many last logged values of a run it averages."""

    key: str
    header: str
    fmt: str
    last_n: int = 1


COLUMNS: tuple[Column, ...] = (
    Column("eval/greedy_accuracy", "greedy acc.", "{:.3f}"),
    Column("eval/sampling_accuracy", "sampling acc.", "{:.3f}"),
    Column("reward/steps_per_response", "steps / response", "{:.2f}", TAIL_STEPS),
    Column("response/length_tokens", "length (tokens)", "{:.1f}", TAIL_STEPS),
    Column("reward/repeated_step_frac", "repeated-step frac.", "{:.3f}", TAIL_STEPS),
    Column("response/truncated_frac", "cut at token limit", "{:.3f}", TAIL_STEPS),
    Column(WALL_TIME, "wall time (s)", "{:.0f}"),
)


@dataclass(frozen=True)
class Stat:
    """Mean and spread of one column over the seeds that have a value."""

    mean: float
    spread: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Optional["Stat"]:
        if not values:
            return None
        arr = np.asarray(values, dtype=np.float64)
        return cls(float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, len(arr))

    def format(self, fmt: str) -> str:
        return f"{fmt.format(self.mean)} ± {fmt.format(self.spread)}"


def column_values(group: Group, column: Column) -> list[float]:
    """The per-run values of ``column`` in ``group``."""
    if column.key == WALL_TIME:
        return [r.wall_seconds for r in group.runs]
    return group.finals(column.key, column.last_n)


def summary_rows(groups: list[Group]) -> list[tuple[Group, list[Optional[Stat]]]]:
    """One row per configuration: a :class:`Stat` (or None) per column of :data:`COLUMNS`."""
    return [(g, [Stat.of(column_values(g, c)) for c in COLUMNS]) for g in groups]


def markdown_table(groups: list[Group]) -> str:
    """The table as GitHub markdown."""
    head = ["configuration", "seeds"] + [c.header for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, stats in summary_rows(groups):
        cells = [f"`{group.label}`", str(len(group.runs))]
        cells += ["–" if s is None else s.format(c.fmt) for s, c in zip(stats, COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
