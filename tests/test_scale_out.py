"""Scale-out on CPU: 2 ranks over gloo under DeepSpeed ZeRO-2 and ZeRO-3, with and without
LoRA, one of them as two "nodes" started separately (hostfile + trainer.node_rank, the
``--no_ssh`` multi-node path). Each run is checked for:

* ranks in sync: every rank hashes its full (ZeRO-3: gathered) policy weights at the end,
  the hashes agree, and they are the hash of the saved ``final/`` checkpoint;
* the vLLM engine holds the trained weights: its sampling log-probs equal the learner's
  policy log-probs (and differ from the reference's);
* LoRA: only the adapted projections changed; everything else is the base model, bit for bit.

Plus launcher command lines and start-up validation (no processes)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, compose_train, run_cli

from critic_free_rl.cli.multinode import launcher_command
from critic_free_rl.config.errors import ConfigError
from critic_free_rl.config.loading import to_train_config

FAST = ["model.embedded=false", "rollout.group_size=4", "rollout.prompts_per_step=4", "rollout.max_new_tokens=12",
        "trainer.total_steps=2", "trainer.eval_every=1", "eval.max_new_tokens=12", "eval.num_samples=0",
        "data.max_test_rows=8", "data.num_train=64", "algorithm.entropy_coef=0.01", "trainer.lr=1e-2",
        "trainer.warmup_steps=0", "trainer.num_ranks=2"]
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def _state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _digest(model_dir: Path) -> str:
    """The hash :func:`critic_free_rl.checkpointing.save_final` computes, from a saved model."""
    from transformers import AutoModelForCausalLM

    h = hashlib.sha256()
    for name, p in AutoModelForCausalLM.from_pretrained(model_dir).named_parameters(remove_duplicate=False):
        h.update(name.encode())
        h.update(p.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _check(run: Path, init: Path, lora: bool) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_ranks"] == 2 and summary["steps"] == 2
    assert summary["ranks_in_sync"] and len(set(summary["rank_weights_sha256"])) == 1 and len(summary["rank_weights_sha256"]) == 2
    assert _digest(run / "final") == summary["weights_sha256"], "final/ is not the weights the ranks agree on"
    assert summary["sync/engine_vs_policy_logprob_max_abs_diff"] < 1e-3
    assert summary["sync/engine_vs_reference_logprob_max_abs_diff"] > 1e-2
    before, after = _state(init), _state(run / "final")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert all(torch.isfinite(v).all() for v in after.values())
    if lora:  # only the adapted weights moved (biases of q/k/v are not adapted)
        assert changed and changed == {k for k in before if k.endswith(tuple(f"{m}.weight" for m in LORA_TARGETS))}, sorted(changed)
    else:
        assert "model.embed_tokens.weight" in changed and len(changed) >= 0.9 * len(before)
    return summary


@pytest.mark.slow
def test_zero2_lora_on_two_nodes_started_separately(tiny_model_dir, tmp_path):
    """Two single-rank "nodes" on this machine, each started with its own command
    (trainer.node_rank), as on a cluster without ssh; LoRA under ZeRO-2 with gradient
    accumulation (micro-batches of 2 of the 8 samples per rank)."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
    run = tmp_path / "run"
    args = [*FAST, f"model.name_or_path={tiny_model_dir}", "trainer.zero_stage=2", "model.lora_rank=8",
            "trainer.micro_batch_size=2", f"trainer.hostfile={hostfile}", "trainer.num_nodes=2",
            "trainer.master_addr=127.0.0.1", f"trainer.master_port={_free_port()}", f"run_dir={run}"]
    node1 = subprocess.Popen([sys.executable, "-m", "critic_free_rl.cli", "train", *args, "trainer.node_rank=1"], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        node0 = run_cli("train", *args, "trainer.node_rank=0")
        out1, _ = node1.communicate(timeout=600)
    finally:
        node1.kill()
    assert node0.returncode == 0, (node0.stdout[-2000:], node0.stderr[-4000:])
    assert node1.returncode == 0, out1[-4000:]
    assert "--no_ssh --node_rank 0" in node0.stdout and "--no_ssh --node_rank 1" in out1
    assert "waiting for node 0" in out1
    _check(run, tiny_model_dir, lora=True)


@pytest.mark.slow
def test_zero3_full_ppo_gradient_checkpointing_checkpoint(tiny_model_dir, tmp_path):
    """ZeRO-3: policy and PPO critic partitioned over 2 ranks, gradient checkpointing, the
    vLLM sync gathering one parameter at a time, and a collective DeepSpeed checkpoint."""
    run = tmp_path / "run"
    res = run_cli("train", *FAST, f"model.name_or_path={tiny_model_dir}", "trainer.zero_stage=3", "algorithm=ppo",
                  "model.gradient_checkpointing=true", "trainer.checkpoint_every=2", f"run_dir={run}")
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-4000:])
    _check(run, tiny_model_dir, lora=False)
    ckpt = run / "checkpoints" / "step_00000002"
    assert (run / "checkpoints" / "latest").read_text().strip() == ckpt.name
    for part in ("policy", "critic"):  # one ZeRO-3 partition per rank
        assert len(list((ckpt / part).glob("*zero_pp_rank_*optim_states.pt"))) == 2, part
    assert sorted(p.name for p in (ckpt / "rng").iterdir()) == ["rank0.pt", "rank1.pt"]


