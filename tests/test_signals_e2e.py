"""SIGTERM to ``critic-free-rl train trainer.num_ranks=2`` mid-run: the whole process tree
exits within 60 s with EXIT_INTERRUPTED, a checkpoint at the step reached exists, no process
of the run remains, and ``train resume=RUN`` ends with exactly the weights of an
uninterrupted run (bit-identical). Slow: two DeepSpeed ranks on CPU, twice."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from test_resume import ARGS, STEPS, _metrics

from critic_free_rl.checkpointing import latest_step
from critic_free_rl.shutdown import EXIT_INTERRUPTED

# no scheduled checkpoint before the end: the one the test finds must come from the signal
RANKS = ["trainer.num_ranks=2", "trainer.checkpoint_every=100"]


def _run_processes(run: Path) -> list[int]:
    """Pids of processes whose command line names the run directory (the ranks do)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if str(run) in (d / "cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def _logged_step(run: Path) -> int:
    try:
        return max(_metrics(run), default=0)
    except (OSError, ValueError):  # not written yet, or a line being written
        return 0


@pytest.mark.slow
def test_sigterm_checkpoints_every_rank_and_resume_is_bit_identical(tiny_model_dir, tmp_path):
    args = [*ARGS, *RANKS, f"model.name_or_path={tiny_model_dir}"]
    ref = tmp_path / "ref"
    res = run_cli("train", *args, f"run_dir={ref}", timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]

    run = tmp_path / "run"
    log = open(tmp_path / "stopped.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "critic_free_rl.cli", "train", *args, f"run_dir={run}"], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 1200
    try:
        while time.time() < deadline and proc.poll() is None and _logged_step(run) < 2:
            time.sleep(0.2)
        assert proc.poll() is None, "the run finished (or failed) before it could be stopped"
        proc.send_signal(signal.SIGTERM)  # to the command only, as a scheduler or `kill PID` would
        sent = time.monotonic()
        rc = proc.wait(timeout=120)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    leftover = _run_processes(run)
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)
    text = (tmp_path / "stopped.log").read_text()
    assert rc == EXIT_INTERRUPTED, text[-3000:]
    assert took < 60, f"the run took {took:.0f} s to stop"
    assert leftover == [], "processes of the run outlived its command"
    reached = max(s for s, row in _metrics(run).items() if "reward/mean" in row)
    assert 0 < latest_step(run) == reached < STEPS and not (run / "summary.json").exists()

    res = run_cli("train", f"resume={run}", timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resume from step {reached}" in res.stdout
    sa, sb = json.loads((ref / "summary.json").read_text()), json.loads((run / "summary.json").read_text())
    assert sa["weights_sha256"] == sb["weights_sha256"] and sb["ranks_in_sync"]
    assert (ref / "final" / "model.safetensors").read_bytes() == (run / "final" / "model.safetensors").read_bytes()
