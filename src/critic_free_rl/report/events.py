"""Read training run directories: resolved config, TensorBoard scalars, summary.

Scalars come from the run's event files through TensorBoard's own reader
(:class:`~tensorboard.backend.event_processing.event_accumulator.EventAccumulator`),
so a report shows exactly the numbers TensorBoard shows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


@dataclass
class Run:
    """One run directory, read once."""

    path: Path
    #: ``config.yaml`` flattened to dotted keys (``algorithm.name`` -> ``grpo``)
    config: dict[str, Any]
    #: tag -> [(step, value)] in step order
    scalars: dict[str, list[tuple[int, float]]]
    #: ``summary.json`` (None while the run has not finished)
    summary: Optional[dict[str, Any]]
    #: seconds between the first and the last scalar event
    event_seconds: float

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def wall_seconds(self) -> float:
        """Training wall time: ``summary.json`` once finished, the event time span before."""
        return float(self.summary["wall_seconds"]) if self.summary else self.event_seconds

    def tail_mean(self, tag: str, last_n: int = 1) -> Optional[float]:
        """Mean of ``tag`` over its last ``last_n`` logged steps (None if never logged)."""
        points = self.scalars.get(tag, [])[-last_n:]
        return sum(v for _, v in points) / len(points) if points else None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b": leaf}``; lists become tuples so values are hashable."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tuple(tree) if isinstance(tree, list) else tree}


def load_run(path: Path) -> Run:
    """Read ``path`` (a directory holding ``config.yaml`` and event files)."""
    from omegaconf import OmegaConf
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    cfg_file = path / "config.yaml"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path}: not a critic-free-rl run directory (no config.yaml)")
    config = flatten(OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=False))
    acc = EventAccumulator(str(path), size_guidance={SCALARS: 0})  # 0: keep every point
    acc.Reload()
    scalars: dict[str, list[tuple[int, float]]] = {}
    times: list[float] = []
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        scalars[tag] = sorted((e.step, e.value) for e in events)
        times.extend(e.wall_time for e in events)
    summary_file = path / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    span = max(times) - min(times) if times else 0.0
    return Run(path, config, scalars, summary, span)


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Each path is a run directory, or a folder searched for run directories (a sweep)."""
    found: list[Path] = []
    for p in paths:
        if (p / "config.yaml").is_file():
            found.append(p)
            continue
        inner = sorted(c.parent for c in p.rglob("config.yaml") if c.parent.name != ".hydra")
        if not inner:
            raise FileNotFoundError(f"{p}: neither a run directory nor a folder of runs (no config.yaml found)")
        found.extend(inner)
    return found
