"""The statistics section of a comparison report: per-arm accuracy intervals, each reward's
paired difference to success-only per algorithm, and the PRM-quality sweep plot; all from
``results.csv``'s rows and the runs' per-problem outcomes (:mod:`~critic_free_rl.report.stats`
documents the resampling); and the protocol the runs shared.

The fair protocol of ``configs/compare/default.yaml`` (its comments give the reasons), which
the report prints from the sweep folder's ``compare.json``: the same KL estimator, placement
and coefficient for every algorithm (k3 in the loss at 0.01), the paper's weights (success 5,
dense 1), the dense mode every estimator implements (return_to_go), one update schedule (4
minibatches, so PPO's ratio clip acts), the learned PRM's Clip threshold set to the median of
its scores on the warm-started policy's samples (``reward.clip_eta_quantile=0.5``, recorded
per run as ``clip_eta``), and a final evaluation on the 1000-problem held-out split.
A paired difference is taken within seed blocks: runs of one seed ran one after another on
one machine (``compare.seeds=[k]``), so machine and seed effects cancel in it."""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from critic_free_rl.report.results import ResultRow, outcome_table
from critic_free_rl.report.stats import BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED, Interval, interval, paired_difference

#: the reward every other reward of an algorithm is compared with
BASELINE_REWARD = "success"
SWEEP_PNG = "prm_quality_sweep.png"
SWEEP_REWARDS = ("pr", "pr_clip_delta")


@dataclass(frozen=True)
class Difference:
    """An arm's paired difference to its algorithm's success-only arm."""

    algorithm: str
    arm: str
    baseline: str
    value: Interval


def baseline_arm(algorithm: str) -> str:
    return f"{algorithm}-{BASELINE_REWARD}"


def arm_intervals(rows: list[ResultRow]) -> dict[str, Interval]:
    """Per arm with per-problem outcomes: mean final held-out accuracy with its interval."""
    return {arm: interval([by_seed[s] for s in sorted(by_seed)]) for arm, by_seed in sorted(outcome_table(rows).items())}


def differences(rows: list[ResultRow]) -> list[Difference]:
    """Per algorithm, every other arm against ``<algorithm>-success`` over their common seeds."""
    table = outcome_table(rows)
    algorithm = {r.arm: r.algorithm for r in rows}
    out = []
    for arm in sorted(table):
        base = baseline_arm(algorithm[arm])
        if arm == base or base not in table or not set(table[arm]) & set(table[base]):
            continue
        out.append(Difference(algorithm[arm], arm, base, paired_difference(table[arm], table[base])))
    return out


