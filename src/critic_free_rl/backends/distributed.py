"""Process-group set-up for 1..N ranks (DeepSpeed launcher, torchrun, or a plain process).

A plain ``critic-free-rl train`` is rank 0 of a world of 1; under the ``deepspeed``
launcher RANK / WORLD_SIZE / LOCAL_RANK come from the environment. CPU runs use gloo; CUDA
runs one group with two backends, ``cpu:gloo,cuda:nccl``: DeepSpeed's collectives on GPU
tensors go over NCCL, and the small CPU-tensor reductions of the loop (evaluation counts,
the any-rank flags, the loss-share totals, the sync check's maxima) over gloo. An NCCL-only
group fails on those ("No backend type associated with device type cpu").

The loop's own collectives go through :func:`all_reduce_` and :func:`any_rank`, which are
no-ops in a world of one rank (tests/test_distributed.py runs each on 2 gloo ranks).
"""
from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forget_dead_deepspeed_groups() -> None:
    """DeepSpeed caches process groups (a clone of the world, data-parallel groups) in
    module globals and drops them only when the world is destroyed through
    ``deepspeed.comm``. vLLM's engine shutdown destroys the default group with
    ``torch.distributed`` directly, so a world initialised after it (an engine closed
    and a new learner built in the same process) would reuse dead groups."""
    groups = sys.modules.get("deepspeed.utils.groups")
    if groups is not None and hasattr(groups, "_release_process_group_references"):
        groups._release_process_group_references(None)


def _unlink_deepspeed_shm(rank: int, size: int) -> None:
    """Remove the name of this rank's shared-memory all-reduce workspace. DeepSpeed's CPU
    backend creates one per rank (``/dev/shm/deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank>``,
    66 MB) when all ranks share a machine, and never unlinks it: every run left its ranks'
    files behind, in RAM until reboot. Once every rank has mapped its peers' workspaces (they
    all finished initialising: the barrier), the names are no longer needed; the memory
    itself is freed when the last rank unmaps it."""
    path = f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_{os.environ.get('MASTER_PORT', '')}_{rank}"
    if size > 1:
        torch.distributed.barrier()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def process_group_backend(cuda: bool) -> str:
    """The backend string ``init_world`` passes to torch: one group that serves CPU and GPU
    tensors on CUDA (NCCL has no CPU backend), gloo alone on CPU."""
    return "cpu:gloo,cuda:nccl" if cuda else "gloo"


def init_world(backend: str = "deepspeed", timeout_minutes: float = 10.0) -> World:
    """Initialise torch.distributed (through DeepSpeed when it is the backend).

    ``timeout_minutes`` (``trainer.dist_timeout_minutes``) bounds how long a collective
    waits for its peers before the rank fails instead of hanging."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    rank, size, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        _forget_dead_deepspeed_groups()
        dist_backend = process_group_backend(cuda)
        timeout = timedelta(minutes=timeout_minutes)
        if backend == "deepspeed":
            import deepspeed

            deepspeed.init_distributed(dist_backend=dist_backend, timeout=timeout)
            if not cuda:
                _unlink_deepspeed_shm(rank, size)
        else:
            dist.init_process_group(dist_backend, timeout=timeout)
    return World(rank, size, local, device)


def world_size() -> int:
    """Ranks in the default group (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_initialized() else 1


_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "mean": dist.ReduceOp.SUM}


def all_reduce_(t: torch.Tensor, op: Literal["sum", "max", "mean"] = "sum") -> torch.Tensor:
    """Reduce ``t`` (any shape, CPU or GPU) over all ranks in place and return it; a no-op
    on one rank. ``mean`` is the sum divided by the world size (gloo has no AVG)."""
    n = world_size()
    if n > 1:
        dist.all_reduce(t, op=_OPS[op])
        if op == "mean":
            t.div_(n)
    return t


def all_gather_lists(items: list) -> list:
    """Every rank's ``items`` concatenated in rank order (picklable objects); ``items`` itself
    on one rank."""
    n = world_size()
    if n == 1:
        return items
    parts: list = [None] * n
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one."""
    return bool(all_reduce_(torch.tensor([1.0 if flag else 0.0]), "max").item())
