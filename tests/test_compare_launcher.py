"""`compare` through a Hydra launcher plugin (submitit's local executor, what a SLURM grid
uses minus the cluster) against the built-in process pool: the same 2-run grid lands in the
same run folders and gives the same report, row for row.

Catches: launcher jobs that train other settings than the pool (lost overrides), runs that
land elsewhere than `<runs>/compare-<name>/<run>` (so the report misses them), a launcher
path that never reports, and `hydra.*` dispatch options leaking into the runs' settings."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import run_cli

# the cheapest real path: HF generate, plain torch updates, 2 steps, no sampled evaluation
FAST = ["rollout=hf", "trainer.backend=torch", "trainer.total_steps=2", "trainer.eval_every=0", "eval.num_samples=0",
        "eval.max_new_tokens=16", "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=16",
        "data.max_test_rows=8", "data.num_train=64"]
# wall-clock measurements differ between any two runs; an answer check over its time limit
# depends on the machine's load (a timeout counts as wrong, as the random policy's answers are)
VOLATILE = ("time/", "perf/", "reward/verify_timeouts", "eval/verify_timeouts")


def _compare(root: Path, model: Path, *extra: str):
    res = run_cli("compare", "compare.name=grid", f"compare.runs={root / 'runs'}", f"compare.reports={root / 'reports'}",
                  "algorithm=grpo,rloo", "reward=success", "trainer.seed=0", "model.embedded=false",
                  f"model.name_or_path={model}", *FAST, *extra, timeout=900)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    return res


def _report_tables(root: Path) -> list[str]:
    """The report's table rows, without the wall-time column and with the runs' folders
    relative to the comparison."""
    text = (root / "reports" / "grid" / "report.md").read_text().replace(str(root), "<root>")
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [re.sub(r"\| [\d.]+ ± [\d.]+ \|$", "| <wall> |", r) for r in rows]


def _training(run: Path) -> list[dict]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in recs]


@pytest.mark.slow
def test_submitit_local_launcher_gives_the_pool_report(tiny_model_dir, tmp_path, cache_dir):
    pool, launcher = tmp_path / "pool", tmp_path / "launcher"
    _compare(pool, tiny_model_dir)
    out = _compare(launcher, tiny_model_dir, "compare.launcher=submitit_local", "hydra.launcher.timeout_min=30")
    assert "compare grid: done 2/2, running 0, waiting 0, failed 0" in out.stdout  # the plain progress line

    runs = ["grpo-success-s0", "rloo-success-s0"]
    for root in (pool, launcher):
        assert sorted(p.name for p in (root / "runs" / "compare-grid").iterdir() if (p / "summary.json").is_file()) == runs
    assert any((launcher / "runs" / "compare-grid" / ".submitit").iterdir())  # the jobs went through submitit
    # hydra.* options configure the dispatch, not the runs: not recorded as a plain override
    assert json.loads((launcher / "runs" / "compare-grid" / "compare.json").read_text()) == \
        json.loads((pool / "runs" / "compare-grid" / "compare.json").read_text())
    assert _report_tables(launcher) == _report_tables(pool)
    for run in runs:
        assert _training(launcher / "runs" / "compare-grid" / run) == _training(pool / "runs" / "compare-grid" / run)
        got, want = (json.loads((r / "runs" / "compare-grid" / run / "summary.json").read_text()) for r in (launcher, pool))
        assert (got["steps"], got["final_accuracy"]) == (want["steps"], want["final_accuracy"])