def _arm_table(rows: list[ResultRow], intervals: dict[str, Interval]) -> str:
    first = {}
    for r in rows:
        first.setdefault(r.arm, r)
    initial: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r.initial_accuracy is not None:
            initial[r.arm].append(r.initial_accuracy)
    lines = ["| arm | algorithm | reward | PRM | noise | seeds | problems | initial acc. | final acc. [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm, iv in intervals.items():
        r = first[arm]
        init = f"{sum(initial[arm]) / len(initial[arm]):.3f}" if initial[arm] else "–"
        noise = "" if r.prm_noise is None else f"{r.prm_noise:g}"
        lines.append(f"| `{arm}` | {r.algorithm} | {r.reward} | {r.prm or '–'} | {noise} | {iv.seeds} | {iv.problems} | {init} | {iv.format()} |")
    return "\n".join(lines)


def _difference_table(diffs: list[Difference]) -> str:
    lines = ["| algorithm | arm | minus | seeds | difference [95% CI] | excludes 0 |", "|---|---|---|---|---|---|"]
    for d in diffs:
        mark = "**yes**" if d.value.excludes_zero else "no"
        lines.append(f"| {d.algorithm} | `{d.arm}` | `{d.baseline}` | {d.value.seeds} | {d.value.format(signed=True)} | {mark} |")
    return "\n".join(lines)


def plot_sweep(rows: list[ResultRow], diffs: list[Difference], out: Path) -> Optional[Path]:
    """Accuracy gain over success-only against the exact PRM's noise, one line per reward of
    :data:`SWEEP_REWARDS`, one panel per algorithm, bars the 95% intervals, a dashed line at
    the learned PRM's gain with the same reward; None without exact-PRM arms."""
    noise = {r.arm: r.prm_noise for r in rows if r.prm == "exact"}
    reward = {r.arm: r.reward for r in rows}
    points = [d for d in diffs if d.arm in noise and reward[d.arm] in SWEEP_REWARDS]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algorithms = sorted({d.algorithm for d in points})
    fig, axes = plt.subplots(1, len(algorithms), figsize=(max(6.0, 4.2 * len(algorithms)), 3.8), sharey=True, squeeze=False)
    for ax, algorithm in zip(axes[0], algorithms):
        for i, rw in enumerate(SWEEP_REWARDS):
            mine = sorted((noise[d.arm], d.value) for d in points if d.algorithm == algorithm and reward[d.arm] == rw)
            if not mine:
                continue
            x = [p for p, _ in mine]
            y = [v.estimate for _, v in mine]
            err = [[v.estimate - v.low for _, v in mine], [v.high - v.estimate for _, v in mine]]
            line = ax.errorbar([xi + 0.006 * (i - 0.5) for xi in x], y, yerr=err, marker="o", capsize=3, label=f"{rw} (exact PRM)")
            learned = [d.value.estimate for d in diffs if d.algorithm == algorithm and d.arm == f"{algorithm}-{rw}"]
            if learned:  # the learned PRM's gain, for where it sits on the noise scale
                ax.axhline(learned[0], linestyle="--", linewidth=1, color=line[0].get_color(), label=f"{rw} (learned PRM)")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set(title=algorithm, xlabel="PRM noise (flip probability)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy gain over success-only")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("PRM-quality sweep: gain over success-only, paired within seed blocks, 95% CI", fontsize=10)
    fig.tight_layout()
    path = out / SWEEP_PNG
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def statistics_section(rows: list[ResultRow], out: Path) -> str:
    """The markdown of the statistics (empty when no run saved per-problem outcomes)."""
    intervals = arm_intervals(rows)
    if not intervals:
        return ""
    diffs = differences(rows)
    sweep = plot_sweep(rows, diffs, out)
    parts = [
        "## Held-out accuracy with 95% confidence intervals\n",
        "Final greedy accuracy on the held-out split per arm: the mean over seeds and problems, with a "
        f"two-way bootstrap interval (seeds and problems resampled with replacement, {BOOTSTRAP_REPLICATES} "
        f"replicates, numpy seed {BOOTSTRAP_SEED}; `report/stats.py` gives the exact scheme). "
        "Initial accuracy: the warm-started policy on the same split, mean over the arm's runs.\n",
        _arm_table(rows, intervals) + "\n",
        "## Each reward against success-only (paired within seed blocks)\n",
        "Per algorithm: the arm's accuracy minus the success-only arm's, problem by problem over the seeds "
        "both ran, with its bootstrap interval; **yes** marks an interval that excludes 0.\n",
        (_difference_table(diffs) if diffs else "No arm has a success-only arm of its algorithm with a common seed.") + "\n",
    ]
    if sweep is not None:
        parts += ["## PRM-quality sweep\n", f"![PRM-quality sweep]({sweep.name})\n"]
    return "\n".join(parts)


def protocol_section(run_dirs: list[Path]) -> str:
    """The settings every run of each sweep folder shared (its ``compare.json``, written by
    ``compare``); empty when no run came from ``compare``."""
    parts = []
    for folder in sorted({Path(p).resolve().parent for p in run_dirs}):
        record = folder / "compare.json"
        if not record.is_file():
            continue
        rec = json.loads(record.read_text())
        lines = [f"- `{ov}`" for ov in rec.get("overrides", [])]
        lines += [f"- {alg} only: {', '.join(f'`{ov}`' for ov in ovs)}" for alg, ovs in sorted(rec.get("per_algorithm", {}).items()) if ovs]
        parts.append(f"Settings of every run in `{folder}` (its `compare.json`):\n\n" + "\n".join(lines) + "\n")
    return "## Protocol\n\n" + "\n".join(parts) if parts else ""
