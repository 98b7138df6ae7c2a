"""`critic-free-rl train` end to end on the real stack (vLLM groups, DeepSpeed updates),
with a tiny random model: 1 rank in-process and 2 ranks through the DeepSpeed launcher."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from transformers import AutoModelForCausalLM

FAST = ["rollout.group_size=4", "rollout.prompts_per_step=4", "rollout.max_new_tokens=16", "trainer.total_steps=2",
        "trainer.eval_every=1", "eval.max_new_tokens=16", "eval.num_samples=2", "data.max_test_rows=8", "data.num_train=64"]

PHASES = {"generate", "score", "ref_logprobs", "update", "weight_sync", "eval"}


def _check_run(run, initial: Path, steps: int = 2, ranks: int = 1):
    """Catches: a rollout engine whose log-probs at the end are not the final policy's (beyond
    test_rollout_sync's fp32 tolerance), a step logged twice or skipped, accuracies that are not
    fractions, phases that are not timed, and non-finite or wrongly shaped final weights. (A
    random tiny policy rarely earns a success, so its flat groups may leave the weights as they
    were: whether an update moves them is test_rollout_sync's and test_nan_guard's to check.)"""
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == steps and summary["num_ranks"] == ranks
    assert 0.0 <= summary["initial_accuracy"] <= 1.0 and 0.0 <= summary["final_accuracy"] <= 1.0
    assert PHASES <= set(summary["mean_phase_seconds"])
    assert summary["sync/engine_vs_policy_logprob_max_abs_diff"] < 1e-3
    assert list(run.glob("events.out.tfevents*")), "TensorBoard events missing"
    final = AutoModelForCausalLM.from_pretrained(run / "final")
    start = AutoModelForCausalLM.from_pretrained(initial)
    assert all(torch.isfinite(p).all() for p in final.parameters())
    assert [p.shape for p in final.parameters()] == [p.shape for p in start.parameters()]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward/mean" in r] == list(range(1, steps + 1))
    logged = set().union(*rows)
    for key in ("reward/mean", "reward/std", "reward/success_rate", "response/length_tokens", "train/kl", "train/entropy",
                "train/clip_frac", "train/grad_norm", "train/lr", "time/generate_s", "time/update_s", "time/weight_sync_s",
                "perf/generated_tokens_per_s", "eval/greedy_accuracy"):
        assert key in logged, key
    return summary


@pytest.mark.slow
def test_train_one_rank_vllm_deepspeed(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    res = run_cli("train", "model.embedded=false", f"model.name_or_path={tiny_model_dir}", *FAST, f"run_dir={run}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"run directory: {run}" in res.stdout
    _check_run(run, tiny_model_dir)


@pytest.mark.slow
def test_train_two_ranks_deepspeed_launcher(tiny_model_dir, tmp_path):
    """Also: the ranks leave none of DeepSpeed's shared-memory all-reduce workspaces behind
    (66 MB of RAM each until reboot, see ``backends.distributed``)."""
    run = tmp_path / "run2"
    shm_before = set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*"))
    res = run_cli("train", "model.embedded=false", f"model.name_or_path={tiny_model_dir}", *FAST, "trainer.num_ranks=2", f"run_dir={run}")
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-4000:])
    _check_run(run, tiny_model_dir, ranks=2)
    assert set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")) <= shm_before
