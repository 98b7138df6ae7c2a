"""A registered shape trains end to end: ``reward=pr_progress`` with the overlong penalty on
a tiny random PRM (3 in-process steps, HF rollout), its monitors in every step's metrics."""
from __future__ import annotations

import json
from pathlib import Path

from test_nan_guard import STEPS, tiny_train_config, train

from critic_free_rl.models.tiny import build_tiny_model

SEP = "<extra_0>"


def test_pr_progress_with_overlong_penalty_trains_and_logs_its_monitors(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Catches a shape or term that validates but breaks in the trainer (the prompt score is
    read, the penalty's limit resolves to rollout.max_new_tokens) or whose monitors are lost."""
    prm = build_tiny_model(tmp_path / "prm", token_classification=True, extra_tokens=[SEP],
                           hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    run_dir = tmp_path / "run"
    cfg = tiny_train_config(tiny_model_dir, run_dir, ["trainer=torch", "reward=pr_progress", f"reward.prm={prm}",
                                                      "reward.prm_device=cpu", "reward.overlong_buffer=4"])
    assert cfg.reward.overlong_max_tokens == cfg.rollout.max_new_tokens == 8
    summary = train(cfg, run_dir)
    assert summary["steps"] == STEPS and summary["reward"] == "pr_progress"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/lr" in r]
    assert len(steps) == STEPS
    for r in steps:
        assert 0.0 <= r["reward/prm_prompt_mean"] <= 1.0
        assert -1.0 <= r["reward/shaped_return"] <= 1.0  # r_K - r_0
        assert -1.0 <= r["reward/shaped_return_len_corr"] <= 1.0
        assert 0.0 <= r["reward/overlong_frac"] <= 1.0 and -1.0 <= r["reward/overlong_penalty_mean"] <= 0.0
