"""Live progress of long commands: rich displays on a terminal, one plain line every
``CFRL_PROGRESS_EVERY`` seconds (default 30) otherwise (logs, CI, ``compare`` under nohup).

:class:`Progress` counts items per named part (``evaluate``: problems per dataset);
:class:`RunTable` follows the runs of a grid from their run directories alone
(``config.yaml``, ``metrics.jsonl``, ``summary.json``), so it works whichever launcher
runs them: the built-in process pool, or a Hydra launcher on this machine or a cluster.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


def plain_every() -> float:
    """Seconds between two plain progress lines (``CFRL_PROGRESS_EVERY``)."""
    return float(os.environ.get("CFRL_PROGRESS_EVERY", "30"))


def is_terminal() -> bool:
    return sys.stdout.isatty()


class Progress:
    """Items done per part: a rich progress bar per part on a terminal, else a plain line
    (``title: part done/total unit``) at most every :func:`plain_every` seconds and at the end
    of each part. ``log`` prints a line without breaking the display."""

    def __init__(self, title: str, totals: dict[str, int], unit: str) -> None:
        self.title, self.totals, self.unit = title, totals, unit
        self._rich = None
        self._tasks: dict[str, int] = {}
        self._last = time.monotonic()

    def __enter__(self) -> Progress:
        if is_terminal():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn(self.unit), TimeRemainingColumn())
            self._rich.start()
            self._tasks = {name: self._rich.add_task(f"{self.title} {name}", total=n) for name, n in self.totals.items()}
        return self

    def update(self, part: str, done: int) -> None:
        if self._rich is not None:
            self._rich.update(self._tasks[part], completed=done)
        elif done >= self.totals[part] or time.monotonic() - self._last >= plain_every():
            self._last = time.monotonic()
            print(f"[critic-free-rl] {self.title} {part}: {done}/{self.totals[part]} {self.unit}", flush=True)

    def log(self, line: str) -> None:
        if self._rich is not None:
            self._rich.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()


@dataclass
class RunState:
    """One run of a grid as its folder shows it."""

    name: str
    state: str  # waiting | running | done | failed
    step: int = 0
    total_steps: int | None = None
    eta_s: float | None = None


def read_run(run_dir: Path, since: float, failed: bool) -> RunState:
    """The state of ``run_dir``: done (``summary.json``), failed (its job ended without one),
    running (``config.yaml`` written after ``since``, the time the grid started) with its last
    step in ``metrics.jsonl`` and an ETA from its mean step time, else waiting."""
    name = run_dir.name
    if (run_dir / "summary.json").is_file():
        return RunState(name, "done")
    if failed:
        return RunState(name, "failed")
    config = run_dir / "config.yaml"
    try:
        started = config.stat().st_mtime >= since
    except FileNotFoundError:
        started = False
    if not started:
        return RunState(name, "waiting")
    from omegaconf import OmegaConf

    total = OmegaConf.select(OmegaConf.load(config), "trainer.total_steps")
    step, seconds = 0, []
    try:
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            rec = json.loads(line) if line.strip().endswith("}") else {}  # a line still being written is skipped
            if "reward/mean" in rec:  # a training step (evaluations log other keys)
                step = int(rec["step"])
                seconds.append(sum(v for k, v in rec.items() if k.startswith("time/")))
    except FileNotFoundError:
        pass
    eta = (total - step) * sum(seconds) / len(seconds) if seconds and total is not None else None
    return RunState(name, "running", step, total, eta)


def _fmt_eta(s: float | None) -> str:
    return "" if s is None else f"{int(s) // 60}m{int(s) % 60:02d}s"


def summary_line(title: str, states: list[RunState]) -> str:
    """``title: done D, running R (name step s/N eta ...), waiting W, failed F``."""
    by = {k: [s for s in states if s.state == k] for k in ("done", "running", "waiting", "failed")}
    running = ", ".join(f"{s.name} step {s.step}/{s.total_steps or '?'} eta {_fmt_eta(s.eta_s) or '?'}" for s in by["running"])
    return (f"[critic-free-rl] {title}: done {len(by['done'])}/{len(states)}, running {len(by['running'])}"
            f"{f' ({running})' if running else ''}, waiting {len(by['waiting'])}, failed {len(by['failed'])}")


class RunTable:
    """Follow the runs of a grid while it trains (a background thread): a live rich table on
    a terminal, else :func:`summary_line` every :func:`plain_every` seconds. ``failed`` is
    asked for the run folders whose job has ended without a summary."""

    def __init__(self, title: str, run_dirs: list[Path], failed: Callable[[], set[Path]] = set) -> None:
        self.title, self.run_dirs, self.failed = title, run_dirs, failed
        self.since = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def states(self) -> list[RunState]:
        failed = self.failed()
        return [read_run(d, self.since, d in failed) for d in self.run_dirs]

    def table(self):
        from rich.table import Table

        t = Table(title=self.title)
        for col in ("run", "state", "step", "ETA"):
            t.add_column(col)
        colour = {"done": "green", "running": "cyan", "waiting": "dim", "failed": "red"}
        for s in self.states():
            step = f"{s.step}/{s.total_steps or '?'}" if s.state == "running" else ""
            t.add_row(s.name, f"[{colour[s.state]}]{s.state}[/]", step, _fmt_eta(s.eta_s))
        return t

    def _loop(self) -> None:
        if is_terminal():
            from rich.live import Live

            with Live(self.table(), refresh_per_second=1) as live:
                while not self._stop.wait(1.0):
                    live.update(self.table())
                live.update(self.table())
        else:
            while not self._stop.wait(plain_every()):
                print(summary_line(self.title, self.states()), flush=True)

    def __enter__(self) -> RunTable:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if not is_terminal():
            print(summary_line(self.title, self.states()), flush=True)
