"""`critic-free-rl compare` in miniature.

The slow test runs the 2-arm grid file ``tests/grids/smoke.yaml`` (grpo x success,
pr_clip_delta with a tiny random PRM) as seed block 0, 2 steps a run on a tiny random
policy with the HF rollout and the torch learner. It catches: a grid run that does not
finish or does not save its held-out per-problem outcomes, a Clip threshold not taken from
the PRM's scores, a results.csv or report without the intervals, and a block that does not
resume (a finished run retrained, or an interrupted one left unfinished). The other tests
plan grids and sweeps without training.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from critic_free_rl.cli.compare import split_args
from critic_free_rl.cli.grid import DEFAULT_AXES, DEFAULT_SETTINGS, Arm, GridError, load_grid, parse_grid, plan_grid, plan_sweep, validate_jobs
from critic_free_rl.config.environment import available_cores
from critic_free_rl.config.loading import config_dir

SMOKE_GRID = REPO / "tests" / "grids" / "smoke.yaml"
FAST = ["rollout=hf", "trainer=torch", "trainer.total_steps=2", "trainer.eval_every=0", "eval.num_samples=0", "eval.max_new_tokens=16",
        "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=16", "data.max_test_rows=8", "data.num_train=64",
        "data.num_heldout=12", "trainer.log_completions=0", "reward.prm_device=cpu"]


@pytest.fixture(scope="module")
def tiny_prm_dir(tmp_path_factory) -> Path:
    """A random tiny token-classification PRM reading ``<extra_0>`` (the PR rewards' separator)."""
    from critic_free_rl.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("prm") / "model", token_classification=True, extra_tokens=["<extra_0>"],
                            hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


@pytest.mark.slow
def test_grid_block_runs_reports_and_resumes(tiny_model_dir, tiny_prm_dir, tmp_path, cache_dir):
    args = ["compare", "compare.name=smoke", f"compare.grid={SMOKE_GRID}", "compare.seeds=[0]", "compare.jobs=2",
            f"compare.runs={tmp_path / 'runs'}", f"compare.reports={tmp_path / 'reports'}",
            "model.embedded=false", f"model.name_or_path={tiny_model_dir}", f"reward.prm={tiny_prm_dir}", *FAST]
    sweep = tmp_path / "runs" / "compare-smoke"
    success, shaped = sweep / "grpo-success-s0", sweep / "grpo-pr_clip_delta-s0"
    # the block interrupted after its first arm: only that one ran, and the second left a
    # started run behind (config and event files, no summary)
    first = run_cli(*args, "reward=success")
    assert first.returncode == 0, (first.stdout[-2000:], first.stderr[-3000:])
    shaped.mkdir(parents=True)
    for f in ("config.yaml", *(p.name for p in success.glob("events.out.tfevents*"))):
        shutil.copy(success / f, shaped / f)
    mtime = (success / "summary.json").stat().st_mtime_ns

    again = run_cli(*args)
    assert again.returncode == 0, (again.stdout[-2000:], again.stderr[-3000:])
    assert again.stdout.count("finished run reused") == 1 and (success / "summary.json").stat().st_mtime_ns == mtime
    summaries = {run.name: json.loads((run / "summary.json").read_text()) for run in (success, shaped)}
    assert summaries[shaped.name]["reward"] == "pr_clip_delta" and summaries[shaped.name]["steps"] == 2
    # a call that plans two runs (compare.jobs=2) gives each its share of the cores, never one thread per core
    # each (which oversubscribed them 10-20x); the first call ran its one run alone, with every core
    cores = available_cores()
    assert summaries[shaped.name]["cpu_threads"] == max(1, cores // 2) and summaries[success.name]["cpu_threads"] == cores
    # the Clip threshold is the median of the PRM's scores (a random PRM scores near 0.5, never exactly)
    eta = summaries[shaped.name]["clip_eta"]
    assert 0.0 < eta < 1.0 and eta != 0.5 and summaries[success.name]["clip_eta"] == 0.5
    for run in (success, shaped):
        outcomes = [json.loads(line) for line in (run / "final_outcomes.jsonl").read_text().splitlines()]
        assert [o["index"] for o in outcomes] == list(range(12)) and {"id", "prompt_sha256", "reference", "correct"} <= set(outcomes[0])
        assert len((run / "initial_outcomes.jsonl").read_text().splitlines()) == 12
        assert summaries[run.name]["final_heldout_accuracy"] == pytest.approx(sum(o["correct"] for o in outcomes) / 12)
    assert summaries[shaped.name]["prm_sha256"] and summaries[success.name]["prm_sha256"] is None

    report = tmp_path / "reports" / "smoke"
    rows = list(csv.DictReader((report / "results.csv").open()))
    assert sorted(r["arm"] for r in rows) == ["grpo-pr_clip_delta", "grpo-success"]
    shaped_row = next(r for r in rows if r["arm"] == "grpo-pr_clip_delta")
    assert (shaped_row["prm"], shaped_row["prm_noise"], shaped_row["seed"], shaped_row["steps"], shaped_row["eval_split"]) == ("learned", "", "0", "2", "heldout")
    assert shaped_row["machine"] and len(shaped_row["policy_sha256"]) == 64
    text = (report / "report.md").read_text()
    assert "| grpo | `grpo-pr_clip_delta` | `grpo-success` | 1 |" in text and "95% CI" in text


def test_default_grid_is_issue_23s(tmp_path):
    """The default grid file lists the issue's arms; a change that drops or doubles one fails."""
    grid = load_grid("default", config_dir())
    assert len(grid.arms) == 46 and grid.seeds == [0, 1, 2] and len(set(grid.arms)) == 46
    exact = [a for a in grid.arms if "prm=exact" in a.overrides]
    assert sorted({o for a in exact for o in a.overrides if "noise" in o}) == ["reward.prm_noise=0.0", "reward.prm_noise=0.15", "reward.prm_noise=0.3"]
    assert len(exact) == 12 and {a.algorithm for a in exact} == {"grpo", "ppo"}
    assert {"algorithm.kl_in=loss", "algorithm.kl_coef=0.01", "reward.success_coef=5.0", "data.final_split=heldout"} <= set(grid.settings)
    fixed, jobs = plan_grid(grid, [], [1], tmp_path)
    assert {j.seed for j in jobs} == {1} and len(jobs) == 46 and len({j.run_dir for j in jobs}) == 46
    assert tmp_path / "grpo-pr_clip_delta-s1-prm_exact-reward.prm_noise_0.15" in {j.run_dir for j in jobs}


def test_grid_entries_products_blocks_and_selection(tmp_path):
    raw = {"seeds": [0, 1], "settings": ["trainer.total_steps=5"], "per_algorithm": {"ppo": ["algorithm.ppo_epochs=2"]},
           "arms": [{"algorithm": ["ppo", "grpo"], "reward": "pr", "overrides": ["prm=exact"],
                     "variants": [["reward.prm_noise=0.1"], ["reward.prm_noise=0.2"]]},
                    {"algorithm": "grpo", "reward": "success"}]}
    grid = parse_grid(raw, tmp_path / "g.yaml")
    assert grid.arms[0] == Arm("ppo", "pr", ("prm=exact", "reward.prm_noise=0.1")) and len(grid.arms) == 5
    fixed, jobs = plan_grid(grid, ["trainer.total_steps=7", "rollout.group_size=4"], None, tmp_path)
    # the command line replaces the file's setting, which replaces the default one, in place
    assert fixed == ["trainer.total_steps=7", "trainer.eval_every=25", "rollout.group_size=4"]
    assert [j.seed for j in jobs] == [0] * 5 + [1] * 5  # seed blocks: all arms of seed 0 first
    assert jobs[0].overrides[:4] == ("algorithm=ppo", "reward=pr", "algorithm.ppo_epochs=2", "prm=exact")
    assert "++extra.arm=ppo-pr-prm_exact-reward.prm_noise_0.1" in jobs[0].overrides
    assert jobs[0].run_dir == tmp_path / "ppo-pr-s0-prm_exact-reward.prm_noise_0.1"
    _, chosen = plan_grid(grid, ["algorithm=grpo"], [3], tmp_path)
    assert [j.arm.algorithm for j in chosen] == ["grpo"] * 3 and {j.seed for j in chosen} == {3}
    for bad, match in [({"arms": [{"algorithm": "grpo"}]}, "needs 'algorithm' and 'reward'"),
                       ({"arms": [{"algorithm": "grpo", "reward": "pr", "overides": []}]}, "unknown key"),
                       ({"arms": [{"algorithm": "grpo", "reward": "pr"}] * 2}, "listed twice"),
                       ({"arms": [{"algorithm": "grpo", "reward": "pr", "overrides": ["prm"]}]}, "not key=value"),
                       ({"arms": [], "seeds": [0]}, "non-empty")]:
        with pytest.raises(GridError, match=match):
            parse_grid(bad, tmp_path / "g.yaml")
    with pytest.raises(GridError, match="compare.seeds"):
        plan_grid(grid, ["trainer.seed=3"], None, tmp_path)


def test_validation_names_every_arm_that_cannot_run(tmp_path):
    """A missing reward group and a failing cross-field check stop the grid before any run,
    each named with its arm; the good arm is not named."""
    grid = parse_grid({"arms": [{"algorithm": "grpo", "reward": ["success", "no_such_reward"]},
                                {"algorithm": "grpo", "reward": "success", "overrides": ["rollout.group_size=1"]}]}, tmp_path / "g.yaml")
    fixed, jobs = plan_grid(grid, [], [0], tmp_path)
    with pytest.raises(GridError) as err:
        validate_jobs(fixed, jobs)
    msg = str(err.value)
    assert "2 of 3 arm(s) cannot run" in msg and "arm 'algorithm=grpo reward=no_such_reward'" in msg and "reward/no_such_reward" in msg
    assert "arm 'algorithm=grpo reward=success rollout.group_size=1': rollout.group_size=1" in msg


def test_sweep_axes_seed_blocks_and_run_dirs(tmp_path):
    fixed, jobs = plan_sweep([], tmp_path)
    assert fixed == list(DEFAULT_SETTINGS) and len(jobs) == 3 * 5 * 2 and len({j.run_dir for j in jobs}) == len(jobs)
    assert set(DEFAULT_AXES) == {"algorithm", "reward", "trainer.seed"}
    assert [j.seed for j in jobs] == [0] * 15 + [1] * 15  # seed blocks
    assert [j.overrides[0] for j in jobs[:5]] == ["algorithm=ppo"] * 5  # within a block the slowest runs start first
    fixed, jobs = plan_sweep(["algorithm=grpo,rloo", "reward=success", "algorithm.kl_coef=0.01,0.1", "model.name_or_path=/m/x",
                              "trainer.total_steps=100"], tmp_path, seeds=[4])
    # plain overrides stay out of the run directory names; one for a default setting replaces it
    assert fixed == ["trainer.eval_every=25", "model.name_or_path=/m/x", "trainer.total_steps=100"]
    assert len(jobs) == 2 * 2 and {j.seed for j in jobs} == {4}
    assert tmp_path / "grpo-success-s4-algorithm.kl_coef_0.01" in {j.run_dir for j in jobs}
    with pytest.raises(GridError, match="not both"):
        plan_sweep(["trainer.seed=1"], tmp_path, seeds=[0])


def test_compare_options_are_separated_and_checked():
    opts, rest = split_args(["compare.name=x", "algorithm=grpo", "compare.runs=/r", "compare.grid=default", "compare.seeds=[2]"])
    assert (opts.name, opts.runs, opts.reports, opts.jobs, opts.grid, opts.seeds, rest) == ("x", "/r", "reports", 0, "default", [2], ["algorithm=grpo"])
    with pytest.raises(SystemExit, match="unknown option"):
        split_args(["compare.nmae=x"])


def test_missing_grid_file_lists_the_available_ones():
    from critic_free_rl.cli.grid import grid_path

    with pytest.raises(GridError, match="grid files in .*: default"):
        grid_path("no_such_grid", config_dir())


def test_parallel_jobs_default_and_bounds(monkeypatch):
    import os

    import torch

    from critic_free_rl.cli.compare import parallel_jobs

    assert parallel_jobs(3) == 3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parallel_jobs(0) == (os.cpu_count() or 1)  # CPU: one single-threaded run per core
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert parallel_jobs(0) == 1  # one GPU: the runs would share it
    with pytest.raises(SystemExit, match="compare.jobs=-1 must be >= 0"):
        parallel_jobs(-1)
