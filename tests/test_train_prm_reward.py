"""``train reward=pr_clip_delta`` on the embedded task: the trainer resolves
``reward.prm=embedded`` to the cached tiny PRM (trained on first use, in the run's cache)
and the dense step rewards reach the logged metrics. In-process, 3 steps, HF rollout."""
from __future__ import annotations

import json
from pathlib import Path

from test_nan_guard import STEPS, tiny_train_config, train

TINY_RM = "+reward.embedded_rm={arch:{hidden_size:32,num_layers:1,num_heads:2,intermediate_size:64},prm:{steps:4,batch_size:8,per_problem:1}}"


def test_embedded_prm_is_resolved_and_scores_the_steps(tiny_model_dir: Path, tmp_path: Path, cache_dir: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = tiny_train_config(tiny_model_dir, run_dir, ["trainer=torch", "reward=pr_clip_delta", "reward.prm_device=cpu", TINY_RM])
    assert cfg.reward.prm == "embedded"
    summary = train(cfg, run_dir)
    assert summary["steps"] == STEPS and summary["reward"] == "pr_clip_delta"
    [prm] = [p for p in cache_dir.iterdir() if p.name.startswith("prm-") and p.suffix != ".lock"]
    assert (prm / "prm_eval.json").is_file()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/lr" in r]
    assert len(steps) == STEPS
    # the PRM scored the steps (scores in (0, 1)), and the clip-delta return telescopes to the
    # first step's clipped score, in [-eta, 0] = [-0.5, 0]: raw or unclipped scores would be positive
    assert all(0.0 < r["reward/prm_mean"] < 1.0 for r in steps)
    assert all(-0.5 <= r["reward/dense_mean"] <= 0.0 for r in steps)
    assert all("reward/steps_per_response" in r for r in steps)
