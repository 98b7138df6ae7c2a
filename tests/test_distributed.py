"""The process group: what ``init_world`` asks torch for, and the loop's collectives on 2 ranks.

* On a CUDA device ``init_world`` must ask for ``cpu:gloo,cuda:nccl``: the loop all-reduces
  CPU tensors, and an NCCL-only group fails on them at the first evaluation. Only
  ``torch.cuda.is_available`` / ``set_device`` are patched (no fake GPU beyond that); the
  backend string and timeout handed to DeepSpeed / torch are captured.
* Two gloo ranks run every collective of a training step and an evaluation through the
  project's own call sites: evaluation counts (``evaluate`` with a real HF engine on a tiny
  model), the any-rank skip flag (trainer), the guarded optimizer step and the loss-share
  total (learner), the sync check's maximum (``all_reduce_(.., "max")``), the checkpoint
barrier. (Object collectives and barriers run on the CPU backend of a ``cpu:gloo,cuda:nccl``
group: torch picks "cpu" when it is among the pairs.)
"""
from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from critic_free_rl.backends import distributed


@pytest.fixture
def no_world(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)


@pytest.mark.parametrize("backend", ["deepspeed", "torch"])
def test_init_world_asks_for_a_cpu_capable_group_on_cuda(backend, monkeypatch, no_world):
    """Catches an NCCL-only group on GPUs (CPU all-reduces would fail) and a timeout that
    is not passed on."""
    import deepspeed

    calls: list[tuple[str, timedelta]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(deepspeed, "init_distributed", lambda dist_backend, timeout: calls.append((dist_backend, timeout)))
    monkeypatch.setattr(dist, "init_process_group", lambda b, timeout: calls.append((b, timeout)))
    world = distributed.init_world(backend, timeout_minutes=3)
    assert world.device == torch.device("cuda", 0)
    assert calls == [("cpu:gloo,cuda:nccl", timedelta(minutes=3))]
    # torch reads it as one group with a backend for each device type
    assert dist.distributed_c10d.BackendConfig(calls[0][0]).get_device_backend_map() == {"cpu": "gloo", "cuda": "nccl"}


def test_init_world_uses_gloo_on_cpu(monkeypatch, no_world):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda b, timeout: calls.append((b, timeout)))
    assert distributed.init_world("torch").device == torch.device("cpu")
    assert calls == [("gloo", timedelta(minutes=10))]


def test_collectives_are_identities_on_one_rank():
    t = torch.tensor([1.0, 5.0])
    assert distributed.all_reduce_(t, "mean") is t and t.tolist() == [1.0, 5.0]
    assert distributed.any_rank(True) and not distributed.any_rank(False)


def _rank_main(rank: int, port: int, model_dir: str, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from critic_free_rl.backends.engines import guard_step
    from critic_free_rl.backends.learner import Learner
    from critic_free_rl.checkpointing import _barrier
    from critic_free_rl.config.schema import AlgorithmConfig
    from critic_free_rl.data.datasets import Example
    from critic_free_rl.evaluation import evaluate
    from critic_free_rl.rewards.success import SuccessVerifier
    from critic_free_rl.rollout.hf_engine import HFEngine

    world = distributed.init_world("torch", timeout_minutes=2)
    out: dict = {"backend": dist.get_backend()}
    # evaluation: each rank scores its shard, the counts are summed over ranks
    examples = [Example(uid=f"test-{i}", question=f"{i} + 1", prompt=f"{i} + 1 = ", reference=str(i + 1)) for i in range(5)]
    with SuccessVerifier(num_workers=1) as verifier:
        res = evaluate(HFEngine(model_dir), verifier, examples, max_new_tokens=3, num_samples=2, rank=world.rank, world=world.size)
    out["eval_n"], out["eval_sampling"] = res.num_examples, res.sampling_accuracy
    # trainer: a non-finite reward on one rank skips the update on every rank
    out["any"] = [distributed.any_rank(world.rank == 1), distributed.any_rank(False)]
    # learner: a NaN gradient on rank 1 only -> the guarded step is skipped on both ranks
    for max_norm in (None, 1.0):
        lin = torch.nn.Linear(2, 1)
        before = lin.weight.detach().clone()
        opt = torch.optim.SGD(lin.parameters(), lr=0.1)
        lin(torch.ones(1, 2)).sum().backward()
        if world.rank == 1:
            lin.weight.grad[0, 0] = float("nan")
        state: dict = {}
        guard_step(opt, state, max_norm)
        opt.step()
        out[f"skipped_{max_norm}"] = [state["skipped"], bool(torch.equal(lin.weight, before))]
    # learner: the minibatch's token total is the mean over ranks (DeepSpeed averages gradients)
    mask = torch.ones(2, 3 + world.rank, dtype=torch.bool)  # 6 tokens on rank 0, 8 on rank 1
    _, total = Learner._shares(SimpleNamespace(acfg=AlgorithmConfig(name="grpo", loss_agg="token-mean")), mask)
    out["share_total"] = total
    # sync check: the worst gap over ranks
    out["max"] = distributed.all_reduce_(torch.tensor([float(world.rank), -float(world.rank)], dtype=torch.float64), "max").tolist()
    # checkpoints: every rank's files are on disk before rank 0 renames the folder
    _barrier()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


@pytest.mark.slow
def test_every_collective_path_on_two_gloo_ranks(tiny_model_dir, tmp_path):
    """Catches a collective missing on one rank (a hang, bounded by the 2-minute group
    timeout), a reduction with the wrong op, or a rank-local result."""
    mp.spawn(_rank_main, args=(distributed.free_port(), str(tiny_model_dir), str(tmp_path)), nprocs=2, join=True)
    outs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for o in outs:
        assert o["backend"] == "gloo"
        assert o["eval_n"] == 5  # 3 + 2 examples from the two shards
        assert o["any"] == [True, False]
        assert o["skipped_None"] == [True, True] and o["skipped_1.0"] == [True, True]
        assert o["share_total"] == pytest.approx(7.0)
        assert o["max"] == [1.0, 0.0]
    assert outs[0]["eval_sampling"] == outs[1]["eval_sampling"]
