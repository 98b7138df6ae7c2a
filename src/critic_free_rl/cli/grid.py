"""Planning a comparison: which runs ``critic-free-rl compare`` trains, in which order,
in which folders, and the check of all of them before the first one starts.

Two ways to name the runs:

* a **grid file** (``compare.grid=NAME`` reads ``configs/compare/NAME.yaml``, or a path to
  a ``.yaml``): a list of arms, each an algorithm, a reward and its overrides; an entry
  whose ``algorithm`` / ``reward`` is a list, or that has ``variants`` (a list of override
  lists), stands for the product of them, so the file is a union of products. The file's
  ``settings`` apply to every run, ``per_algorithm`` to the runs of one algorithm, and
  ``seeds`` are the default seeds (``compare.seeds=[k]`` picks a block). ``algorithm=a,b`` /
  ``reward=x,y`` on the command line keep only the arms with those values.
* the **sweep** (no grid file): ``algorithm x reward x trainer.seed`` in Hydra sweep
  syntax, by default ``ppo,grpo,rloo`` x ``success,pr,pr_clip,pr_delta,pr_clip_delta`` x
  ``0,1`` (:data:`DEFAULT_AXES`); another swept key adds an axis.

Precedence, lowest first: :data:`DEFAULT_SETTINGS`, the file's ``settings``, the command's
plain overrides, ``per_algorithm``, the arm's own overrides (an arm is what it says it is),
the seed.

Runs are ordered seed block by seed block (every arm of seed k before any arm of seed
k+1), so the runs of one block run one after another on one machine and paired
differences between arms are taken within a block. A run's folder is
``<sweep>/<algorithm>-<reward>-s<seed>[-<key>_<value>...]`` (one ``key_value`` per
override of its arm or extra axis), so blocks trained on different machines merge by
copying their folders side by side.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

#: default sweep axes (Hydra sweep syntax); an override of the same key replaces one. Jobs
#: start in grid order, algorithm outermost: PPO (a critic to train too) goes first, so the
#: parallel jobs finish close together instead of one slow run trailing alone
DEFAULT_AXES: dict[str, str] = {
    "algorithm": "ppo,grpo,rloo",
    "reward": "success,pr,pr_clip,pr_delta,pr_clip_delta",
    "trainer.seed": "0,1",
}
#: settings of every run unless the command (or the grid file) sets the same key: 50
#: steps with held-out evaluations at 0, 25 and 50 keep the default 30-run comparison within
#: 90 minutes on 2 CPU cores (``trainer.total_steps=100`` for the full-length runs of ``train``)
DEFAULT_SETTINGS: tuple[str, ...] = ("trainer.total_steps=50", "trainer.eval_every=25")
#: the keys an arm is named by; the grid file's entries may hold only these
ARM_KEYS = ("algorithm", "reward", "overrides", "variants")
GRID_KEYS = ("description", "settings", "per_algorithm", "seeds", "arms")


class GridError(ValueError):
    """A grid file or a planned run that cannot work (names the file, the entry or the arm)."""


@dataclass(frozen=True)
class Arm:
    """One configuration of a comparison: algorithm, reward and the arm's own overrides."""

    algorithm: str
    reward: str
    overrides: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return " ".join([f"algorithm={self.algorithm}", f"reward={self.reward}", *self.overrides])

    @property
    def key(self) -> str:
        """The arm's name in run folders and reports: ``<algorithm>-<reward>[-<key>_<value>...]``."""
        tail = [f"{override_key(ov)}_{ov.split('=', 1)[1]}" for ov in self.overrides]
        return re.sub(r"[^\w.+-]", "_", "-".join([self.algorithm, self.reward, *tail]))

    def record(self) -> tuple[str, str]:
        """Overrides that write the arm into the run's config (``extra.*``: bookkeeping that
        no config grouping reads) for the report: its key and its reward group, which may
        differ from ``reward.name`` (``success_overlong`` is ``reward.name=success``)."""
        return f"++extra.arm={self.key}", f"++extra.reward_group={self.reward}"


@dataclass(frozen=True)
class Job:
    """One run: its ``key=value`` overrides (the arm's, then its seed) and run directory."""

    overrides: tuple[str, ...]
    run_dir: Path
    arm: Optional[Arm] = None
    seed: Optional[int] = None


@dataclass
class Grid:
    """A grid file, read (see the module docstring)."""

    path: Path
    arms: list[Arm]
    settings: list[str] = field(default_factory=list)
    per_algorithm: dict[str, list[str]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])


def override_key(override: str) -> str:
    """``+a.b=1`` / ``a.b=1`` -> ``a.b``: the key two overrides share when one replaces the other."""
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(*lists: list[str] | tuple[str, ...]) -> list[str]:
    """The overrides of ``lists`` in order, a later one of the same key replacing an
    earlier one in its place (Hydra refuses some repeated keys and silently takes the last
    of others)."""
    out: dict[str, str] = {}
    for ov in itertools.chain(*lists):
        out[override_key(ov)] = ov  # an existing key keeps its position
    return list(out.values())


