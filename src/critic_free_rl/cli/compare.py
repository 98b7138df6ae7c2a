"""``critic-free-rl compare``: train every run of a comparison, then report it.

    critic-free-rl compare compare.grid=default compare.seeds=[0] [compare.name=NAME] [overrides...]
    critic-free-rl compare [algorithm=a,b reward=x,y trainer.seed=0,1] [overrides...]

The runs come from a grid file (``configs/compare/<grid>.yaml``: arms, settings, the fair
protocol, seeds) or from a sweep of ``algorithm x reward x trainer.seed``; see
:mod:`critic_free_rl.cli.grid` for both and for the order (seed block by seed block).
Every arm's config is composed and validated before the first run starts. A plain
override applies to every run (``rollout.group_size=16``). Without a grid file every run
trains 50 steps unless the command says otherwise (:data:`~critic_free_rl.cli.grid.DEFAULT_SETTINGS`).

Each run trains in a process of its own (``critic-free-rl train``; ``compare.jobs`` at once), or
as a job of a Hydra launcher (``compare.launcher=submitit_slurm``: :mod:`critic_free_rl.cli.launching`,
docs/scale_out.md), in ``<runs>/compare-<name>/<algorithm>-<reward>-s<seed>[-<key>_<value>...]``.
Finished runs are reused, interrupted ones continue from their last checkpoint (or restart
without one), so running the same command again resumes a comparison. Plain overrides are
recorded in ``compare.json`` of the sweep folder; a later call with different ones is refused,
since the runs it would reuse were trained differently. Finally ``<reports>/<name>/`` is
written from every finished run of the sweep folder (other seed blocks included, also ones
copied in from other machines).
"""
from __future__ import annotations

import json
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
    #: a Hydra launcher (``hydra/launcher`` option: ``submitit_slurm``, ``submitit_local``)
    #: that runs the grid, one job per run, configured by ``hydra.launcher.*`` overrides
    #: (docs/scale_out.md); empty: the built-in pool of ``jobs`` processes on this machine
    launcher: str = ""


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


def run(args: list[str]) -> None:
    """Command-line entry of ``critic-free-rl compare`` (see the module docstring)."""
    from critic_free_rl.report.report import write_report

    from critic_free_rl.cli.launching import RunSpec, run_all
    from critic_free_rl.shutdown import EXIT_INTERRUPTED, stop_was_forwarded

    opts, args = split_args(args)
    # how the runs are dispatched is no part of what they train (nor of compare.json)
    hydra_args = [a for a in args if a.startswith(("hydra.", "hydra/"))]
    overrides = [a for a in args if a not in hydra_args]
    sweep_dir = Path(opts.runs) / f"compare-{opts.name}"
    fixed, record, jobs = plan(opts, overrides, sweep_dir)
    check_fixed_overrides(sweep_dir, record)
    specs = [RunSpec(j.run_dir, (*fixed, *j.overrides, *RESUME_OVERRIDES)) for j in jobs]
    failed = run_all(specs, f"compare {opts.name}", parallel_jobs(opts.jobs), opts.launcher, hydra_args)
    if stop_was_forwarded():
        raise SystemExit(EXIT_INTERRUPTED)
    # every finished run of the folder: the report covers the seed blocks run before (or copied in)
    finished = sorted(p.parent for p in sweep_dir.glob("*/summary.json"))
    if finished:
        report = write_report(finished, opts.name, Path(opts.reports))
        print(f"[critic-free-rl] compare {opts.name}: {len(jobs) - len(failed)}/{len(jobs)} runs of this call finished, "
              f"{len(finished)} in {sweep_dir}; report: {report}", flush=True)
    if failed:
        raise SystemExit(f"critic-free-rl compare: {len(failed)} run(s) failed ({', '.join(str(d) for d in failed)}); "
                         "run the same command again to retry them (finished runs are reused)")
