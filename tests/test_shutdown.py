"""Signals and child processes (critic_free_rl.shutdown): a parent killed by SIGKILL or
stopped by SIGTERM leaves no process of its child groups behind; the stop flag of a
training process and its repeat window."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from critic_free_rl.shutdown import EXIT_INTERRUPTED, REPEAT_WINDOW_S, StopRequest

SRC = str(Path(__file__).resolve().parents[1] / "src")
# the child of the parent below: a python process that starts a grandchild and sleeps;
# the grandchild writes its pid so the test can look for it
CHILD = textwrap.dedent("""
    import subprocess, sys, time
    from critic_free_rl.shutdown import StopRequest
    stop = StopRequest().install() if sys.argv[2] == "guarded" else None
    g = subprocess.Popen(["sleep", "300"])
    open(sys.argv[1], "w").write(f"{g.pid}\\n")
    while stop is None or not stop.requested:
        time.sleep(0.1)
    g.kill()
    sys.exit(143)
""")
PARENT = textwrap.dedent("""
    import sys
    from critic_free_rl.shutdown import forward_signals, run_in_group
    with forward_signals():
        rc = run_in_group([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]], grace_s=30)
    print("child exit", rc, flush=True)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead; only its parent can reap it
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def _start(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, int, int]:
    """The parent, the group leader's pid (the supervisor) and the grandchild's pid."""
    pidfile = tmp_path / "grandchild.pid"
    env = {**os.environ, "PYTHONPATH": SRC}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(pidfile), mode], env=env,
                              stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (pidfile.exists() and pidfile.read_text().endswith("\n")):
        assert time.time() < deadline and parent.poll() is None, "the child never started"
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    return parent, os.getpgid(grandchild), grandchild


def _wait_gone(*pids: int, timeout: float = 30.0) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_sigkilled_parent_leaves_nothing(tmp_path):
    """SIGKILL cannot be forwarded: the group's supervisor gets its parent-death signal and
    kills the group, grandchild included. Catches a child outside a group of its own or a
    missing parent-death signal (the grandchild would sleep on)."""
    parent, child, grandchild = _start(tmp_path, "guarded")
    parent.kill()
    parent.wait()
    assert _wait_gone(child, grandchild) == []


def test_sigterm_is_forwarded_and_the_group_drains(tmp_path):
    """SIGTERM to the parent reaches the child (its stop flag), the child's own exit code
    comes back, and nothing of the group remains. Catches a parent that dies without
    passing the signal on (the child would keep sleeping)."""
    parent, child, grandchild = _start(tmp_path, "guarded")
    parent.send_signal(signal.SIGTERM)
    out, _ = parent.communicate(timeout=60)
    assert f"child exit {EXIT_INTERRUPTED}" in out
    assert _wait_gone(child, grandchild) == []


def test_unguarded_grandchild_is_killed_when_the_child_returns(tmp_path):
    """A group whose leader exits while its other members run on (here: the supervisor
    killed by a signal the parent did not send) is killed by ``run_in_group``."""
    parent, child, grandchild = _start(tmp_path, "plain")
    os.kill(child, signal.SIGKILL)
    out, _ = parent.communicate(timeout=60)
    assert f"child exit {-signal.SIGKILL}" in out
    assert _wait_gone(grandchild) == []


def test_stop_request_counts_a_quick_repeat_once_and_a_later_one_exits():
    """One request delivered twice within the repeat window (launcher + terminal) keeps the
    graceful stop; a second signal after the window ends the process at once."""
    code = textwrap.dedent(f"""
        import os, signal, sys, time
        from critic_free_rl.shutdown import StopRequest
        stop = StopRequest().install()
        os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGINT)
        print("requested", stop.requested, stop.signum, flush=True)
        time.sleep({REPEAT_WINDOW_S} + 0.2)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        print("still running", flush=True)
    """)
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True, timeout=60)
    assert "requested True 15" in res.stdout and "still running" not in res.stdout
    assert res.returncode == 128 + signal.SIGINT


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_request_restores_handlers(sig):
    before = signal.getsignal(sig)
    stop = StopRequest().install()
    assert signal.getsignal(sig) != before and not stop.requested
    stop.uninstall()
    assert signal.getsignal(sig) == before
