"""Success reward: does a completion's final answer equal the reference? (math-verify)

Answers are compared with math-verify only; model text is never ``eval``-ed or executed.
Parsing and symbolic comparison run in a persistent pool of worker processes started
from a ``forkserver`` (the parent holds torch / vLLM threads, so it must not ``fork``).
Each completion gets a budget of ``timeout_s`` seconds of the worker's own CPU time,
enforced by the kernel (``RLIMIT_CPU``: the worker dies of ``SIGXCPU``), so a verdict does
not depend on how loaded the machine is; a wall-clock backstop
(:func:`wall_backstop_s`, many times the budget) only catches a worker that makes no
progress at all. A worker out of budget is replaced (cheap: the fork server has
math-verify preloaded), the completion scores as wrong and is counted in
``verify_timeouts``. Workers die with their parent, the fork server (parent-death signal),
which exits with the process that owns the pool; they ignore SIGTERM / SIGINT, which are
the owner's to act on.

What the workers see is capped cheaply in the parent first: only the last
:data:`ANSWER_TAIL_CHARS` characters of a completion can hold its final answer, lone
surrogates are replaced, and a completion whose normalised last ``\\boxed{}`` equals the
reference is accepted without a worker round trip.
"""
from __future__ import annotations

import logging
import math
import multiprocessing as mp
import resource
import signal
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from types import TracebackType
from typing import Optional

from latex2sympy2_extended.math_normalization import extract_boxed_content
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from critic_free_rl.data.answers import parse_reference

#: only this many trailing characters of a completion are searched for the answer
ANSWER_TAIL_CHARS = 2048
#: address-space cap of a verify worker: a huge power / factorial fails with MemoryError
WORKER_MEMORY_BYTES = 2 << 30
#: how long a fresh worker may take to import math-verify before the pool gives up
WORKER_START_TIMEOUT_S = 120.0
#: wall-clock backstop of one completion: this many times its CPU budget, at least
#: :data:`WALL_BACKSTOP_MIN_S` (a worker starved of CPU by other jobs still gets its budget)
WALL_BACKSTOP_FACTOR = 20.0
WALL_BACKSTOP_MIN_S = 60.0

_READY = "ready"
# completion answers: a \boxed{} wins over any other number in the text
_PRED_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


def encodable(text: str) -> str:
    """``text`` with characters UTF-8 cannot encode (lone surrogates) replaced by ``?``.

    Length-preserving, so character offsets stay valid; tokenizers reject such text.
    """
    return text.encode("utf-8", "replace").decode("utf-8")


def answer_region(completion: str) -> str:
    """The part of ``completion`` that can hold its final answer, made safe to parse.

    The last :data:`ANSWER_TAIL_CHARS` characters, with unencodable characters (lone
    surrogates) replaced. A GSM8K-style ``#### 42`` line counts as ``\\boxed{42}`` when
    the tail has no box.
    """
    tail = encodable(completion[-ANSWER_TAIL_CHARS:])
    if "\\boxed" not in tail and "#### " in tail:
        return "\\boxed{" + parse_reference(tail, "gsm8k") + "}"
    return tail


def _squash(text: str) -> str:
    return "".join(text.split()).strip("$.")


def exact_match(region: str, reference: str) -> bool:
    """Cheap parent-side check: last boxed content == reference, ignoring spaces and ``$``."""
    if "\\boxed" not in region:
        return False
    return _squash(extract_boxed_content(region, mode="last")) == _squash(reference)


def verify_answer(region: str, reference: str) -> bool:
    """math-verify's verdict on an :func:`answer_region` against a reference answer.

    Unbounded in time: call it in a worker of :class:`SuccessVerifier`, which enforces
    the budget (math-verify's own ``signal.alarm`` timeouts are off).
    """
    gold = parse(f"${reference}$", parsing_timeout=None)
    pred = parse(region, extraction_config=_PRED_EXTRACTION, parsing_timeout=None)
    return bool(gold and pred and verify(gold, pred, timeout_seconds=None))


def wall_backstop_s(timeout_s: float) -> float:
    """Wall seconds after which a busy worker is killed whatever CPU time it used."""
    return max(WALL_BACKSTOP_MIN_S, WALL_BACKSTOP_FACTOR * timeout_s)


def _cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _limit_cpu(budget_s: float) -> None:
    """Let the kernel end this process once it used ``budget_s`` more CPU seconds.

    ``RLIMIT_CPU`` counts whole seconds, so the budget is rounded up (at most a second
    more); the soft limit's ``SIGXCPU`` ends the process (no handler, no core file).
    """
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(_cpu_seconds() + budget_s)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _worker_main(conn: Connection, timeout_s: float) -> None:
    """Verify loop of one worker: receive ``(region, reference)``, send a bool; ``None`` stops.

    Each job runs under a CPU-time limit of ``timeout_s`` (:func:`_limit_cpu`)."""
    from critic_free_rl.shutdown import die_with_parent

    die_with_parent()
    # a stop request is the pool owner's to act on (it finishes its step); the worker dies
    # when the owner closes the pool or exits
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    conn.send(_READY)
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        _limit_cpu(timeout_s)
        conn.send(verify_answer(*job))


