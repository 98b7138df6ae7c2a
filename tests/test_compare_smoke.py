"""`critic-free-rl compare` in miniature: grpo,rloo x success x 1 seed, 2 steps each on a
tiny random model, two jobs at once; both runs finish, neither holds more threads than its
share of the cores, the report is written, and running the same command again reuses the
finished runs instead of retraining them."""
from __future__ import annotations

import json

import pytest
from conftest import run_cli

from critic_free_rl.cli.compare import DEFAULT_AXES, DEFAULT_SETTINGS, plan, split_args
from critic_free_rl.config.environment import available_cores

FAST = ["trainer=torch", "trainer.total_steps=2", "trainer.eval_every=0", "eval.num_samples=0", "eval.max_new_tokens=16",
        "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=16", "data.max_test_rows=8", "data.num_train=64"]


@pytest.mark.slow
def test_compare_runs_reports_and_resumes(tiny_model_dir, tmp_path, cache_dir):
    args = ["compare", "compare.name=smoke", "compare.jobs=2", f"compare.runs={tmp_path / 'runs'}", f"compare.reports={tmp_path / 'reports'}",
            "algorithm=grpo,rloo", "reward=success", "trainer.seed=0",
            "model.embedded=false", f"model.name_or_path={tiny_model_dir}", *FAST]
    first = run_cli(*args)
    assert first.returncode == 0, (first.stdout[-2000:], first.stderr[-3000:])
    sweep = tmp_path / "runs" / "compare-smoke"
    runs = [sweep / f"{a}-success-s0" for a in ("grpo", "rloo")]
    cores = available_cores()
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["steps"] == 2
        # two runs at once share the cores: one thread per core in each oversubscribes them
        assert summary["cpu_threads"] == max(1, cores // 2) and (cores < 2 or summary["cpu_threads"] * 2 <= cores)
    report = tmp_path / "reports" / "smoke" / "report.md"
    text = report.read_text()
    assert "`grpo-success`" in text and "`rloo-success`" in text and (report.parent / "eval_greedy_accuracy.png").is_file()

    mtimes = [(run / "summary.json").stat().st_mtime_ns for run in runs]
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished run reused") == 2
    assert [(run / "summary.json").stat().st_mtime_ns for run in runs] == mtimes

    changed = run_cli(*args, "trainer.total_steps=3")  # same name, different plain setting
    assert changed.returncode != 0 and "choose another compare.name" in changed.stderr


def test_plan_axes_and_run_dirs(tmp_path):
    fixed, jobs = plan([], tmp_path)
    assert fixed == list(DEFAULT_SETTINGS) and len(jobs) == 3 * 5 * 2 and len({j.run_dir for j in jobs}) == len(jobs)
    assert set(DEFAULT_AXES) == {"algorithm", "reward", "trainer.seed"}
    assert [j.overrides[0] for j in jobs[:10]] == ["algorithm=ppo"] * 10  # the slowest runs start first
    fixed, jobs = plan(["algorithm=grpo,rloo", "reward=success", "algorithm.kl_coef=0.01,0.1", "model.name_or_path=/m/x",
                        "trainer.total_steps=100"], tmp_path)
    # plain overrides stay out of the run directory names; one for a default setting replaces it
    assert fixed == ["trainer.eval_every=25", "model.name_or_path=/m/x", "trainer.total_steps=100"]
    assert len(jobs) == 2 * 2 * 2
    assert tmp_path / "grpo-success-s0-algorithm.kl_coef_0.01" in {j.run_dir for j in jobs}


def test_compare_options_are_separated_and_checked():
    opts, rest = split_args(["compare.name=x", "algorithm=grpo", "compare.runs=/r"])
    assert (opts.name, opts.runs, opts.reports, opts.jobs, rest) == ("x", "/r", "reports", 0, ["algorithm=grpo"])
    with pytest.raises(SystemExit, match="unknown option"):
        split_args(["compare.nmae=x"])


def test_parallel_jobs_default_and_bounds(monkeypatch):
    import os

    import torch

    from critic_free_rl.cli.compare import parallel_jobs

    assert parallel_jobs(3) == 3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parallel_jobs(0) == len(os.sched_getaffinity(0))  # CPU: one single-threaded run per core
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert parallel_jobs(0) == 1  # one GPU: the runs would share it
    with pytest.raises(SystemExit, match="compare.jobs=-1 must be >= 0"):
        parallel_jobs(-1)