def run_name(point: dict[str, str]) -> str:
    """``<algorithm>-<reward>-s<seed>`` (the pattern of ``train``'s default run_dir), then
    ``-<key>_<value>`` per other key in order; only characters that need no quoting in overrides."""
    head = [point["algorithm"], point["reward"], f"s{point['trainer.seed']}"]
    tail = [f"{k}_{v}" for k, v in point.items() if k not in DEFAULT_AXES]
    return re.sub(r"[^\w.+-]", "_", "-".join(head + tail))


# ------------------------------------------------------------------ grid files
def grid_path(spec: str, config_dir: str) -> Path:
    """``compare.grid``: a name under ``<config_dir>/compare/`` or a path to a YAML file."""
    named = Path(config_dir) / "compare" / f"{spec}.yaml"
    path = Path(spec).expanduser() if spec.endswith((".yaml", ".yml")) else named
    if not path.is_file():
        available = sorted(p.stem for p in named.parent.glob("*.yaml"))
        raise GridError(f"compare.grid={spec}: no grid file {path} (grid files in {named.parent}: {', '.join(available) or 'none'})")
    return path


def _strings(value: Any, where: str) -> list[str]:
    """A YAML string or list of strings as a list (numbers kept as written)."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in items):
        raise GridError(f"{where}: expected a string or a non-empty list of strings, got {value!r}")
    return [str(v) for v in items]


def _override_list(value: Any, where: str) -> list[str]:
    items = _strings(value, where) if value not in (None, []) else []
    bad = [ov for ov in items if "=" not in ov]
    if bad:
        raise GridError(f"{where}: {bad} are not key=value overrides")
    return items


def expand_entry(entry: Any, where: str) -> list[Arm]:
    """The arms of one ``arms:`` entry: the product of its algorithms, rewards and variants,
    each with the entry's ``overrides`` then the variant's."""
    if not isinstance(entry, dict) or not {"algorithm", "reward"} <= set(entry):
        raise GridError(f"{where}: an arm needs 'algorithm' and 'reward' (got {entry!r})")
    unknown = sorted(set(entry) - set(ARM_KEYS))
    if unknown:
        raise GridError(f"{where}: unknown key(s) {unknown}; an arm has {', '.join(ARM_KEYS)}")
    common = _override_list(entry.get("overrides"), f"{where}.overrides")
    variants = entry.get("variants") or [[]]
    if not isinstance(variants, list):
        raise GridError(f"{where}.variants: expected a list of override lists, got {variants!r}")
    variant_lists = [_override_list(v, f"{where}.variants[{i}]") for i, v in enumerate(variants)]
    return [Arm(a, r, tuple(merge_overrides(common, v)))
            for a in _strings(entry["algorithm"], f"{where}.algorithm")
            for r in _strings(entry["reward"], f"{where}.reward")
            for v in variant_lists]


def parse_grid(raw: Any, path: Path) -> Grid:
    """A grid file's content (plain YAML data) -> :class:`Grid`; raises :class:`GridError`."""
    if not isinstance(raw, dict) or "arms" not in raw:
        raise GridError(f"{path}: a grid file is a mapping with an 'arms' list")
    unknown = sorted(set(raw) - set(GRID_KEYS))
    if unknown:
        raise GridError(f"{path}: unknown key(s) {unknown}; valid: {', '.join(GRID_KEYS)}")
    if not isinstance(raw["arms"], list) or not raw["arms"]:
        raise GridError(f"{path}: 'arms' must be a non-empty list")
    arms = [arm for i, entry in enumerate(raw["arms"]) for arm in expand_entry(entry, f"{path}: arms[{i}]")]
    twins = sorted({a.label for a in arms if arms.count(a) > 1})
    if twins:
        raise GridError(f"{path}: arm(s) listed twice: {twins}")
    per_algorithm = raw.get("per_algorithm") or {}
    if not isinstance(per_algorithm, dict):
        raise GridError(f"{path}: per_algorithm must map an algorithm to its overrides")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise GridError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
    return Grid(path, arms, _override_list(raw.get("settings"), f"{path}: settings"),
                {str(a): _override_list(ovs, f"{path}: per_algorithm.{a}") for a, ovs in per_algorithm.items()}, list(seeds))


def load_grid(spec: str, config_dir: str) -> Grid:
    """Read the grid file ``compare.grid=spec`` (see :func:`grid_path`)."""
    import yaml

    path = grid_path(spec, config_dir)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise GridError(f"{path}: not valid YAML ({exc})") from exc
    return parse_grid(raw, path)


def select_arms(arms: list[Arm], overrides: list[str]) -> tuple[list[Arm], list[str]]:
    """Keep the arms whose algorithm / reward the command line lists (``algorithm=a,b``);
    returns them and the other overrides."""
    keep, rest = {}, []
    for ov in overrides:
        key = override_key(ov)
        if key in ("algorithm", "reward"):
            keep[key] = set(ov.split("=", 1)[1].split(","))
        else:
            rest.append(ov)
    chosen = [a for a in arms if all(getattr(a, k) in v for k, v in keep.items())]
    if not chosen:
        wanted = " ".join(f"{k}={','.join(sorted(v))}" for k, v in keep.items())
        raise GridError(f"no arm of the grid has {wanted}")
    return chosen, rest


