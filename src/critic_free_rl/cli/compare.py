"""``critic-free-rl compare``: train every configuration of a sweep, then report it.

    critic-free-rl compare [compare.name=NAME] [compare.runs=DIR] [compare.reports=DIR] [overrides...]

The sweep is ``algorithm x reward x trainer.seed``, by default ``ppo,grpo,rloo`` x
``success,pr,pr_clip,pr_delta,pr_clip_delta`` x ``0,1``. An override in Hydra sweep syntax
for one of these keys replaces that axis (``algorithm=grpo,rloo``, ``trainer.seed=range(3)``),
one for any other key adds an axis (``algorithm.kl_coef=0.01,0.1``), and a plain override
applies to every run (``rollout.group_size=16``). Every run trains 50 steps unless the
command says otherwise (:data:`DEFAULT_SETTINGS`).

Each run trains in a process of its own (``critic-free-rl train``; ``compare.jobs`` at once), or
as a job of a Hydra launcher (``compare.launcher=submitit_slurm``: :mod:`critic_free_rl.cli.launching`,
docs/scale_out.md), in ``<runs>/compare-<name>/<algorithm>-<reward>-s<seed>``. Finished runs are reused and interrupted ones
restarted (``+extra.skip_if_done=true overwrite=true``), so running the same command
again resumes a comparison. Plain overrides are recorded in ``compare.json`` of the sweep
folder; a later call with different ones is refused, since the runs it would reuse were
trained differently. Finally ``<reports>/<name>/report.md`` is written from the finished runs.
"""
from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

#: default sweep axes (Hydra sweep syntax); an override of the same key replaces one. Jobs
#: start in grid order, algorithm outermost: PPO (a critic to train too) goes first, so the
#: parallel jobs finish close together instead of one slow run trailing alone
DEFAULT_AXES: dict[str, str] = {
    "algorithm": "ppo,grpo,rloo",
    "reward": "success,pr,pr_clip,pr_delta,pr_clip_delta",
    "trainer.seed": "0,1",
}
#: settings of every run unless the command sets the same key: 50 steps with held-out
#: evaluations at 0, 25 and 50 keep the default 30-run comparison within 90 minutes on
#: 2 CPU cores (``trainer.total_steps=100`` for the full-length runs of ``train``)
DEFAULT_SETTINGS: tuple[str, ...] = ("trainer.total_steps=50", "trainer.eval_every=25")
#: added to every run: reuse a finished run, restart an interrupted one
RESUME_OVERRIDES = ("+extra.skip_if_done=true", "overwrite=true")


@dataclass
class CompareOptions:
    """The ``compare.*`` arguments."""

    #: comparison name: sweep folder ``<runs>/compare-<name>``, report ``<reports>/<name>``
    name: str = "default"
    runs: str = "runs"
    reports: str = "reports"
    #: runs trained at once; 0 = one per CPU core without a GPU (the embedded policy trains
    #: single-threaded), one with a GPU (every run would share it)
    jobs: int = 0
    #: a Hydra launcher (``hydra/launcher`` option: ``submitit_slurm``, ``submitit_local``)
    #: that runs the grid, one job per run, configured by ``hydra.launcher.*`` overrides
    #: (docs/scale_out.md); empty: the built-in pool of ``jobs`` processes on this machine
    launcher: str = ""


@dataclass(frozen=True)
class Job:
    """One run of the sweep: its ``key=value`` axis overrides and run directory."""

    overrides: tuple[str, ...]
    run_dir: Path


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


def plan(overrides: list[str], sweep_dir: Path) -> tuple[list[str], list[Job]]:
    """Split ``overrides`` into plain ones (every run; :data:`DEFAULT_SETTINGS` for keys they
    leave unset) and the jobs of the sweep grid."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    axes: dict[str, list[str]] = {}
    fixed: list[str] = []
    given = {ov.get_key_element() for ov in parser.parse_overrides(overrides)}
    defaults = [s for s in DEFAULT_SETTINGS if s.split("=", 1)[0] not in given]
    parsed = parser.parse_overrides([f"{k}={v}" for k, v in DEFAULT_AXES.items()] + defaults + overrides)
    for ov in parsed:
        key = ov.get_key_element()
        if ov.is_sweep_override() or key in DEFAULT_AXES:
            axes[key] = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.get_value_element_as_str()]
        else:
            fixed.append(ov.input_line)
    jobs = []
    for values in itertools.product(*axes.values()):
        point = dict(zip(axes, values))
        jobs.append(Job(tuple(f"{k}={v}" for k, v in point.items()), sweep_dir / run_name(point)))
    return fixed, jobs


def run_name(point: dict[str, str]) -> str:
    """``<algorithm>-<reward>-s<seed>`` (the pattern of ``train``'s default run_dir), then
    ``-<key>_<value>`` per extra axis; only characters that need no quoting in overrides."""
    head = [point["algorithm"], point["reward"], f"s{point['trainer.seed']}"]
    tail = [f"{k}_{v}" for k, v in sorted(point.items()) if k not in DEFAULT_AXES]
    return re.sub(r"[^\w.+-]", "_", "-".join(head + tail))


def check_fixed_overrides(sweep_dir: Path, fixed: list[str]) -> None:
    """Record the plain overrides of the sweep folder, or refuse different ones."""
    record = sweep_dir / "compare.json"
    wanted = sorted(fixed)
    if record.is_file():
        before = json.loads(record.read_text())["overrides"]
        if before != wanted:
            raise SystemExit(f"critic-free-rl compare: {sweep_dir} holds runs trained with the overrides {before}, "
                             f"not {wanted}; choose another compare.name= or remove that folder")
        return
    sweep_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"overrides": wanted}, indent=2))


def parallel_jobs(requested: int) -> int:
    """``compare.jobs``, or its automatic value for 0 (see :class:`CompareOptions`)."""
    if requested < 0:
        raise SystemExit(f"critic-free-rl compare: compare.jobs={requested} must be >= 0 (0 = automatic)")
    if requested:
        return requested
    import torch

    return 1 if torch.cuda.is_available() else max(1, os.cpu_count() or 1)


def run(args: list[str]) -> None:
    """Command-line entry of ``critic-free-rl compare`` (see the module docstring)."""
    from critic_free_rl.report.report import write_report

    from critic_free_rl.cli.launching import RunSpec, run_all

    opts, args = split_args(args)
    # how the runs are dispatched is no part of what they train (nor of compare.json)
    hydra_args = [a for a in args if a.startswith(("hydra.", "hydra/"))]
    overrides = [a for a in args if a not in hydra_args]
    sweep_dir = Path(opts.runs) / f"compare-{opts.name}"
    fixed, jobs = plan(overrides, sweep_dir)
    check_fixed_overrides(sweep_dir, fixed)
    specs = [RunSpec(j.run_dir, (*fixed, *j.overrides, *RESUME_OVERRIDES)) for j in jobs]
    failed = run_all(specs, f"compare {opts.name}", parallel_jobs(opts.jobs), opts.launcher, hydra_args)
    finished = [j.run_dir for j in jobs if (j.run_dir / "summary.json").is_file()]
    if finished:
        report = write_report(finished, opts.name, Path(opts.reports))
        print(f"[critic-free-rl] compare {opts.name}: {len(finished)}/{len(jobs)} runs finished; report: {report}", flush=True)
    if failed:
        raise SystemExit(f"critic-free-rl compare: {len(failed)} run(s) failed ({', '.join(str(d) for d in failed)}); "
                         "run the same command again to retry them (finished runs are reused)")
