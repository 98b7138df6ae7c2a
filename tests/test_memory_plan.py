"""``critic-free-rl plan``: the per-GPU memory of every preset against figures computed by hand.

The expected byte counts below are written out from the presets' numbers (parameter
counts of the hub config.json figures, ZeRO stage, ranks, dtype, micro-batch, lengths), not
from the module's code, so a wrong formula, a figure typo in a preset, or a state counted on
the wrong side of a ZeRO split fails here. Default train config: 1 rank, ZeRO-2, GRPO,
vLLM at 0.3, 16 prompts x 8, 64 new tokens, micro-batch 64; ``plan.prompt_tokens`` 512.
"""
from __future__ import annotations

import pytest
from conftest import compose_train, run_cli

from critic_free_rl.backends.memory_plan import GIB, PlanError, count_params, plan_memory, resolve_gpu_gib
from critic_free_rl.config.loading import to_train_config

P15, P7, PRM7, SHEPHERD = 1_543_714_304, 7_615_616_512, 7_083_474_946, 7_241_732_096
TINY = 1_084_288  # 258 x 128 embedding + 4 x 262,784 per layer + 128 final norm (tied)
RESERVE = 2 * GIB


def _plan(*overrides: str, gpu: float = 80.0):
    return plan_memory(to_train_config(compose_train(*overrides)), gpu)


def _bytes(plan) -> dict[str, float]:
    return {i.name: i.bytes for i in plan.items}


def test_preset_parameter_counts_match_their_figures():
    """A typo in a preset's figures changes the count derived from them."""
    tc = to_train_config(compose_train("model=qwen2.5-math-1.5b-instruct", "reward=pr", "prm=qwen2.5-math-prm-7b"))
    assert tc.model.figures.num_params == count_params(tc.model.figures) == P15
    assert tc.reward.prm_figures.num_params == count_params(tc.reward.prm_figures) == PRM7
    tc = to_train_config(compose_train("model=qwen2.5-math-7b-instruct", "reward=pr", "prm=math-shepherd"))
    assert tc.model.figures.num_params == count_params(tc.model.figures) == P7
    assert tc.reward.prm_figures.num_params == count_params(tc.reward.prm_figures) == SHEPHERD


def _default(P: int, b: int, L: int, h: int, kv: int, i: int, V: int, ckpt: bool) -> dict[str, float]:
    tokens = 64 * (512 + 64)
    layer = tokens * b * (6 * h + 2 * kv + 4 * i)
    return {
        "vLLM weights": P * b, "vLLM KV cache": 0.3 * 80 * GIB - P * b,
        "policy weights": P * b, "policy gradients": P * b, "policy optimizer": P * (12 if b == 2 else 8),
        "reference": P * b,
        "activations": (L * tokens * h * b + layer) if ckpt else L * layer,
        "logits": tokens * V * (b + 8), "reserve": RESERVE,
    }


MODEL_PRESETS = {
    "tiny": _default(TINY, 4, 4, 128, 128, 512, 258, ckpt=False),
    "qwen2.5-math-1.5b-instruct": _default(P15, 2, 28, 1536, 256, 8960, 151936, ckpt=True),
    "qwen2.5-math-7b-instruct": _default(P7, 2, 28, 3584, 512, 18944, 152064, ckpt=True),
}


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_model_presets(name):
    plan = _plan(f"model={name}")
    assert _bytes(plan) == pytest.approx(MODEL_PRESETS[name])
    assert plan.total_gib == pytest.approx(sum(MODEL_PRESETS[name].values()) / GIB)


def _experiment(prm: bool) -> dict[str, float]:
    """The paper's presets: 7B PPO on 8 ranks, ZeRO-3, optimizer offload, bf16, gradient
    checkpointing, micro-batch 4 x (512 + 1024) tokens, vLLM at 0.35."""
    critic = P7 - 152064 * 3584 + 3584 + 1  # no LM head, a value head h -> 1
    tokens = 4 * 1536
    out = {
        "vLLM weights": P7 * 2, "vLLM KV cache": 0.35 * 80 * GIB - P7 * 2,
        "policy weights": P7 * 2 / 8, "policy gradients": P7 * 2 / 8, "policy optimizer": 0,
        "critic weights": critic * 2 / 8, "critic gradients": critic * 2 / 8, "critic optimizer": 0,
        "reference": P7 * 2,
        "activations": 28 * tokens * 3584 * 2 + tokens * 2 * (6 * 3584 + 2 * 512 + 4 * 18944),
        "logits": tokens * 152064 * 10, "reserve": RESERVE,
    }
    if prm:
        out["PRM"] = PRM7 * 2
    return out