def plan_grid(grid: Grid, overrides: list[str], seeds: Optional[list[int]], sweep_dir: Path) -> tuple[list[str], list[Job]]:
    """Plain overrides of every run (:data:`DEFAULT_SETTINGS`, the file's ``settings``, then
    the command's) and the jobs, seed block by seed block, arms in file order. A job's
    overrides are the algorithm's ``per_algorithm`` ones, then the arm's, then its seed."""
    arms, plain = select_arms(grid.arms, overrides)
    if any(override_key(ov) == "trainer.seed" for ov in plain):
        raise GridError("with a grid file the seeds are compare.seeds=[...] (or the file's 'seeds'), not trainer.seed=")
    fixed = merge_overrides(DEFAULT_SETTINGS, grid.settings, plain)
    jobs = []
    for seed in grid.seeds if seeds is None else seeds:
        for arm in arms:
            own = merge_overrides(grid.per_algorithm.get(arm.algorithm, []), arm.overrides)
            point = {"algorithm": arm.algorithm, "reward": arm.reward, "trainer.seed": str(seed),
                     **{override_key(ov): ov.split("=", 1)[1] for ov in arm.overrides}}
            jobs.append(Job((f"algorithm={arm.algorithm}", f"reward={arm.reward}", *own, f"trainer.seed={seed}", *arm.record()),
                            sweep_dir / run_name(point), arm, seed))
    return fixed, jobs


# ------------------------------------------------------------------ the sweep
def plan_sweep(overrides: list[str], sweep_dir: Path, seeds: Optional[list[int]] = None) -> tuple[list[str], list[Job]]:
    """Split ``overrides`` into plain ones (every run; :data:`DEFAULT_SETTINGS` for keys they
    leave unset) and the jobs of the sweep grid; ``seeds`` replaces the seed axis."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    axes: dict[str, list[str]] = {}
    fixed: list[str] = []
    given = {ov.get_key_element() for ov in parser.parse_overrides(overrides)}
    if seeds is not None and "trainer.seed" in given:
        raise GridError("give the seeds once: compare.seeds=[...] or trainer.seed=..., not both")
    defaults = [s for s in DEFAULT_SETTINGS if s.split("=", 1)[0] not in given]
    seed_axis = [f"trainer.seed={','.join(map(str, seeds))}"] if seeds is not None else []
    parsed = parser.parse_overrides([f"{k}={v}" for k, v in DEFAULT_AXES.items()] + defaults + overrides + seed_axis)
    for ov in parsed:
        key = ov.get_key_element()
        if ov.is_sweep_override() or key in DEFAULT_AXES:
            axes[key] = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.get_value_element_as_str()]
        else:
            fixed.append(ov.input_line)
    # seed blocks: the seed axis outermost, then the others in their order
    order = ["trainer.seed"] + [k for k in axes if k != "trainer.seed"]
    jobs = []
    for values in itertools.product(*(axes[k] for k in order)):
        point = dict(zip(order, values))
        extra = dict(sorted((k, v) for k, v in point.items() if k not in DEFAULT_AXES))
        name = run_name({k: point[k] for k in DEFAULT_AXES} | extra)
        arm = Arm(point["algorithm"], point["reward"], tuple(f"{k}={v}" for k, v in extra.items()))
        jobs.append(Job((*(f"{k}={point[k]}" for k in axes), *arm.record()), sweep_dir / name, arm, int(point["trainer.seed"])))
    return fixed, jobs


# ------------------------------------------------------------------ start-up check
def validate_jobs(fixed: list[str], jobs: list[Job]) -> None:
    """Compose and validate the config of every arm (at its first seed) as ``train`` would,
    before any run starts; a missing group (``reward=prime``) or a failing check raises one
    :class:`GridError` naming every arm that cannot run and why."""
    from hydra import compose, initialize_config_dir

    from critic_free_rl.config.loading import config_dir, register_schema, to_train_config

    seen: set[Optional[Arm]] = set()
    bad: list[str] = []
    register_schema()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):  # once: composing is then cheap
        for job in jobs:
            if job.arm in seen:
                continue
            seen.add(job.arm)
            try:
                to_train_config(compose("train", overrides=merge_overrides(fixed, job.overrides, [f"run_dir={job.run_dir}"])))
            except Exception as exc:  # Hydra (missing group, bad key), OmegaConf (types) and ConfigError
                label = job.arm.label if job.arm else " ".join(job.overrides)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                bad.append(f"arm '{label}': {first}")
    if bad:
        raise GridError(f"{len(bad)} of {len(seen)} arm(s) cannot run; no run was started:\n  " + "\n  ".join(bad))
