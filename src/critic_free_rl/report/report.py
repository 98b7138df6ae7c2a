"""The comparison report of training runs (``critic-free-rl report``, :mod:`critic_free_rl.cli.report`).

Reads the runs' TensorBoard event files, groups them by configuration (seeds pooled) and
writes ``<out>/<name>/``: ``report.md`` (the table, the held-out intervals and paired
differences when the runs saved per-problem outcomes, the curves, how to open
TensorBoard), ``results.csv`` (one row per run), one PNG per curve and ``tb/`` (a
TensorBoard logdir with a custom-scalars layout).
A RUN_DIR may also be a folder of runs (e.g. a ``compare`` sweep directory).
"""
from __future__ import annotations

import os
from pathlib import Path

from critic_free_rl.report.comparison import protocol_section, statistics_section
from critic_free_rl.report.events import Run, find_run_dirs, load_run
from critic_free_rl.report.groups import Group, group_runs
from critic_free_rl.report.plots import plot_curves
from critic_free_rl.report.results import result_row, write_results_csv
from critic_free_rl.report.tables import TAIL_STEPS, markdown_table
from critic_free_rl.report.tensorboard_view import write_tensorboard_view

TABLE_NOTE = (
    "Held-out accuracies are each run's final evaluation; steps / response, length, the "
    "repeated-step fraction (steps that repeat an earlier step of the same response) and the "
    "share of responses cut at the token limit (no final answer) are the "
    f"mean over each run's last {TAIL_STEPS} training batches. Mean ± sample standard deviation "
    "over seeds. Wall time is the training run's wall-clock time (`summary.json`; for an "
    "unfinished run, the span of its logged events)."
)


def _runs_section(groups: list[Group]) -> str:
    lines = ["| configuration | seed | finished | run directory |", "|---|---|---|---|"]
    for g in groups:
        for r in g.runs:
            lines.append(f"| `{g.label}` | {r.config.get('trainer.seed', '?')} | {'yes' if r.finished else '**no**'} | `{r.path}` |")
    return "\n".join(lines)


def _tensorboard_section(tb_dir: Path, runs: list[Run]) -> str:
    parent = os.path.commonpath([r.path.resolve() for r in runs])
    return (
        "## TensorBoard\n\n"
        f"```\ntensorboard --logdir {tb_dir}\n```\n\n"
        "and open the **CUSTOM SCALARS** tab: one chart per metric, one line per configuration "
        "(the mean over seeds; the SCALARS tab shows the same curves one tag at a time). "
        f"Every seed of every run: `tensorboard --logdir {parent}`.\n"
    )


def report_dir_of(out: Path, name: str) -> Path:
    """``out / name``; ``ValueError`` when ``name`` would leave ``out`` (``..``, an absolute
    path, a separator): the report folder's ``tb/`` is rewritten."""
    if not name or name in (".", "..") or Path(name).name != name or "/" in name or os.sep in name:
        raise ValueError(f"report name {name!r} must be a plain folder name (no '/', '..' or absolute path)")
    return out / name


def write_report(run_dirs: list[Path], name: str, out: Path) -> Path:
    """Write the report of ``run_dirs`` into ``out / name``; returns the report.md path."""
    report_dir = report_dir_of(out, name)
    runs = [load_run(p) for p in find_run_dirs(run_dirs)]
    groups = group_runs(runs)
    report_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_curves(groups, report_dir)
    tb_dir = write_tensorboard_view(groups, report_dir / "tb")
    parts = [
        f"# Comparison `{name}`\n",
        f"Runs: {len(runs)}; configurations: {len(groups)} (seeds pooled).\n",
        "## Final metrics\n",
        markdown_table(groups) + "\n",
        TABLE_NOTE + "\n",
    ]
    rows = [result_row(r) for r in runs if r.finished]
    write_results_csv(rows, report_dir / "results.csv")
    parts += [protocol_section([r.path for r in runs]), statistics_section(rows, report_dir)]
    unfinished = [r for r in runs if not r.finished]
    if unfinished:
        parts.append(f"**{len(unfinished)} run(s) have not finished** (no `summary.json`): their last logged values are used.\n")
    parts.append("## Training curves\n")
    parts += [f"### {spec.title}\n\n![{spec.title}]({path.name})\n" for spec, path in plots]
    parts += [_tensorboard_section(tb_dir, runs), "## Runs\n", _runs_section(groups) + "\n"]
    report = report_dir / "report.md"
    report.write_text("\n".join(parts))
    return report


def default_name(run_dirs: list[Path]) -> str:
    """A single folder's own name, else the name of the folders' common parent."""
    resolved = [p.resolve() for p in run_dirs]
    if len(resolved) == 1:
        return resolved[0].name
    return Path(os.path.commonpath([p.parent for p in resolved])).name or "report"
