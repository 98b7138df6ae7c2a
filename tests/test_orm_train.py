"""The embedded ORM (reward.orm=embedded): final-answer labels, a tiny cached training run
read back through OutcomeRewardModel, and `critic-free-rl train reward=orm` end to end."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli

from critic_free_rl.config.schema import DataConfig, RewardConfig
from critic_free_rl.data.arithmetic_steps import labelled
from critic_free_rl.models.cache import read_record
from critic_free_rl.models.orm_train import final_answer_correct
from critic_free_rl.models.reward_models import resolve_orm_path
from critic_free_rl.rewards.orm import OutcomeRewardModel

PROMPT = "What is 17 + 5 - 8?\n"
TINY = {"arch": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
        "prm": {"steps": 3, "batch_size": 8, "per_problem": 1}, "orm": {"steps": 3, "batch_size": 8, "per_problem": 1}}
TINY_OVERRIDE = ("+reward.embedded_rm={arch:{hidden_size:32,num_layers:1,num_heads:2,intermediate_size:64},"
                 "prm:{steps:3,batch_size:8,per_problem:1},orm:{steps:3,batch_size:8,per_problem:1}}")


def test_final_answer_label_reads_the_last_box_against_the_question() -> None:
    """A right box after a wrong step is still a right final answer (an outcome label)."""
    def ok(steps: list[str]) -> bool:
        return final_answer_correct(labelled(PROMPT, steps, ["gold"] * len(steps)))

    assert ok(["17 + 5 = 22", "22 - 8 = 14", "\\boxed{14}"])
    assert ok(["17 + 5 = 23", "22 - 8 = 14", "\\boxed{ 14 }"])
    assert not ok(["17 + 5 = 22", "\\boxed{22}"])
    assert not ok(["17 + 5 = 22", "22 - 8 = 14"]) and not ok([])


def test_embedded_orm_is_trained_once_cached_and_scores_completions(cache_dir: Path) -> None:
    dcfg = DataConfig(name="embedded", path="embedded", num_train=24, num_test=6,
                      spec={"min_ops": 2, "max_ops": 3, "max_first": 99, "max_operand": 9})
    rcfg = RewardConfig(name="orm", orm="embedded", prm_separator="<extra_0>", prm_device="cpu", embedded_rm=TINY)
    assert resolve_orm_path(RewardConfig(name="success", orm="embedded"), dcfg) is None  # unused: not trained
    assert not cache_dir.exists()
    path = resolve_orm_path(rcfg, dcfg, log=lambda _: None)
    assert Path(path).name.startswith("orm-") and [p.name[:4] for p in cache_dir.glob("prm-*") if p.is_dir()] == ["prm-"]
    record = read_record(Path(path), "orm_eval.json")
    assert record["solutions"] == 2 * dcfg.num_test and 0.0 <= record["accuracy"] <= 1.0
    stamp = (Path(path) / "model.safetensors").stat().st_mtime_ns
    assert resolve_orm_path(rcfg, dcfg, log=lambda _: None) == path
    assert (Path(path) / "model.safetensors").stat().st_mtime_ns == stamp
    scores = OutcomeRewardModel(path, device="cpu").score([PROMPT] * 2, ["17 + 5 = 22\n22 - 8 = 14\n\\boxed{14}", "x"])
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)


def test_train_reward_orm_runs_on_the_embedded_default(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The CLI resolves reward.orm=embedded (configs/reward/orm.yaml) and the ORM's score
    reaches the logged reward: reward/orm_mean is logged and in [0, 1]."""
    run = tmp_path / "run"
    res = run_cli("train", "reward=orm", "rollout=hf", "trainer=torch", "trainer.total_steps=2", "model.embedded=false",
                  f"model.name_or_path={tiny_model_dir}", "rollout.group_size=2", "rollout.prompts_per_step=2",
                  "rollout.max_new_tokens=8", "data.num_train=16", "data.max_test_rows=2", "trainer.eval_at_start=false",
                  "trainer.eval_every=0", "reward.prm_device=cpu", TINY_OVERRIDE, f"run_dir={run}",
                  env={"CFRL_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/orm_mean" in r]
    assert len(steps) == 2 and all(0.0 <= r["reward/orm_mean"] <= 1.0 for r in steps)
    assert list((tmp_path / "cache").glob("orm-*/orm_eval.json"))
