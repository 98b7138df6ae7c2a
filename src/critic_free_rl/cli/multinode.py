"""Starting the ranks: one node, or several through DeepSpeed's launcher (``trainer.hostfile``).

Two ways to run on several nodes (see docs/scale_out.md):

* ``trainer.node_rank=null`` (default): run ``critic-free-rl train`` once, on the first node;
  DeepSpeed's ``trainer.launcher`` (pdsh by default; openmpi, slurm, ...) starts the ranks on
  every host of the hostfile (needs passwordless ssh for pdsh).
* ``trainer.node_rank=K``: run the same command on every node, with K = that node's index in
  the hostfile (SLURM: ``$SLURM_NODEID``); DeepSpeed's ``--no_ssh`` mode, no ssh needed.
  Node 0 prepares the run directory; the other nodes wait until its ``config.yaml`` holds
  the config they composed themselves, so every node trains the same run.

Either way ``run_dir`` must be on a file system all nodes share (config, checkpoints).
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

#: master port of multi-node runs when trainer.master_port is unset (all nodes must agree)
DEFAULT_MASTER_PORT = 29500


def master_port(t) -> int:
    from critic_free_rl.backends.distributed import free_port

    if t.master_port:
        return t.master_port
    return DEFAULT_MASTER_PORT if t.hostfile else free_port()


def launcher_command(t, run_dir: Path, port: int) -> list[str]:
    """DeepSpeed launcher command for ``trainer.num_ranks`` ranks: this node only, or
    ``trainer.num_nodes`` nodes of ``trainer.hostfile`` (num_ranks / num_nodes each)."""
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner"]
    if t.hostfile:
        cmd += ["--hostfile", str(Path(t.hostfile).expanduser()), "--num_nodes", str(t.num_nodes),
                "--num_gpus", str(t.num_ranks // t.num_nodes)]
        if t.node_rank is not None:
            cmd += ["--no_ssh", "--node_rank", str(t.node_rank)]
        else:
            cmd += ["--launcher", t.launcher]
        if t.master_addr:
            cmd += ["--master_addr", t.master_addr]
    else:
        cmd += ["--num_gpus", str(t.num_ranks)]
    return cmd + ["--master_port", str(port), "--module", "critic_free_rl.cli.launch", str(Path(run_dir).resolve())]


def uses_launcher(t) -> bool:
    return t.num_ranks > 1 or bool(t.hostfile)


def for_disk(tc):
    """The config as written to ``RUN_DIR/config.yaml``: ``trainer.node_rank`` is a property
    of one node's command line, not of the run."""
    return dataclasses.replace(tc, trainer=dataclasses.replace(tc.trainer, node_rank=None))


def wait_for_run_config(run_dir: Path, tc, timeout_s: float = 1800.0, poll_s: float = 2.0) -> None:
    """Node K > 0: block until node 0 has written the same run config to ``run_dir``."""
    from omegaconf import OmegaConf

    from critic_free_rl.config.loading import load_run_config

    want = OmegaConf.to_yaml(OmegaConf.structured(for_disk(tc)))
    deadline = time.time() + timeout_s
    print(f"[critic-free-rl] node {tc.trainer.node_rank}: waiting for node 0 to write {run_dir / 'config.yaml'}", flush=True)
    while True:
        try:
            if OmegaConf.to_yaml(OmegaConf.structured(load_run_config(run_dir))) == want:
                return
        except FileNotFoundError:
            pass
        if time.time() > deadline:
            raise TimeoutError(f"node {tc.trainer.node_rank}: {run_dir / 'config.yaml'} did not get this node's config within "
                               f"{timeout_s:.0f}s; start node 0 too, with the same run_dir= (a shared path) and overrides")
        time.sleep(poll_s)