def _died_of_cpu_limit(proc: mp.process.BaseProcess) -> bool:
    proc.join(timeout=5.0)
    return proc.exitcode == -signal.SIGXCPU


@dataclass
class _Worker:
    proc: mp.process.BaseProcess
    conn: Connection
    ready: bool = False
    job: Optional[int] = None
    deadline: float = float("inf")


class SuccessVerifier:
    """Persistent pool of ``num_workers`` verify processes with a per-completion budget
    of ``timeout_s`` CPU seconds (see the module docstring).

    Use as a context manager or call :meth:`close`; the workers are daemons, so they
    also die with the parent. As with any ``spawn`` / ``forkserver`` child, each worker
    re-imports the program's ``__main__`` module: keep the entry point import-light and
    guarded by ``if __name__ == "__main__":`` or every worker start pays for its imports.
    A worker only receives work once it has reported ready, so start-up time never
    counts against a completion's budget.
    """

    def __init__(self, timeout_s: float = 3.0, num_workers: int = 2) -> None:
        if timeout_s <= 0 or num_workers < 1:
            raise ValueError("verify_timeout_s must be > 0 and verify_workers >= 1")
        self.timeout_s = timeout_s
        self._ctx = mp.get_context("forkserver")
        # replacements are forked from a server that already imported math-verify
        self._ctx.set_forkserver_preload([__name__])
        self._workers = [self._start_worker() for _ in range(num_workers)]

    def _start_worker(self) -> _Worker:
        parent_end, child_end = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child_end, self.timeout_s), daemon=True, name="verify-worker")
        proc.start()
        child_end.close()
        return _Worker(proc, parent_end)

    def _replace(self, slot: int) -> None:
        old = self._workers[slot]
        old.proc.kill()
        old.proc.join()
        old.conn.close()
        self._workers[slot] = self._start_worker()

    def score(self, completions: list[str], references: list[str]) -> tuple[list[bool], dict[str, float]]:
        """Whether each completion's answer equals its reference, plus counters.

        Returns ``(correct [B], {"verify_timeouts": n, "verify_worker_errors": m})``:
        timeouts are completions that used up their CPU budget ``timeout_s`` (or the wall
        backstop); worker errors are workers that died otherwise (crash, out of memory).
        Both score as wrong.
        """
        if not self._workers:
            raise RuntimeError("SuccessVerifier is closed")
        if len(completions) != len(references):
            raise ValueError(f"{len(completions)} completions but {len(references)} references")
        regions = [answer_region(c) for c in completions]
        correct = [exact_match(r, ref) for r, ref in zip(regions, references)]
        pending = deque(i for i, (ok, r) in enumerate(zip(correct, regions)) if not ok and r.strip())
        counts = {"verify_timeouts": 0.0, "verify_worker_errors": 0.0}
        while pending or any(w.job is not None for w in self._workers):
            self._dispatch(pending, regions, references)
            self._collect(correct, counts)
        return correct, counts

    def _dispatch(self, pending: deque[int], regions: list[str], references: list[str]) -> None:
        for slot, w in enumerate(self._workers):
            if pending and w.ready and w.job is None:
                i = pending.popleft()
                try:
                    w.conn.send((regions[i], references[i]))
                except OSError:  # died while idle: retry the item on its replacement
                    pending.appendleft(i)
                    self._replace(slot)
                    continue
                w.job, w.deadline = i, time.monotonic() + wall_backstop_s(self.timeout_s)

    def _collect(self, correct: list[bool], counts: dict[str, float]) -> None:
        """Wait for the next result / readiness / deadline and apply what arrived."""
        busy = [w.deadline for w in self._workers if w.job is not None]
        wait_s = max(0.0, min(busy) - time.monotonic()) if busy else WORKER_START_TIMEOUT_S
        ready = set(wait([w.conn for w in self._workers], timeout=wait_s))
        if not ready and not busy:
            raise RuntimeError(f"no verify worker started within {WORKER_START_TIMEOUT_S:.0f} s")
        for slot, w in enumerate(self._workers):
            if w.conn in ready:
                try:
                    msg = w.conn.recv()
                except (EOFError, OSError):
                    if not w.ready:
                        raise RuntimeError("a verify worker died while starting (see its stderr)") from None
                    if w.job is not None:
                        counts["verify_timeouts" if _died_of_cpu_limit(w.proc) else "verify_worker_errors"] += 1
                    self._replace(slot)
                    continue
                if msg == _READY:
                    w.ready = True
                else:
                    correct[w.job] = bool(msg)
                    w.job = None
            elif w.job is not None and time.monotonic() >= w.deadline:
                counts["verify_timeouts"] += 1
                self._replace(slot)

    def close(self) -> None:
        """Stop the workers (politely, then by force)."""
        for w in self._workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self._workers:
            w.proc.join(timeout=1.0)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            w.conn.close()
        self._workers = []

    def __enter__(self) -> "SuccessVerifier":
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()