@pytest.mark.parametrize("name", ["ppo_success", "ppo_pr_clip", "ppo_pr_delta", "ppo_pr_clip_delta"])
def test_experiment_presets_fit_80_gib(name):
    plan = _plan(f"experiment={name}")
    want = _experiment(prm=name != "ppo_success")
    assert _bytes(plan) == pytest.approx(want)
    assert plan.fits and plan.total_gib == pytest.approx(sum(want.values()) / GIB)  # 75.2 GiB with the PRM


def test_lora_drops_the_reference_and_trains_the_adapter_only():
    r64 = 28 * 64 * ((3584 + 3584) * 2 + (3584 + 512) * 2 + (3584 + 18944) * 2 + (18944 + 3584))  # 7 target modules
    got = _bytes(_plan("model=qwen2.5-math-7b-instruct", "model.lora_rank=64"))
    assert got["reference"] == 0 and got["policy weights"] == P7 * 2
    assert got["policy gradients"] == r64 * 2 and got["policy optimizer"] == r64 * 12


def test_torch_backend_keeps_adam_state_in_the_weights_dtype():
    got = _bytes(_plan("model=qwen2.5-math-1.5b-instruct", "trainer=torch"))
    assert got["policy optimizer"] == P15 * 2 * 2 and got["policy gradients"] == P15 * 2


def test_seven_b_on_one_24_gib_gpu_does_not_fit():
    """One rank holds everything: the verdict names the largest item and vLLM's share is too
    small for the weights."""
    plan = _plan("experiment=ppo_pr_clip_delta", "trainer.num_ranks=1", gpu=24)
    assert not plan.fits
    assert plan.largest.name == "vLLM weights" and plan.largest.bytes == P7 * 2  # ties with policy weights and reference
    assert "largest item: vLLM weights (14.2 GiB)" in plan.verdict()
    assert "does not hold the policy's weights" in plan.verdict()


def test_missing_figures_and_gpu_size_are_named():
    with pytest.raises(PlanError, match="model.figures"):
        _plan("model=qwen2.5-math-7b-instruct", "model.name_or_path=my/model", "model.figures=null")
    with pytest.raises(PlanError, match="plan.gpu_gib is required"):
        resolve_gpu_gib(to_train_config(compose_train()), None)
    assert resolve_gpu_gib(to_train_config(compose_train()), 79.6) == 79.6
    assert resolve_gpu_gib(to_train_config(compose_train("plan.gpu_gib=24")), 79.6) == 24


@pytest.mark.slow
def test_plan_command():
    """The CLI: a per-GPU figure and a verdict, exit 0 when it fits; exit != 0 naming the
    largest item when the 7B preset meets one 24 GiB GPU."""
    ok = run_cli("plan", "experiment=ppo_pr_clip_delta", "plan.gpu_gib=80", timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "total" in ok.stdout and "verdict: fits: 75.2 GiB of 80.0 GiB per GPU" in ok.stdout
    bad = run_cli("plan", "model=qwen2.5-math-7b-instruct", "plan.gpu_gib=24", timeout=300)
    assert bad.returncode != 0
    assert "largest item: policy optimizer (85.1 GiB)" in bad.stderr  # 7.6B x 12 B of Adam state on one rank


def test_train_checks_the_plan_at_start_up_on_cuda(monkeypatch, capsys):
    """``train``'s start-up check (cli.plan.check_memory_plan): with a GPU visible it stops a
    config that does not fit before anything loads; ``plan.check=false`` and a model without
    figures go on; without a GPU nothing is checked."""
    from critic_free_rl.cli import plan as commands

    seven_b = ["model=qwen2.5-math-7b-instruct"]
    monkeypatch.setattr(commands, "visible_gpu_gib", lambda: 24.0)  # what torch would report for a 24 GiB GPU
    with pytest.raises(SystemExit, match="largest item: policy optimizer"):
        commands.check_memory_plan(to_train_config(compose_train(*seven_b)))
    commands.check_memory_plan(to_train_config(compose_train(*seven_b, "plan.check=false")))
    commands.check_memory_plan(to_train_config(compose_train(*seven_b, "model.name_or_path=my/model", "model.figures=null")))
    assert "memory plan skipped: model.figures is not set" in capsys.readouterr().out
    monkeypatch.setattr(commands, "visible_gpu_gib", lambda: 80.0)
    commands.check_memory_plan(to_train_config(compose_train("model=qwen2.5-math-1.5b-instruct", "trainer.micro_batch_size=4")))
    assert "verdict: fits" in capsys.readouterr().out
    monkeypatch.setattr(commands, "visible_gpu_gib", lambda: None)
    commands.check_memory_plan(to_train_config(compose_train(*seven_b)))
    assert capsys.readouterr().out == ""
