"""Progress of a grid read from its run folders (what the live table and the plain lines of
`compare` show, whichever launcher runs the grid)."""
from __future__ import annotations

import json
import os
import time

from critic_free_rl.cli.progress import read_run, summary_line


def _started(run, total_steps: int, step_seconds: list[float]):
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"trainer:\n  total_steps: {total_steps}\n  seed: 0\n")
    lines = [json.dumps({"step": 0, "eval/greedy_accuracy": 0.1})]  # an evaluation is no training step
    lines += [json.dumps({"step": i + 1, "reward/mean": 0.5, "time/generate_s": s / 2, "time/update_s": s / 2})
              for i, s in enumerate(step_seconds)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 3, "rew')  # a line still being written


def test_states_step_and_eta(tmp_path):
    """Catches a wrong state precedence (a finished run shown as running, an old run of a
    resumed grid shown as running), an evaluation counted as a step, or an ETA not from the
    mean step time times the steps left."""
    since = time.time() - 5
    running = tmp_path / "a"
    _started(running, total_steps=10, step_seconds=[2.0, 4.0])
    s = read_run(running, since, failed=False)
    assert (s.state, s.step, s.total_steps, s.eta_s) == ("running", 2, 10, 8 * 3.0)

    done = tmp_path / "b"
    _started(done, 2, [1.0, 1.0])
    (done / "summary.json").write_text("{}")
    assert read_run(done, since, failed=True).state == "done"  # a summary wins: the run finished
    assert read_run(running, since, failed=True).state == "failed"

    stale = tmp_path / "c"  # interrupted in an earlier call of the same grid, not restarted yet
    _started(stale, 10, [1.0])
    os.utime(stale / "config.yaml", (since - 60, since - 60))
    assert read_run(stale, since, failed=False).state == "waiting"
    assert read_run(tmp_path / "d", since, failed=False).state == "waiting"

    line = summary_line("compare x", [read_run(d, since, False) for d in (running, done, stale)])
    assert line == "[critic-free-rl] compare x: done 1/3, running 1 (a step 2/10 eta 0m24s), waiting 1, failed 0"
