"""TensorBoard scalars, text, histograms and hparams, a metrics.jsonl mirror, phase timers, summary.json.

Only rank 0 writes; other ranks get a tracker whose writes are no-ops.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file + rename, so a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class PhaseTimer:
    """Wall-clock seconds per named phase (generate, score, ref_logprobs, update, ...)."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.current[name] += dt
            self.totals[name] += dt
            self.counts[name] += 1

    def pop_step(self) -> dict[str, float]:
        out = {f"time/{k}_s": v for k, v in self.current.items()}
        self.current.clear()
        return out

    def means(self) -> dict[str, float]:
        return {k: self.totals[k] / max(1, self.counts[k]) for k in self.totals}


def _truncate_jsonl(path: Path, purge_step: int) -> None:
    """Keep the rows of ``path`` logged before ``purge_step`` (atomically; a torn last line goes too)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] < purge_step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    atomic_write_text(path, "".join(row + "\n" for row in keep))


class Tracker:
    """``purge_step`` (a resumed run): TensorBoard hides, and ``metrics.jsonl`` drops, whatever
    an earlier process of the same run logged at steps >= ``purge_step``; the run then goes on
    logging into the same directory."""

    def __init__(self, run_dir: Path, enabled: bool = True, purge_step: int | None = None) -> None:
        self.run_dir, self.enabled = run_dir, enabled
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            if purge_step is not None:
                _truncate_jsonl(run_dir / "metrics.jsonl", purge_step)
            self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
            self._jsonl = open(run_dir / "metrics.jsonl", "a")

    def scalars(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(k, float(v), step)
        self._jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
        self._jsonl.flush()

    def text(self, tag: str, text: str, step: int) -> None:
        if self.enabled:
            self.writer.add_text(tag, text, step)

    def histogram(self, tag: str, values: list[float], step: int) -> None:
        """A TensorBoard histogram of ``values`` (nothing when empty: TensorBoard rejects it)."""
        if self.enabled and values:
            import numpy as np

            self.writer.add_histogram(tag, np.asarray(values, dtype=np.float64), step)

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        """The run's settings and final metrics for TensorBoard's HPARAMS view, written into this
        run's own event file (``SummaryWriter.add_hparams`` would open a sub-run per call), so a
        comparison's runs can be filtered by algorithm, reward and seed. ``hparams`` values:
        bool, int, float or str (others are written as their str); ``metrics``: tag -> value,
        also logged as scalars at ``step``."""
        if not self.enabled:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        clean = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
        for summ in hparams_summaries(clean, metrics):
            self.writer.file_writer.add_summary(summ)
        for k, v in metrics.items():
            self.writer.add_scalar(k, float(v), step)

    def summary(self, data: dict[str, Any]) -> None:
        if self.enabled:
            atomic_write_text(self.run_dir / "summary.json", json.dumps(data, indent=2, sort_keys=True))

    def close(self) -> None:
        if self.enabled:
            self.writer.flush()
            self.writer.close()
            self._jsonl.close()