@pytest.mark.slow
def test_zero3_lora_tensor_parallel_vllm(tiny_model_dir, tmp_path):
    """LoRA under ZeRO-3: base and adapter partitioned; the reference is the base with the
    adapter disabled; the merged weights reach vLLM without touching the base. The two ranks
    also share one vLLM engine with tensor parallelism 2 (each holds one shard; sampled and
    unseeded evaluation requests are pooled across the pair)."""
    run = tmp_path / "run"
    res = run_cli("train", *FAST, f"model.name_or_path={tiny_model_dir}", "trainer.zero_stage=3", "model.lora_rank=8",
                  "rollout.tensor_parallel_size=2", "eval.num_samples=2", "trainer.checkpoint_every=2", f"run_dir={run}")
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-4000:])
    _check(run, tiny_model_dir, lora=True)
    # the checkpoint stores the adapter (and its optimizer state), not the frozen base
    module = torch.load(next((run / "checkpoints" / "step_00000002" / "policy").glob("*model_states.pt")), map_location="cpu", weights_only=False)["module"]
    assert any("lora_" in k for k in module)
    assert {k for k in module if "lora_" not in k} <= {"base_model.model.lm_head.weight"}  # tied to embed_tokens: DeepSpeed lists it


def _free_port() -> int:
    from critic_free_rl.backends.distributed import free_port

    return free_port()


