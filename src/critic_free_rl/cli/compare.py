"""``critic-free-rl compare``: train every run of a comparison, then report it.

    critic-free-rl compare compare.grid=default compare.seeds=[0] [compare.name=NAME] [overrides...]
    critic-free-rl compare [algorithm=a,b reward=x,y trainer.seed=0,1] [overrides...]

The runs come from a grid file (``configs/compare/<grid>.yaml``: arms, settings, the fair
protocol, seeds) or from a sweep of ``algorithm x reward x trainer.seed``; see
:mod:`critic_free_rl.cli.grid` for both and for the order (seed block by seed block).
Every arm's config is composed and validated before the first run starts. A plain
override applies to every run (``rollout.group_size=16``). Without a grid file every run
trains 50 steps unless the command says otherwise (:data:`~critic_free_rl.cli.grid.DEFAULT_SETTINGS`).

Each run trains in a process of its own (``critic-free-rl train``; ``compare.jobs`` at once) in
``<runs>/compare-<name>/<algorithm>-<reward>-s<seed>[-<key>_<value>...]``. Finished runs are
reused and interrupted ones restarted (``+extra.skip_if_done=true overwrite=true``), so running
the same command again resumes a comparison. Plain overrides are recorded in ``compare.json``
of the sweep folder; a later call with different ones is refused, since the runs it would
reuse were trained differently. Finally ``<reports>/<name>/`` is written from every finished
run of the sweep folder (other seed blocks included, also ones copied in from other machines).
"""
from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

from critic_free_rl.cli.grid import GridError, Job, load_grid, plan_grid, plan_sweep, validate_jobs

#: added to every run: reuse a finished run, restart an interrupted one
RESUME_OVERRIDES = ("+extra.skip_if_done=true", "overwrite=true")


@dataclass
class CompareOptions:
    """The ``compare.*`` arguments."""

    #: comparison name: sweep folder ``<runs>/compare-<name>``, report ``<reports>/<name>``
    name: str = "default"
    runs: str = "runs"
    reports: str = "reports"
    #: runs trained at once; 0 = one per CPU core without a GPU, one with a GPU (every run
    #: would share it). Each run gets cores // jobs threads (config.environment)
    jobs: int = 0
    #: grid file: a name under configs/compare/ or a .yaml path (None: the sweep)
    grid: Optional[str] = None
    #: seed blocks to run (None: the grid file's seeds, or the sweep's trainer.seed axis)
    seeds: Optional[list[int]] = None


def split_args(args: list[str]) -> tuple[CompareOptions, list[str]]:
    """``compare.*`` options (unknown ones rejected) and the Hydra overrides for ``train``."""
    from omegaconf import OmegaConf

    ours = [a[len("compare."):] for a in args if a.startswith("compare.")]
    valid = [f.name for f in fields(CompareOptions)]
    unknown = [a for a in ours if a.split("=", 1)[0] not in valid]
    if unknown:
        raise SystemExit(f"critic-free-rl compare: unknown option(s) {['compare.' + a for a in unknown]}; "
                         f"valid: {', '.join('compare.' + v for v in valid)}")
    opts = OmegaConf.merge(OmegaConf.structured(CompareOptions), OmegaConf.from_dotlist(ours))
    return OmegaConf.to_object(opts), [a for a in args if not a.startswith("compare.")]


def plan(opts: "CompareOptions", overrides: list[str], sweep_dir: Path) -> tuple[list[str], dict, list[Job]]:
    """The plain overrides of every run, the record of the comparison's settings (kept in
    ``compare.json``) and the jobs, from the grid file or the sweep; every arm validated."""
    from critic_free_rl.config.loading import config_dir

    try:
        if opts.grid:
            grid = load_grid(opts.grid, config_dir())
            fixed, jobs = plan_grid(grid, overrides, opts.seeds, sweep_dir)
            record = {"overrides": sorted(fixed), "per_algorithm": grid.per_algorithm}
        else:
            fixed, jobs = plan_sweep(overrides, sweep_dir, opts.seeds)
            record = {"overrides": sorted(fixed)}
        validate_jobs(fixed, jobs)
    except GridError as exc:
        raise SystemExit(f"critic-free-rl compare: {exc}") from None
    return fixed, record, jobs


