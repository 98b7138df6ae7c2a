"""Killing ``critic-free-rl compare`` leaves no run of it running: SIGKILL (nothing can be
forwarded; each run's supervisor dies with compare and takes its group along) and SIGTERM
(forwarded: the runs stop, compare exits with EXIT_INTERRUPTED, a later compare resumes
them). Slow: starts training processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from test_compare_smoke import FAST
from test_signals_e2e import _run_processes

from critic_free_rl.shutdown import EXIT_INTERRUPTED


def _start_compare(tmp_path: Path, tiny_model_dir: Path) -> tuple[subprocess.Popen, Path]:
    sweep = tmp_path / "runs" / "compare-kill"
    args = ["compare", "compare.name=kill", f"compare.runs={tmp_path / 'runs'}", f"compare.reports={tmp_path / 'reports'}",
            "compare.jobs=2", "algorithm=grpo,rloo", "reward=success", "trainer.seed=0", "model.embedded=false",
            f"model.name_or_path={tiny_model_dir}", *FAST, "trainer.total_steps=50"]
    proc = subprocess.Popen([sys.executable, "-m", "critic_free_rl.cli", *args], cwd=REPO,
                            stdout=open(tmp_path / "compare.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    # both runs have started training (their metrics files exist)
    while len(list(sweep.glob("*/metrics.jsonl"))) < 2:
        assert time.time() < deadline and proc.poll() is None, (tmp_path / "compare.log").read_text()[-3000:]
        time.sleep(0.2)
    return proc, sweep


def _gone(sweep: Path, timeout: float = 60.0) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline and _run_processes(sweep):
        time.sleep(0.2)
    left = _run_processes(sweep)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_compare_leaves_no_run_running(tiny_model_dir, tmp_path, sig):
    proc, sweep = _start_compare(tmp_path, tiny_model_dir)
    proc.send_signal(sig)
    rc = proc.wait(timeout=120)
    assert _gone(sweep) == [], "runs of the killed compare are still running"
    if sig == signal.SIGTERM:
        assert rc == EXIT_INTERRUPTED, (tmp_path / "compare.log").read_text()[-3000:]
