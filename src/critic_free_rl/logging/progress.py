"""Live progress of long loops: a tqdm bar when stderr is a terminal, else a plain log line
every N steps; and the process's start time, from which a run's start-up cost is measured."""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Callable, Optional


def process_start_time() -> Optional[float]:
    """Epoch seconds at which this process started (the kernel's record in ``/proc/self/stat``
    plus the boot time in ``/proc/stat``; psutil where there is no ``/proc``); None if unknown.
    Measured from here, start-up includes the interpreter and every import."""
    try:
        stat = open("/proc/self/stat").read()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, after the comm field
        btime = next(int(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        try:
            import psutil

            return psutil.Process().create_time()
        except Exception:  # noqa: BLE001 - no psutil / no permission: start-up is then not reported
            return None


def interactive() -> bool:
    """Whether progress bars can draw: stderr is a terminal."""
    return sys.stderr.isatty()


class StepProgress:
    """Progress of ``total`` steps from ``start``: :meth:`update` after each step with its
    scalars. A tqdm bar (ETA, seconds per step, reward, success) on a terminal; otherwise one
    log line every ``every`` steps (and at the last) with the same figures."""

    def __init__(self, total: int, start: int, every: int, log: logging.Logger, enabled: bool = True,
                 desc: str = "train") -> None:
        self.total, self.done, self.every, self.log, self.enabled = total, start, max(1, every), log, enabled
        self.t0, self.first = time.perf_counter(), start
        self.bar = None
        if enabled and interactive():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True)

    def update(self, metrics: dict[str, float], step_seconds: float) -> None:
        self.done += 1
        if not self.enabled:
            return
        reward, success = metrics.get("reward/mean", float("nan")), metrics.get("reward/success_rate", float("nan"))
        if self.bar is not None:
            self.bar.set_postfix(reward=f"{reward:.3f}", success=f"{success:.3f}", s_step=f"{step_seconds:.1f}")
            self.bar.update(1)
            return
        if self.done % self.every and self.done != self.total:
            return
        per_step = (time.perf_counter() - self.t0) / max(1, self.done - self.first)
        self.log.info("step %d/%d reward=%.3f success=%.3f len=%.1f kl=%.4f %.2fs/step eta %s", self.done, self.total,
                      reward, success, metrics.get("response/length_tokens", float("nan")),
                      metrics.get("train/kl", 0.0), step_seconds, _hms(per_step * (self.total - self.done)))

    def write(self, line: str) -> None:
        """A log line that does not break the bar."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            self.log.info(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def terminal_bar(total: int, desc: str, unit: str = "step"):
    """A tqdm bar of ``total`` units on a terminal, else None (the caller logs plain lines)."""
    if not interactive():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)


def eval_progress(desc: str) -> Optional[Callable[[int, int], None]]:
    """A ``(done, total)`` callback drawing a tqdm bar of problems done, on a terminal only."""
    if not interactive():
        return None
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="problem", dynamic_ncols=True, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"
