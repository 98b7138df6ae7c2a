"""``reward=prime`` trains end to end with grpo, rloo and ppo (2 in-process steps each on the
tiny random model, HF rollout, torch update), logs the implicit PRM's loss and accuracy
every step, checkpoints its state, and a run stopped after step 1 and resumed ends where
the uninterrupted run ends, implicit PRM included."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_nan_guard import tiny_train_config

from critic_free_rl.backends.distributed import World
from critic_free_rl.checkpointing import tag_of
from critic_free_rl.trainer import Trainer

ALGORITHMS = ("grpo", "rloo", "ppo")
STEPS = 2
PRIME = ["trainer=torch", "reward=prime", "reward.prime_device=cpu", "reward.prime_lr=1e-2", f"trainer.total_steps={STEPS}",
         "trainer.checkpoint_every=1", "trainer.keep_checkpoints=3"]


def _fit(cfg, run_dir: Path) -> None:
    trainer = Trainer(cfg, run_dir, World(0, 1, 0, torch.device("cpu")))
    try:
        trainer.fit()
    finally:
        trainer.close()


def _step_rows(run_dir: Path) -> dict[int, dict]:
    """Training-step rows of ``metrics.jsonl`` without wall-clock values."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if not k.startswith(("time/", "perf/"))} for r in rows if "train/lr" in r}


@pytest.fixture(scope="module")
def runs(tiny_model_dir: Path, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for algo in ALGORITHMS:
        run_dir = tmp_path_factory.mktemp(f"prime_{algo}") / "run"
        run_dir.mkdir()
        _fit(tiny_train_config(tiny_model_dir, run_dir, [*PRIME, f"algorithm={algo}"]), run_dir)
        out[algo] = run_dir
    return out


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_prime_trains_with_every_estimator_and_logs_its_loss_and_accuracy(runs: dict[str, Path], algo: str):
    """Catches an estimator the implicit step rewards break, a lost update hook (no
    prime/ metrics) and a checkpoint without the implicit PRM."""
    summary = json.loads((runs[algo] / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["reward"] == "prime" and summary["algorithm"] == algo
    rows = _step_rows(runs[algo])
    assert sorted(rows) == list(range(1, STEPS + 1))
    for r in rows.values():
        assert r["prime/loss"] > 0 and 0.0 <= r["prime/accuracy"] <= 1.0 and r["prime/grad_norm"] >= 0
    # pi_phi = pi_ref before the first update: every implicit reward, and so the loss, is at sigmoid(0)
    assert rows[1]["prime/loss"] == pytest.approx(0.6931472, abs=1e-5) and rows[1]["prime/step_reward_mean"] == 0.0
    assert rows[2]["prime/step_reward_mean"] != 0.0  # the first update moved pi_phi
    state = torch.load(runs[algo] / "checkpoints" / tag_of(STEPS) / "extra_implicit_prm.rank0.pt", weights_only=False)
    assert set(state) == {"model", "optimizer"} and state["optimizer"]["state"]


def test_prime_resumes_exactly(runs: dict[str, Path], tiny_model_dir: Path, tmp_path: Path):
    """Catches an implicit PRM (weights or AdamW moments) that a resume rebuilds from the
    starting weights: step 2's rewards, losses and the final weights would then differ."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = tiny_train_config(tiny_model_dir, run_dir, [*PRIME, "algorithm=grpo"])
    _fit(replace(cfg, trainer=replace(cfg.trainer, total_steps=1)), run_dir)
    _fit(replace(cfg, resume=str(run_dir)), run_dir)
    ref = runs["grpo"]
    assert _step_rows(run_dir) == _step_rows(ref)
    assert (run_dir / "final" / "model.safetensors").read_bytes() == (ref / "final" / "model.safetensors").read_bytes()
    a, b = (torch.load(r / "checkpoints" / tag_of(STEPS) / "extra_implicit_prm.rank0.pt", weights_only=False) for r in (ref, run_dir))
    for name, w in a["model"].items():
        assert torch.equal(w, b["model"][name]), name
