"""``critic-free-rl train [overrides]``: one RL training run, ``-m`` for a multirun,
``resume=RUN_DIR`` to continue a run from its latest checkpoint.

The run trains in this process, in one fresh process per job of a multirun, or in one
process per rank started through DeepSpeed's launcher (:mod:`critic_free_rl.cli.launch`,
:mod:`critic_free_rl.cli.multinode`).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from critic_free_rl.cli.hydra_app import hydra_output_dir, run_hydra
from critic_free_rl.cli.plan import check_memory_plan
from critic_free_rl.cli.multinode import for_disk, launcher_command, master_port, uses_launcher, wait_for_run_config
from critic_free_rl.checkpointing import is_run_dir
from critic_free_rl.config.environment import setup_environment
from critic_free_rl.config.loading import to_train_config
from critic_free_rl.shutdown import EXIT_INTERRUPTED, forward_signals, run_in_group, stop_was_forwarded


def prepare_run_dir(run_dir: Path, tc) -> bool:
    """Refuse to overwrite a finished or started run unless ``overwrite=true``; write the
    resolved ``config.yaml`` atomically. Returns False when the run already finished and
    ``extra.skip_if_done`` asks to reuse it (comparisons resume this way)."""
    from omegaconf import OmegaConf

    from critic_free_rl.logging.tracker import atomic_write_text

    done = (run_dir / "summary.json").is_file()
    if done and tc.extra.get("skip_if_done"):
        print(f"[critic-free-rl] {run_dir}: finished run reused (summary.json present)")
        return False
    started = done or any(run_dir.glob("events.out.tfevents*")) or (run_dir / "final").exists() or (run_dir / "checkpoints").exists()
    if started and not tc.overwrite:
        raise FileExistsError(f"run directory {run_dir} already holds a run; pass overwrite=true, resume={run_dir}, or choose another run_dir=")
    if started and not is_run_dir(run_dir):
        raise FileExistsError(f"run directory {run_dir} holds files but no config.yaml of a critic-free-rl run: "
                              "overwrite=true deletes only a run's own outputs; choose another run_dir=")
    if started:
        import shutil

        for f in run_dir.glob("events.out.tfevents*"):
            f.unlink()
        for name in ("summary.json", "metrics.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
        for sub in ("checkpoints", "final"):  # never resume into, or evaluate, another run's state
            shutil.rmtree(run_dir / sub, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(for_disk(tc))))
    return True


def run_training(tc, run_dir: Path) -> dict:
    """Train in this process as one rank of the world described by the environment."""
    from critic_free_rl.backends.distributed import init_world
    from critic_free_rl.trainer import Trainer

    world = init_world(tc.trainer.backend, tc.trainer.dist_timeout_minutes)
    trainer = Trainer(tc, run_dir, world)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def launch_ranks(run_dir: Path, t) -> None:
    """Start the ranks through DeepSpeed's launcher (see :mod:`critic_free_rl.cli.multinode`)."""
    if t.hostfile and not Path(t.hostfile).expanduser().is_file():
        raise FileNotFoundError(f"trainer.hostfile={t.hostfile}: no such file")
    cmd = launcher_command(t, run_dir, master_port(t))
    print("[critic-free-rl] launching:", " ".join(cmd), flush=True)
    with forward_signals():  # the ranks checkpoint and stop; nothing of them outlives this process
        rc = run_in_group(cmd, env=os.environ.copy())
    if stop_was_forwarded():
        raise SystemExit(EXIT_INTERRUPTED)
    if rc:
        raise SystemExit(f"critic-free-rl: DeepSpeed ranks exited with code {rc}")


def _resume_task(cfg) -> bool:
    """``train resume=RUN_DIR``: continue RUN_DIR from its latest checkpoint with its saved
    config (see :func:`critic_free_rl.checkpointing.resume_config`). False: this node
    writes no summary (node K > 0 of a multi-node run)."""
    from hydra.core.hydra_config import HydraConfig

    from omegaconf import OmegaConf

    from critic_free_rl.checkpointing import latest_step, resume_config
    from critic_free_rl.config.validate import validate
    from critic_free_rl.logging.tracker import atomic_write_text

    run_dir = Path(cfg.resume)
    tc = resume_config(run_dir, list(HydraConfig.get().overrides.task))
    validate(tc)
    setup_environment(tc.trainer.num_ranks, tc.trainer.num_nodes)
    print(f"[critic-free-rl] run directory: {run_dir.resolve()} (resume from step {latest_step(run_dir)})", flush=True)
    summary = run_dir / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("steps", 0) >= tc.trainer.total_steps:
        print(f"[critic-free-rl] {run_dir}: already finished ({summary})", flush=True)
        return True
    if tc.trainer.node_rank:  # node K > 0 of a multi-node run: node 0 writes the config
        wait_for_run_config(run_dir, tc)
    else:
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(for_disk(tc))))  # the ranks read it
    _run_or_launch(tc, run_dir)
    return not tc.trainer.node_rank


def _jobs_share_process() -> bool:
    """Whether the multirun's launcher runs its jobs one after another in this process
    (Hydra's basic launcher); a launcher plugin such as submitit gives each job a process."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().launcher.get("_target_", "").endswith(".BasicLauncher")


def _run_or_launch(tc, run_dir: Path) -> None:
    """Train in this process, or in fresh processes: through DeepSpeed's launcher for
    several ranks, and one process per job in a ``-m`` multirun whose jobs share this
    process (vLLM and DeepSpeed keep process-global state that a second job in the same
    process would collide with); ``hydra/launcher=submitit_*`` jobs train in their own."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if uses_launcher(tc.trainer) and "LOCAL_RANK" not in os.environ:
        launch_ranks(run_dir, tc.trainer)
    elif HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN and _jobs_share_process():
        with forward_signals():
            rc = run_in_group([sys.executable, "-m", "critic_free_rl.cli.launch", str(run_dir)], env=os.environ.copy())
        if rc:
            raise SystemExit(f"critic-free-rl: training process exited with code {rc}")
    else:
        run_training(tc, run_dir)


def _train_task(cfg) -> None:
    run_dir = hydra_output_dir()
    if cfg.get("resume"):
        run_dir = Path(cfg.resume)
        if not _resume_task(cfg):
            return
    else:
        tc = to_train_config(cfg)
        setup_environment(tc.trainer.num_ranks, tc.trainer.num_nodes)
        check_memory_plan(tc)
        print(f"[critic-free-rl] run directory: {run_dir.resolve()}", flush=True)
        if tc.trainer.node_rank:  # node K > 0 of a multi-node run: node 0 prepares the run directory
            wait_for_run_config(run_dir, tc)
            _run_or_launch(tc, run_dir)
            return
        if not prepare_run_dir(run_dir, tc):
            return
        _run_or_launch(tc, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    print(f"[critic-free-rl] done: initial_accuracy={summary['initial_accuracy']} final_accuracy={summary['final_accuracy']} "
          f"wall_seconds={summary['wall_seconds']:.1f} -> {run_dir / 'summary.json'}", flush=True)


def run(args: list[str]) -> None:
    resume = [a.split("=", 1)[1] for a in args if a.startswith("resume=")]
    if resume and resume[-1] not in ("", "null"):
        # Hydra's output folder (train.log) is the resumed run's own folder
        args = [*args, f"hydra.run.dir={resume[-1]}", "hydra.output_subdir=null"]
    run_hydra("train", args, _train_task)
