"""``train reward=pr_clip_delta`` on the embedded task: the trainer resolves
``reward.prm=embedded`` to the cached tiny PRM (trained on first use, in the run's cache)
and the dense step rewards reach the logged metrics. In-process, 3 steps, HF rollout."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_nan_guard import STEPS, tiny_train_config, train

from critic_free_rl.rewards import prm_train

TINY_ARCH = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
TINY_TRAIN = dict(steps=4, batch_size=8, lr=1e-3, dense=1.0, per_problem=1, seed=0)


def test_embedded_prm_is_resolved_and_scores_the_steps(tiny_model_dir: Path, tmp_path: Path, cache_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prm_train, "DEFAULT_ARCH", TINY_ARCH)
    monkeypatch.setattr(prm_train, "DEFAULT_TRAIN", TINY_TRAIN)
    run_dir = tmp_path / "run"
    cfg = tiny_train_config(tiny_model_dir, run_dir, ["trainer=torch", "reward=pr_clip_delta", "reward.prm_device=cpu"])
    assert cfg.reward.prm == "embedded"
    summary = train(cfg, run_dir)
    assert summary["steps"] == STEPS and summary["reward"] == "pr_clip_delta"
    [prm] = [p for p in cache_dir.iterdir() if p.name.startswith("prm-") and p.suffix != ".lock"]
    assert (prm / "prm_eval.json").is_file()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/lr" in r]
    assert len(steps) == STEPS
    # clip-delta dense returns are bounded by the PRM score of the first step: in [-1, 1]
    assert all("reward/dense_mean" in r and -1.0 <= r["reward/dense_mean"] <= 1.0 for r in steps)
    assert all("reward/steps_per_response" in r for r in steps)
