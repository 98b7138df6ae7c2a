"""Process-group set-up for 1..N ranks (DeepSpeed launcher, torchrun, or a plain process).

A plain ``critic-free-rl train`` is rank 0 of a world of 1; under the ``deepspeed``
launcher RANK / WORLD_SIZE / LOCAL_RANK come from the environment. CPU runs use gloo.
"""
from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass

import torch


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


def init_world(backend: str = "deepspeed") -> World:
    """Initialise torch.distributed (through DeepSpeed when it is the backend)."""
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
    if not torch.distributed.is_initialized():
        _forget_dead_deepspeed_groups()
        dist_backend = "nccl" if cuda else "gloo"
        if backend == "deepspeed":
            import deepspeed

            deepspeed.init_distributed(dist_backend=dist_backend)
            if not cuda:
                _unlink_deepspeed_shm(rank, size)
        else:
            torch.distributed.init_process_group(dist_backend)
    return World(rank, size, local, device)
