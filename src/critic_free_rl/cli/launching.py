"""Running the training runs of a grid (``compare``): one ``train`` per run, through the
built-in process pool or a Hydra launcher plugin.

The built-in runner starts ``critic-free-rl train`` processes on this machine, ``jobs`` at
once. A launcher (``compare.launcher=submitit_slurm``, ``submitit_local``, or any installed
``hydra/launcher`` option) gets the same runs as one Hydra multirun, one job per run, with
each run's own override list (a grid's runs are not always a Cartesian product of the
command line, so the launcher is called directly instead of through a sweeper). Either
way a run lands in the same folder and the report reads it from there; a run succeeded when
its ``summary.json`` exists. ``hydra.launcher.*`` overrides configure the launcher
(partition, time limit, GPUs; see docs/scale_out.md).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from critic_free_rl.cli.progress import RunTable, is_terminal


@dataclass(frozen=True)
class RunSpec:
    """One run: its folder and the ``train`` overrides that make it (folder excluded)."""

    run_dir: Path
    overrides: tuple[str, ...]


def quoted(path: Path) -> str:
    """``path`` (absolute) as a single-quoted Hydra override value."""
    return "'" + str(path.resolve()).replace("\\", "\\\\").replace("'", "\\'") + "'"


def finished(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file()


def job_env(jobs: int) -> dict[str, str]:
    """Environment of each of ``jobs`` runs trained at once: its share of the cores in
    ``OMP_NUM_THREADS`` (the run divides it further among its ranks)."""
    from critic_free_rl.config.environment import THREADS_VAR, process_cpu_threads

    return {**os.environ, THREADS_VAR: str(process_cpu_threads(jobs))}


def train_command(spec: RunSpec) -> list[str]:
    """``critic-free-rl train`` for ``spec``; a run interrupted after a checkpoint continues
    from it (``train resume=RUN``) instead of restarting."""
    from critic_free_rl.checkpointing import latest_checkpoint

    train = [sys.executable, "-m", "critic_free_rl.cli", "train"]
    if latest_checkpoint(spec.run_dir) is not None and not finished(spec.run_dir):
        return [*train, f"resume={quoted(spec.run_dir)}"]
    return [*train, *spec.overrides, f"run_dir={quoted(spec.run_dir)}"]


def run_local(spec: RunSpec, log_to_file: bool, env: dict[str, str]) -> bool:
    """Train (or reuse) one run in a fresh ``critic-free-rl train`` process group that dies
    with this process; True when it finished. ``log_to_file``: its output goes to
    ``<run_dir>/stdout.log`` (under a live table) instead of this process's stdout."""
    from critic_free_rl.shutdown import run_in_group

    cmd = train_command(spec)
    if not log_to_file:
        return run_in_group(cmd, env=env) == 0 and finished(spec.run_dir)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    with open(spec.run_dir / "stdout.log", "w") as log:
        return run_in_group(cmd, env=env, stdout=log, stderr=subprocess.STDOUT) == 0 and finished(spec.run_dir)


def run_pool(specs: list[RunSpec], jobs: int, failed: set[Path], title: str) -> None:
    """The built-in runner: ``jobs`` runs at once on this machine, each with its share of the
    cores; adds failures to ``failed``. A stop signal is forwarded to the running runs (they
    checkpoint and exit) and no further run starts."""
    from critic_free_rl.shutdown import forward_signals, stop_was_forwarded

    lock = threading.Lock()
    live = is_terminal()
    env = job_env(max(1, min(jobs, len(specs))))

    def one(i: int, spec: RunSpec) -> None:
        if stop_was_forwarded():
            return
        if not live:  # one write per line: the pool's threads print at the same time
            sys.stdout.write(f"[critic-free-rl] {title}: run {i}/{len(specs)}: {spec.run_dir.name}\n")
            sys.stdout.flush()
        if not run_local(spec, live, env):
            with lock:
                failed.add(spec.run_dir)

    with forward_signals(), ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, range(1, len(specs) + 1), specs))


def train_job(cfg) -> bool:
    """Task of one launcher job: ``train``'s task in the job's folder (``hydra.sweep.dir/
    hydra.sweep.subdir``); an exit with a message becomes an error the launcher records."""
    from critic_free_rl.cli.hydra_app import hydra_output_dir
    from critic_free_rl.cli.train import _train_task

    try:
        _train_task(cfg)
    except SystemExit as e:
        if e.code:
            raise RuntimeError(f"critic-free-rl train: {e.code}") from None
    return finished(hydra_output_dir())


def run_hydra_launcher(specs: list[RunSpec], launcher: str, hydra_overrides: list[str]) -> None:
    """All runs as jobs of the Hydra launcher ``launcher`` (``hydra/launcher`` option), one
    job per run; returns when every job has ended. The runs' common parent folder is the
    sweep folder (``.submitit/`` job logs go there). A launcher that runs its jobs on this
    machine (``*_local``, ``basic``) starts them all at once: each gets its share of the cores,
    as in the built-in pool; a cluster's jobs size themselves from the cores they are given."""
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext, RunMode

    from critic_free_rl.config.loading import config_dir, register_schema

    register_schema()
    if launcher.endswith("_local") or launcher == "basic":
        os.environ.update(job_env(len(specs)))
    sweep_dir = Path(os.path.commonpath([str(s.run_dir.resolve().parent) for s in specs]))
    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2(task_name="train", config_search_path=create_automatic_config_search_path(None, None, config_dir()))
    try:
        # the launcher composes each job from these hydra.* overrides plus the job's own list
        master = [f"hydra/launcher={launcher}", f"hydra.sweep.dir={quoted(sweep_dir)}", *hydra_overrides]
        cfg = hydra.compose_config("train", master, run_mode=RunMode.MULTIRUN, with_log_configuration=False)
        plugin = Plugins.instance().instantiate_launcher(
            hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(cfg)), task_function=train_job, config=cfg)
        job_overrides = [[*s.overrides, f"hydra.sweep.dir={quoted(s.run_dir.parent)}", f"hydra.sweep.subdir='{s.run_dir.name}'"] for s in specs]
        try:
            plugin.launch(job_overrides, initial_job_idx=0)
        except Exception as e:  # a job the launcher lost (killed, preempted): its run has no summary
            print(f"[critic-free-rl] launcher {launcher}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    finally:
        GlobalHydra.instance().clear()


def run_all(specs: list[RunSpec], title: str, jobs: int, launcher: str = "", hydra_overrides: list[str] | None = None) -> list[Path]:
    """Train every run of ``specs`` (built-in pool when ``launcher`` is empty) under a live
    progress table; returns the folders of the runs that did not finish."""
    failed: set[Path] = set()
    with RunTable(title, [s.run_dir for s in specs], failed=lambda: set(failed)):
        if launcher:
            run_hydra_launcher(specs, launcher, hydra_overrides or [])
        else:
            run_pool(specs, jobs, failed, title)
        failed.update(s.run_dir for s in specs if not finished(s.run_dir))
    lost = [s.run_dir for s in specs if s.run_dir in failed]
    if lost and (launcher or is_terminal()):  # their output is in files, not above
        where = "<sweep folder>/.submitit/<job id>/" if launcher else "<run folder>/stdout.log"
        print(f"[critic-free-rl] {title}: output of the failed runs: {where}", flush=True)
    return lost