def check_fixed_overrides(sweep_dir: Path, wanted: dict) -> None:
    """Record the settings of every run of the sweep folder, or refuse different ones."""
    record = sweep_dir / "compare.json"
    if record.is_file():
        before = json.loads(record.read_text())
        if before != wanted:
            raise SystemExit(f"critic-free-rl compare: {sweep_dir} holds runs trained with the overrides {before}, "
                             f"not {wanted}; choose another compare.name= or remove that folder")
        return
    sweep_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(wanted, indent=2))


def parallel_jobs(requested: int) -> int:
    """``compare.jobs``, or its automatic value for 0 (see :class:`CompareOptions`)."""
    if requested < 0:
        raise SystemExit(f"critic-free-rl compare: compare.jobs={requested} must be >= 0 (0 = automatic)")
    if requested:
        return requested
    import torch

    from critic_free_rl.config.environment import available_cores

    return 1 if torch.cuda.is_available() else available_cores()


def job_env(jobs: int) -> dict[str, str]:
    """Environment of each of ``jobs`` runs trained at once: its share of the cores in
    ``OMP_NUM_THREADS`` (the run divides it further among its ranks)."""
    from critic_free_rl.config.environment import THREADS_VAR, process_cpu_threads

    return {**os.environ, THREADS_VAR: str(process_cpu_threads(jobs))}


def run_job(job: Job, fixed: list[str], env: dict[str, str]) -> bool:
    """Train (or reuse) one run in a fresh process with environment ``env``; True when it finished."""
    run_dir = str(job.run_dir.resolve()).replace("\\", "\\\\").replace("'", "\\'")
    from critic_free_rl.checkpointing import latest_checkpoint
    from critic_free_rl.shutdown import run_in_group

    cmd = [sys.executable, "-m", "critic_free_rl.cli", "train", *fixed, *job.overrides, f"run_dir='{run_dir}'", *RESUME_OVERRIDES]
    if latest_checkpoint(job.run_dir) is not None and not (job.run_dir / "summary.json").is_file():  # interrupted: continue it
        cmd = [sys.executable, "-m", "critic_free_rl.cli", "train", f"resume='{run_dir}'"]
    return run_in_group(cmd, env=env) == 0 and (job.run_dir / "summary.json").is_file()


def run(args: list[str]) -> None:
    """Command-line entry of ``critic-free-rl compare`` (see the module docstring)."""
    from critic_free_rl.report.report import write_report

    from critic_free_rl.shutdown import EXIT_INTERRUPTED, forward_signals, stop_was_forwarded

    opts, overrides = split_args(args)
    sweep_dir = Path(opts.runs) / f"compare-{opts.name}"
    fixed, record, jobs = plan(opts, overrides, sweep_dir)
    check_fixed_overrides(sweep_dir, record)

    workers = parallel_jobs(opts.jobs)
    env = job_env(min(workers, len(jobs)) or 1)

    def one(i: int, job: Job) -> bool:
        if stop_was_forwarded():  # stopping: start no further run
            return False
        # one write per line: the pool's threads print at the same time
        sys.stdout.write(f"[critic-free-rl] compare {opts.name}: run {i}/{len(jobs)}: {' '.join(job.overrides)}\n")
        sys.stdout.flush()
        return run_job(job, fixed, env)

    with forward_signals(), ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(one, range(1, len(jobs) + 1), jobs))
    if stop_was_forwarded():
        raise SystemExit(EXIT_INTERRUPTED)
    failed = [j for j, ok in zip(jobs, done) if not ok]
    # every finished run of the folder: the report covers the seed blocks run before (or copied in)
    finished = sorted(p.parent for p in sweep_dir.glob("*/summary.json"))
    if finished:
        report = write_report(finished, opts.name, Path(opts.reports))
        print(f"[critic-free-rl] compare {opts.name}: {len(jobs) - len(failed)}/{len(jobs)} runs of this call finished, "
              f"{len(finished)} in {sweep_dir}; report: {report}", flush=True)
    if failed:
        raise SystemExit(f"critic-free-rl compare: {len(failed)} run(s) failed ({', '.join(str(j.run_dir) for j in failed)}); "
                         "run the same command again to retry them (finished runs are reused)")
