"""Non-finite guard: a NaN reward or a NaN gradient mid-run skips that update (on all
ranks), is logged with the offending samples' ids and counted in ``summary.json``;
training goes on and the weights stay finite. ``Trainer`` runs in-process for 3 steps
with the tiny random model (HF rollout, torch or DeepSpeed update on CPU)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from conftest import compose_train
from transformers import AutoModelForCausalLM

from critic_free_rl.backends import learner as learner_mod
from critic_free_rl.backends.distributed import World, free_port, init_world
from critic_free_rl.backends.learner import Learner
from critic_free_rl.config.loading import to_train_config
from critic_free_rl.config.schema import TrainConfig
from critic_free_rl.rewards.pipeline import RewardPipeline, ScoredBatch
from critic_free_rl.trainer import Trainer

STEPS = 3
POISONED = 1  # 0-based index of the poisoned step: the run's 2nd of 3


def tiny_train_config(model_dir: Path, run_dir: Path, overrides: list[str]) -> TrainConfig:
    """``critic-free-rl train`` config for a few tiny steps, composed from ``configs/``."""
    fast = ["model.embedded=false", f"model.name_or_path={model_dir}", "rollout=hf", "rollout.group_size=2",
            "rollout.prompts_per_step=2", "rollout.max_new_tokens=8", "data.num_train=16", "data.max_test_rows=2",
            f"trainer.total_steps={STEPS}", "trainer.eval_at_start=false", "trainer.eval_every=0", "trainer.log_completions=0",
            "trainer.lr=1e-3", "trainer.weight_decay=0.1", "eval.num_samples=0", "eval.max_new_tokens=4", f"run_dir={run_dir}"]
    return to_train_config(compose_train(*fast, *overrides))


def train(cfg: TrainConfig, run_dir: Path, on_init: Callable[[Trainer], None] = lambda t: None) -> dict[str, Any]:
    """Run ``cfg`` in this process as rank 0 of 1 (``on_init`` sees the trainer before
    ``fit``); returns ``summary.json``. The DeepSpeed backend needs the RANK / WORLD_SIZE /
    LOCAL_RANK / MASTER_* environment set (init_world)."""
    run_dir.mkdir(parents=True)
    world = init_world(cfg.trainer.backend) if cfg.trainer.backend == "deepspeed" else World(0, 1, 0, torch.device("cpu"))
    trainer = Trainer(cfg, run_dir, world)
    on_init(trainer)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return json.loads((run_dir / "summary.json").read_text())


def skipped_flags(run_dir: Path) -> list[float]:
    """``train/update_skipped`` of each training step, from ``metrics.jsonl``."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/update_skipped"] for r in sorted(rows, key=lambda r: r["step"]) if "train/lr" in r]


def text_events(run_dir: Path, tag: str) -> list[tuple[int, str]]:
    """(step, text) of a TensorBoard text tag, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={TENSORS: 0})
    acc.Reload()
    tag = f"{tag}/text_summary"  # add_text's tag
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)] if tag in acc.Tags()["tensors"] else []


def assert_finite_checkpoint(run_dir: Path) -> None:
    """The saved ``final/`` policy loads and holds only finite weights."""
    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def policy_snapshot(trainer: Trainer) -> dict[str, torch.Tensor]:
    """A copy of the policy's current weights."""
    return {k: v.detach().clone() for k, v in trainer.learner.policy.module.state_dict().items()}


def test_nan_reward_skips_the_update_and_names_the_samples(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    run_dir = tmp_path / "run"
    cfg = tiny_train_config(tiny_model_dir, run_dir, ["trainer=torch"])
    calls: list[int] = []
    poisoned_uids: list[str] = []
    trainer_ref: list[Trainer] = []
    score = RewardPipeline.score

    def nan_score(self: RewardPipeline, *args: Any) -> ScoredBatch:
        scored = score(self, *args)
        if len(calls) == POISONED:  # one call per training step (evaluation uses the verifier)
            scored.token_rewards[0][scored.reward_mask[0]] = float("nan")
            poisoned_uids.append(f"{trainer_ref[0].step_prompts(POISONED)[0].uid}#0")
        calls.append(1)
        return scored

    monkeypatch.setattr(RewardPipeline, "score", nan_score)
    with caplog.at_level(logging.WARNING, logger="critic_free_rl.trainer"):
        summary = train(cfg, run_dir, trainer_ref.append)

    assert len(calls) == STEPS and summary["steps"] == STEPS
    assert summary["skipped_updates"] == 1
    assert summary["skipped_rows"] == {"train": 0, "test": 0}
    assert skipped_flags(run_dir) == [float(s == POISONED) for s in range(STEPS)]
    [(step, text)] = text_events(run_dir, "nonfinite/samples")
    assert step == POISONED + 1 and poisoned_uids[0] in text.split(", ")  # TensorBoard steps are 1-based
    assert f"step {POISONED + 1}: non-finite rewards/advantages for samples" in caplog.text and poisoned_uids[0] in caplog.text
    assert_finite_checkpoint(run_dir)


@pytest.mark.parametrize("backend", ["torch", "deepspeed"])
def test_nan_gradient_skips_the_optimizer_step(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture, backend: str) -> None:
    run_dir = tmp_path / "run"
    cfg = tiny_train_config(tiny_model_dir, run_dir, [f"trainer={backend}"])
    for var, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(var, value)  # init_world would otherwise leave them set for later tests
    trainer_ref: list[Trainer] = []
    weights: list[dict[str, torch.Tensor]] = []  # policy before each update, and at the end
    poison = {"on": False}
    update, objective = Learner.update, learner_mod.policy_objective

    def tracked_update(self: Learner, *args: Any) -> dict[str, float]:
        weights.append(policy_snapshot(trainer_ref[0]))
        poison["on"] = len(weights) - 1 == POISONED
        return update(self, *args)

    def nan_objective(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, dict]:
        loss, metrics = objective(*args, **kwargs)
        return (loss * float("nan") if poison["on"] else loss), metrics

    monkeypatch.setattr(Learner, "update", tracked_update)
    monkeypatch.setattr(learner_mod, "policy_objective", nan_objective)
    with caplog.at_level(logging.WARNING, logger="critic_free_rl.trainer"):
        summary = train(cfg, run_dir, trainer_ref.append)
    weights.append(policy_snapshot(trainer_ref[0]))

    assert len(weights) == STEPS + 1 and summary["steps"] == STEPS
    assert summary["skipped_updates"] == 1
    assert skipped_flags(run_dir) == [float(s == POISONED) for s in range(STEPS)]

    def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return any(not torch.equal(a[k], b[k]) for k in a)

    assert not changed(weights[POISONED], weights[POISONED + 1]), "the NaN-gradient step changed the weights"
    assert all(changed(weights[s], weights[s + 1]) for s in range(STEPS) if s != POISONED), "training stopped"
    assert all(torch.isfinite(w).all() for w in weights[-1].values())
    assert f"step {POISONED + 1}: non-finite gradients; optimizer step skipped" in caplog.text
    assert_finite_checkpoint(run_dir)
