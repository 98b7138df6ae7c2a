"""Stopping on signals without losing work, and child processes that never outlive their parent.

Training process (:class:`StopRequest`): the first SIGTERM or SIGINT only sets a flag; the
trainer checks it after each step, writes a checkpoint at the step reached and exits with
:data:`EXIT_INTERRUPTED`. A second signal ends the process at once (``128 + signal``). A
repeat within :data:`REPEAT_WINDOW_S` of the first counts as the same request: a terminal's
Ctrl-C, Slurm's ``scancel`` and DeepSpeed's launcher each signal every process of the job,
so one request reaches a rank more than once.

Parents (:func:`run_in_group`): a child command runs in a process group of its own under a
small supervisor (``python -m critic_free_rl.shutdown CMD...``) that kills the whole group
when the parent dies, even by SIGKILL (parent-death signal); the group receives the
signals the parent receives (:func:`forward_signals`) and is killed when the parent stops
waiting for it, whatever the reason. Runs handed to a cluster scheduler are the
scheduler's to cancel.

This module imports nothing heavy: the command layer uses it before torch loads.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Iterator, Optional, Sequence

#: exit code of a run stopped by SIGTERM / SIGINT after writing its checkpoint (128 + SIGTERM,
#: what a shell reports for a process SIGTERM ended); ``train resume=RUN`` continues it
EXIT_INTERRUPTED = 143
#: a repeat of the stop signal this soon after the first is the same request, not a second one
REPEAT_WINDOW_S = 2.0
#: how long a parent waits for its children's group to finish after forwarding a signal
DEFAULT_GRACE_S = 120.0
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux
    ``PR_SET_PDEATHSIG``; nothing elsewhere). Exits now if the parent is already gone."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent or parent == 1:  # the parent died before the request took effect
        os._exit(128 + sig)


class TrainingInterrupted(SystemExit):
    """Raised by the trainer after the checkpoint of a stop request: the process exits with
    :data:`EXIT_INTERRUPTED`."""

    def __init__(self, step: int) -> None:
        super().__init__(EXIT_INTERRUPTED)
        self.step = step
        print(f"[critic-free-rl] stopped by a signal after step {step} (checkpoint written); "
              f"continue with: critic-free-rl train resume=RUN_DIR", file=sys.stderr, flush=True)


class StopRequest:
    """The flag of a graceful stop (see the module docstring); install in the main thread."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._first_at = 0.0
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._first_at = signum, now
            sys.stderr.write(f"[critic-free-rl] {signal.Signals(signum).name}: stopping after this step "
                             "(checkpoint, then exit); signal again to stop at once\n")
        elif now - self._first_at >= REPEAT_WINDOW_S:
            os._exit(128 + signum)

    def install(self) -> "StopRequest":
        for sig in _STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


# ---------------------------------------------------------------------------- parents
_groups: set[int] = set()
_groups_lock = threading.Lock()
_forwarded: list[int] = []


def _signal_groups(sig: int) -> None:
    with _groups_lock:
        groups = list(_groups)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def _forward(signum: int, frame: object) -> None:
    """First signal: pass it on to every child group; a later one (past the repeat window):
    kill them all and exit."""
    now = time.monotonic()
    if _forwarded and now - _forwarded[0] >= REPEAT_WINDOW_S:
        _signal_groups(signal.SIGKILL)
        os._exit(128 + signum)
    if not _forwarded:
        _forwarded.append(now)
        _signal_groups(signum)


def stop_was_forwarded() -> bool:
    """Whether :func:`forward_signals` passed a stop signal on (the parent should exit with
    :data:`EXIT_INTERRUPTED` once its children are done)."""
    return bool(_forwarded)


@contextlib.contextmanager
def forward_signals() -> Iterator[None]:
    """While active, SIGTERM / SIGINT received by this process go to every group started by
    :func:`run_in_group` (from any thread). Enter it in the main thread."""
    previous = {sig: signal.signal(sig, _forward) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_group(proc: subprocess.Popen, deadline: float) -> None:
    """Wait until ``proc`` and every other member of its group has exited, or ``deadline``."""
    while time.monotonic() < deadline:
        proc.poll()
        if proc.returncode is not None and not _group_alive(proc.pid):
            return
        time.sleep(0.1)


def run_in_group(cmd: Sequence[str], env: Optional[dict] = None, grace_s: float = DEFAULT_GRACE_S, **popen) -> int:
    """Run ``cmd`` as the leader of a new process group that dies with this process and
    return its exit code; nothing of the group outlives the call.

    After :func:`forward_signals` passed a stop signal on, the group gets ``grace_s``
    seconds to finish (the child's exit code is returned; its own descendants may still be
    saving) before it is killed. Any other way out of the call (an exception, a child that
    exited while its descendants did not) kills what is left of the group.
    """
    proc = subprocess.Popen([sys.executable, "-m", "critic_free_rl.shutdown", *cmd], env=env,
                            start_new_session=True, **popen)
    with _groups_lock:
        _groups.add(proc.pid)
    try:
        if _forwarded:  # a stop came while the child was starting
            os.killpg(proc.pid, signal.SIGTERM)
        while proc.poll() is None and not _forwarded:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
        if _forwarded:
            _wait_group(proc, _forwarded[0] + grace_s)
            if proc.poll() is None:  # out of grace
                os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()
    finally:
        with _groups_lock:
            _groups.discard(proc.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)


def _supervise(cmd: Sequence[str]) -> None:
    """``python -m critic_free_rl.shutdown CMD...``: lead the group :func:`run_in_group` made,
    run ``CMD`` in it, and exit as ``CMD`` did; when our parent dies (even by SIGKILL), kill
    the whole group. Stop signals reach ``CMD`` directly (they are sent to the group), so
    this process ignores them."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, lambda *_: os.killpg(os.getpgrp(), signal.SIGKILL))
    die_with_parent(signal.SIGHUP)
    child = subprocess.Popen(list(cmd), preexec_fn=_default_stop_signals)
    code = child.wait()
    if code < 0:  # died of a signal: die of the same one
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


def _default_stop_signals() -> None:
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


if __name__ == "__main__":
    _supervise(sys.argv[1:])