def test_launcher_command_lines(tmp_path):
    t = to_train_config(compose_train("trainer.num_ranks=16", "trainer.num_nodes=2", "trainer.hostfile=/shared/hostfile",
                                      "trainer.master_addr=10.0.0.1", "rollout.prompts_per_step=32")).trainer
    cmd = launcher_command(t, tmp_path, 29500)
    assert cmd[1:3] == ["-m", "deepspeed.launcher.runner"]
    assert " ".join(cmd[3:]) == (f"--hostfile /shared/hostfile --num_nodes 2 --num_gpus 8 --launcher pdsh --master_addr 10.0.0.1 "
                                 f"--master_port 29500 --module critic_free_rl.cli.launch {tmp_path.resolve()}")
    t.node_rank, t.launcher = 1, "slurm"
    assert "--no_ssh --node_rank 1" in " ".join(launcher_command(t, tmp_path, 29500))
    one = to_train_config(compose_train("trainer.num_ranks=4")).trainer
    assert " ".join(launcher_command(one, tmp_path, 1234)[3:]).startswith("--num_gpus 4 --master_port 1234 --module")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["trainer.offload_params=true"], "trainer.offload_params=true needs trainer.zero_stage=3"),
        (["trainer.zero_stage=0", "trainer.offload_optimizer=true"], "trainer.offload_optimizer=true needs"),
        (["trainer.num_ranks=3", "trainer.num_nodes=2", "trainer.hostfile=h", "rollout.prompts_per_step=6"], "must be a multiple of trainer.num_nodes=2"),
        (["trainer.num_ranks=2", "trainer.num_nodes=2"], "trainer.num_nodes=2 needs trainer.hostfile"),
        (["trainer.node_rank=1", "trainer.hostfile=h"], "needs trainer.hostfile and trainer.master_addr"),
        (["trainer.launcher=ssh"], "trainer.launcher='ssh' is not valid"),
        (["rollout.server_url=http://localhost:8000"], "rollout.server_url is not supported"),
        (["rollout.tensor_parallel_size=2"], "rollout.tensor_parallel_size=2 must divide trainer.num_ranks=1"),
        (["model.lora_rank=8", "trainer.ref_device=cpu"], "has no effect with LoRA"),
        (["trainer.checkpoint_every=-1"], "trainer.checkpoint_every=-1 must be >= 0"),
        (["trainer.cpu_micro_batch_tokens=-1"], "trainer.cpu_micro_batch_tokens=-1 must be >= 0"),
        (["rollout.cpu_kvcache_gib=0"], "rollout.cpu_kvcache_gib=0.0: give a positive size in GiB"),
    ],
)
def test_scale_out_settings_fail_fast(overrides, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        to_train_config(compose_train(*overrides))


@pytest.mark.parametrize("backend", ["torch", "deepspeed"])
def test_gradient_accumulation_gives_the_same_update(tiny_model_dir, backend):
    """8 samples per rank as 1 micro-batch, as 4 (micro_batch_size=2), as grad_accum_steps=2 or
    as 3, 3 and 2 rows (cpu_micro_batch_tokens=40 over rows of up to 13 tokens):
    the same accumulated gradient (its global norm, before clipping) and the same loss, since
    each micro-batch's loss is weighted by its share of the minibatch. (Weights after one
    Adam step are not compared: Adam's first step is ~lr * sign(grad), ill-conditioned
    wherever a gradient entry is ~0.)"""
    from critic_free_rl.backends.distributed import init_world
    from critic_free_rl.backends.learner import Learner, UpdateInputs
    from critic_free_rl.backends.sequences import pack
    from critic_free_rl.config.schema import AlgorithmConfig, ModelConfig, TrainerConfig

    world = init_world("deepspeed")
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(2, 100, (5,), generator=g).tolist() for _ in range(8)]
    resp = [torch.randint(2, 100, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist() for _ in range(8)]
    packed = pack(prompts, resp, 0)
    adv = torch.randn(packed.response_mask.shape, generator=g) * packed.response_mask
    algo = AlgorithmConfig(name="grpo", estimator="grpo", kl_coef=0.0, kl_in="none", entropy_coef=0.01)
    results = []
    longest = max(len(p) + len(r) for p, r in zip(prompts, resp))
    assert longest <= 13
    for micro, accum, tokens, gas in ((8, 1, 0, 1), (2, 1, 0, 4), (8, 2, 0, 2), (8, 1, 40, 3), (8, 1, 13 * 8, 1)):
        t = TrainerConfig(backend=backend, zero_stage=2, lr=1e-2, micro_batch_size=micro, grad_accum_steps=accum, max_grad_norm=1e9,
                          cpu_micro_batch_tokens=tokens)
        learner = Learner(str(tiny_model_dir), ModelConfig(name_or_path=str(tiny_model_dir)), t, algo, 8, world.device, max_row_tokens=13)
        assert (learner.gas, learner.micro) == (gas, -(-8 // gas))
        results.append(learner.update(UpdateInputs(packed, adv, adv, None, None, None, packed.response_mask), torch.Generator().manual_seed(0)))
    assert results[0]["grad_norm"] > 0
    for other in results[1:]:
        assert other["grad_norm"] == pytest.approx(results[0]["grad_norm"], rel=1e-5)


def test_one_fp32_rank_runs_without_zero_partitioning():
    """ZeRO-1/2 on one rank partition nothing: one fp32 rank without offload runs stage 0."""
    from critic_free_rl.backends.engines import zero_stage
    from critic_free_rl.config.schema import TrainerConfig

    assert zero_stage(TrainerConfig(zero_stage=2), 1, bf16=False) == 0
    assert zero_stage(TrainerConfig(zero_stage=1), 1, bf16=False) == 0
    assert zero_stage(TrainerConfig(zero_stage=2), 2, bf16=False) == 2
    assert zero_stage(TrainerConfig(zero_stage=2), 1, bf16=True) == 2
    assert zero_stage(TrainerConfig(zero_stage=2, offload_optimizer=True), 1, bf16=False) == 2
    assert zero_stage(TrainerConfig(zero_stage=3), 1, bf16=False) == 3


def test_guarded_step_clips_records_the_norm_and_skips_nonfinite():
    """Where nothing else clips, the guarded optimizer step clips to max_grad_norm, keeps the
    norm before clipping (DeepSpeed reads it) and skips a step with a non-finite gradient."""
    from critic_free_rl.backends.engines import guard_step

    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=1.0)
    state: dict = {}
    guard_step(opt, state, max_grad_norm=1.0)
    w.grad = torch.tensor([3.0, 4.0])  # norm 5 -> clipped to 1
    opt.step()
    assert opt._global_grad_norm == pytest.approx(5.0) and not state["skipped"]
    assert torch.allclose(w.detach(), torch.tensor([-0.6, -0.8]))
    w.grad = torch.tensor([float("nan"), 1.0])
    opt.step()
    assert state["skipped"] and torch.allclose(w.detach(), torch.tensor([-0.6, -0.8]))
