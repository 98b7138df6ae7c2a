"""One row per run (``results.csv``) and the per-problem outcomes of its final evaluation.

A row's accuracies are those of the held-out split (``data.final_split``: the runs of
``compare``) when the run evaluated one, else its test-split evaluations; ``eval_split``
says which. ``arm`` is the arm a ``compare`` run belongs to (``extra.arm``), ``reward`` its
reward group (``extra.reward_group``, e.g. ``success_overlong``), falling back to the
config's ``reward.name``; ``prm`` is ``learned``, ``exact`` or empty, ``prm_noise`` a number
for ``exact`` only.
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np

from critic_free_rl.report.events import Run

#: the per-problem outcomes a run writes for its final evaluation (evaluation.final_split_eval)
OUTCOMES_FILE = "final_outcomes.jsonl"
#: reward names that read no PRM
NO_PRM_REWARDS = frozenset({"success", "orm"})


@dataclass
class ResultRow:
    """A row of ``results.csv``."""

    arm: str
    algorithm: str
    reward: str
    prm: str
    prm_noise: Optional[float]
    seed: int
    steps: Optional[int]
    initial_accuracy: Optional[float]
    final_accuracy: Optional[float]
    eval_split: str
    problems: Optional[int]
    clip_eta: Optional[float]
    machine: str
    policy_sha256: str
    prm_sha256: str
    wall_seconds: Optional[float]
    run_dir: str


def prm_kind(config: dict[str, Any]) -> str:
    """``learned`` / ``exact`` / ``""``: what scored the run's steps (flattened config)."""
    if config.get("reward.name") in NO_PRM_REWARDS or not config.get("reward.prm"):
        return ""
    return "exact" if config.get("reward.prm") == "exact" else "learned"


def arm_of(run: Run) -> str:
    """The run's arm: ``extra.arm`` (written by ``compare``), else ``<algorithm>-<reward>``."""
    c = run.config
    return str(c.get("extra.arm") or f"{c.get('algorithm.name', '?')}-{c.get('reward.name', '?')}")


def result_row(run: Run) -> ResultRow:
    c, s = run.config, run.summary or {}
    kind = prm_kind(c)
    heldout = s.get("final_heldout_accuracy") is not None
    outcomes = run.path / OUTCOMES_FILE
    return ResultRow(
        arm=arm_of(run), algorithm=str(c.get("algorithm.name", "")), reward=str(c.get("extra.reward_group") or c.get("reward.name", "")),
        prm=kind, prm_noise=float(c.get("reward.prm_noise") or 0.0) if kind == "exact" else None,
        seed=int(c.get("trainer.seed", 0)), steps=s.get("steps"),
        initial_accuracy=s.get("initial_heldout_accuracy") if heldout else s.get("initial_accuracy"),
        final_accuracy=s.get("final_heldout_accuracy") if heldout else s.get("final_accuracy"),
        eval_split=str(c.get("data.final_split")) if heldout else str(c.get("data.test_split", "test")),
        problems=sum(1 for _ in outcomes.open()) if heldout and outcomes.is_file() else None,
        clip_eta=s.get("clip_eta"), machine=s.get("machine") or "", policy_sha256=s.get("policy_sha256") or "",
        prm_sha256=s.get("prm_sha256") or "", wall_seconds=s.get("wall_seconds"), run_dir=str(run.path),
    )


def write_results_csv(rows: list[ResultRow], path: Path) -> Path:
    """``results.csv``: a header of :class:`ResultRow`'s fields, one line per row (None -> empty)."""
    names = [f.name for f in fields(ResultRow)]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in asdict(row).items()})
    return path


def read_outcomes(run_dir: Path) -> tuple[list[str], np.ndarray]:
    """``(prompt hashes, correct [N])`` of a run's final evaluation, in problem order."""
    rows = [json.loads(line) for line in (Path(run_dir) / OUTCOMES_FILE).read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: r["index"])
    return [r["prompt_sha256"] for r in rows], np.array([bool(r["correct"]) for r in rows], dtype=np.float64)


def outcome_table(rows: list[ResultRow]) -> dict[str, dict[int, np.ndarray]]:
    """``{arm: {seed: outcomes [N]}}`` of the rows whose run saved per-problem outcomes; every
    run must have evaluated the same problems in the same order (ValueError naming the run)."""
    table: dict[str, dict[int, np.ndarray]] = {}
    reference: Optional[tuple[list[str], str]] = None
    for row in rows:
        if not (Path(row.run_dir) / OUTCOMES_FILE).is_file():
            continue
        hashes, correct = read_outcomes(Path(row.run_dir))
        if reference is None:
            reference = (hashes, row.run_dir)
        elif hashes != reference[0]:
            raise ValueError(f"{row.run_dir}: its final evaluation's problems differ from those of {reference[1]}; "
                             "runs compared on different problems cannot be pooled or paired")
        if row.seed in table.setdefault(row.arm, {}):
            raise ValueError(f"arm {row.arm!r} has two runs of seed {row.seed} (one is {row.run_dir})")
        table[row.arm][row.seed] = correct
    return table
