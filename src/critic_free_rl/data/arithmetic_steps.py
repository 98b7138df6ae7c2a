"""Step labels of the embedded arithmetic task, and labelled solutions to train and measure
step scorers (the embedded PRM and ORM, the ``prm=exact`` oracle).

Labels (:func:`label_steps`) follow the PRM800K / Math-Shepherd convention: a step is
good when it is arithmetically right AND follows from the question and the steps before
it; every step after the first bad one is bad ("correct so far"). Concretely, with
``v`` the value derived so far (the question's first number at the start) and ``i`` the
number of question operations applied:

- ``a op_1 b_1 ... = c`` is good when ``c`` is the value of its left side and either
  it *advances* (``a == v`` and its operations are the question's next ones; then
  ``v = c``), *restates* an earlier good advancing step verbatim (numbers), or is an
  *identity* on the current value (``v + 0 = v``);
- ``\\boxed{x}`` is good when every operation has been applied and ``x == v``;
- anything else (unparseable text, a truncated line) is bad.

Solutions (:func:`sample_solution`) come from a solver that makes at most one deliberate
mistake, of a chosen kind, at a random place: the four :data:`FIRST_ERROR_KINDS` the
held-out measure reports (a wrong result ``57 - 8 = 48``, a wrong operand that is not in
the question, ``\\boxed{}`` one operation early, an invented operation after the chain is
finished) and :data:`OTHER_ERRORS`; after the mistake it carries on from its wrong belief
or stops. Correct-but-redundant steps (a repeated line, ``x + 0 = x``) are sprinkled in.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Optional

_QUESTION = re.compile(r"(\d+)((?:\s*[+-]\s*\d+)+)")
_TERM = re.compile(r"([+-])\s*(\d+)")
_STEP = re.compile(r"^(-?\d+)((?:\s*[+-]\s*\d+)+)\s*=\s*(-?\d+)\s*\.?$")
_BOXED = re.compile(r"^\\boxed\{\s*(-?\d+)\s*\}\.?$")

Ops = tuple[tuple[str, int], ...]

#: first-error kinds reported one by one by the held-out measure
FIRST_ERROR_KINDS = ("result", "operand", "premature_box", "extra_op")
#: further mistakes in the training data: sign flipped, a start value that does not
#: follow, an operation skipped, a wrong boxed value, a line cut short
OTHER_ERRORS = ("sign", "follow", "skip", "box_value", "truncated")


@dataclass(frozen=True)
class Problem:
    """``start op_1 b_1 op_2 b_2 ...`` of an embedded question."""

    start: int
    ops: Ops

    def values(self) -> list[int]:
        """``[v_0, ..., v_K]``: the start and the value after each operation."""
        out = [self.start]
        for op in self.ops:
            out.append(_apply(out[-1], (op,)))
        return out


def parse_problem(prompt: str) -> Problem:
    """The arithmetic chain of an embedded prompt (``What is 17 + 5 - 8?``)."""
    m = _QUESTION.search(prompt)
    if m is None:
        raise ValueError(f"no arithmetic chain in prompt {prompt!r}")
    return Problem(int(m.group(1)), _terms(m.group(2)))


def _terms(text: str) -> Ops:
    return tuple((sign, int(b)) for sign, b in _TERM.findall(text))


def _apply(a: int, ops: Ops) -> int:
    for sign, b in ops:
        a = a + b if sign == "+" else a - b
    return a


def _advance(problem: Problem, value: int, applied: int, text: str) -> Optional[tuple[int, int, tuple]]:
    """``(value, applied, established step)`` after ``text`` when it is a good advancing step."""
    m = _STEP.match(text)
    if m is None:
        return None
    a, ops, c = int(m.group(1)), _terms(m.group(2)), int(m.group(3))
    if _apply(a, ops) == c and a == value and ops and ops == problem.ops[applied:applied + len(ops)]:
        return c, applied + len(ops), (a, ops, c)
    return None


def label_steps(prompt: str, steps: list[str]) -> list[bool]:
    """Good (True) / bad label of each step of a solution to ``prompt`` (module docstring)."""
    problem = parse_problem(prompt)
    value, applied, ok = problem.start, 0, True
    established: set[tuple[int, Ops, int]] = set()
    labels = []
    for text in steps:
        text = text.strip()
        good = False
        if ok and (nxt := _advance(problem, value, applied, text)):
            value, applied, step = nxt
            established.add(step)
            good = True
        elif ok and (m := _STEP.match(text)):
            a, ops, c = int(m.group(1)), _terms(m.group(2)), int(m.group(3))
            good = _apply(a, ops) == c and ((a, ops, c) in established or (a == value and all(b == 0 for _, b in ops)))
        elif ok and (m := _BOXED.match(text)):
            good = applied == len(problem.ops) and int(m.group(1)) == value
        ok = ok and good
        labels.append(ok)
    return labels


def _acceptable(problem: Problem, value: int, applied: int, established: set[tuple[int, Ops, int]]) -> list[str]:
    """Every good step (canonical spelling) in state ``(value, applied, established)``."""
    rest = problem.ops[applied:]
    lines = [_line(value, rest[:m], _apply(value, rest[:m])) for m in range(1, len(rest) + 1)]
    lines += [_line(value, ((sign, 0),), value) for sign in "+-"]
    lines += [_line(a, ops, c) for a, ops, c in established]
    if not rest:
        lines.append(_boxed(value))
    return lines


def prefix_labels(prompt: str, steps: list[str]) -> list[list[bool]]:
    """Per step, per character: is the solution still consistent up to this character, i.e.
    are the steps before good and this step's text so far the start of a good step?

    A dense companion of :func:`label_steps` (which it agrees with at each step's end,
    except for a complete-looking prefix such as a truncated ``17 + 5 = 2``): it tells a
    model *where* a step goes wrong. Canonical spelling (as :func:`sample_solution` writes).
    """
    problem = parse_problem(prompt)
    value, applied, ok = problem.start, 0, True
    established: set[tuple[int, Ops, int]] = set()
    out = []
    for text, good in zip(steps, label_steps(prompt, steps)):
        good_lines = _acceptable(problem, value, applied, established) if ok else []
        chars = [any(line.startswith(text[:j + 1]) for line in good_lines) for j in range(len(text))]
        if good:
            if nxt := _advance(problem, value, applied, text):
                value, applied, step = nxt
                established.add(step)
            chars = [True] * len(text)
        ok = ok and good
        out.append(chars)
    return out


# --------------------------------------------------------------------------- the solver
def _line(a: int, ops: Ops, c: int) -> str:
    return " ".join([str(a)] + [f"{s} {b}" for s, b in ops]) + f" = {c}"


def _boxed(x: int) -> str:
    return f"\\boxed{{{x}}}"


def _near(x: int, rng: random.Random) -> int:
    """A plausible wrong value for ``x``: off by a little, by ten, digits swapped, or any number."""
    r = rng.random()
    if r < 0.2 and x >= 10:
        s = str(x)
        i = rng.randrange(len(s) - 1)
        swapped = int(s[:i] + s[i + 1] + s[i] + s[i + 2:])
        if swapped != x:
            return swapped
    if r < 0.35:
        y = x + rng.choice((-10, 10))
    elif r < 0.8:
        y = x + rng.choice((-3, -2, -1, -1, 1, 1, 2, 3))
    else:
        y = rng.randint(0, max(130, x + 10))
    return y if y >= 0 and y != x else x + 1


def _foreign_operand(problem: Problem, rng: random.Random) -> int:
    """An operand in 1..9 that the question does not use."""
    used = {b for _, b in problem.ops}
    return rng.choice([b for b in range(1, 10) if b not in used])


def _wrong_step(kind: str, cur: int, i: int, problem: Problem, history: list[int],
                rng: random.Random) -> tuple[str, int, int]:
    """``(line, believed value after it, question operations consumed)`` of one wrong step."""
    sign, b = op = problem.ops[i]
    if kind == "result":
        c = _near(_apply(cur, (op,)), rng)
        return _line(cur, (op,), c), c, 1
    if kind in ("operand", "sign"):
        wrong = (sign, _foreign_operand(problem, rng)) if kind == "operand" else ("-" if sign == "+" else "+", b)
        c = _apply(cur, (wrong,))
        return _line(cur, (wrong,), c), c, 1
    if kind == "skip":
        nxt = problem.ops[i + 1]
        return _line(cur, (nxt,), _apply(cur, (nxt,))), _apply(cur, (nxt,)), 2
    if kind == "follow":
        stale = [h for h in history if h != cur]
        a = rng.choice(stale) if stale and rng.random() < 0.4 else _near(cur, rng)
        return _line(a, (op,), _apply(a, (op,))), _apply(a, (op,)), 1
    raise ValueError(f"unknown step error {kind!r}")


def _error_at(kind: str, K: int, rng: random.Random) -> int:
    """The operation index at which a mistake of ``kind`` happens (K: at the end)."""
    if kind == "premature_box":
        return K - 1
    if kind in ("extra_op", "box_value"):
        return K
    return rng.randrange(K - 1 if kind == "skip" else K)


def sample_solution(problem: Problem, rng: random.Random, error: Optional[str] = None, redundant_rate: float = 0.0,
                    carry_on: float = 0.5) -> tuple[list[str], list[str]]:
    """One solution: ``(steps, tags)``, each step tagged ``gold``, ``redundant``, ``box``,
    ``after`` (after the mistake) or ``error:<kind>``. ``error`` (None: a clean solution)
    is one of :data:`FIRST_ERROR_KINDS` / :data:`OTHER_ERRORS`; with probability
    ``carry_on`` the solver goes on from its wrong belief to a box, else it stops."""
    K = len(problem.ops)
    at = _error_at(error, K, rng) if error else -1
    cur, i, history = problem.start, 0, [problem.start]
    steps: list[str] = []
    tags: list[str] = []

    def redundant() -> None:
        while steps and rng.random() < redundant_rate:
            line = steps[-1] if _STEP.match(steps[-1]) else _line(cur, ((rng.choice("+-"), 0),), cur)
            steps.append(line if rng.random() < 0.4 else _line(cur, ((rng.choice("+-"), 0),), cur))
            tags.append("redundant")

    while i < K and i != at:
        op = problem.ops[i]
        cur, i = _apply(cur, (op,)), i + 1
        steps.append(_line(history[-1], (op,), cur))
        tags.append("gold")
        history.append(cur)
        redundant()
    if error is None:
        return steps + [_boxed(cur)], tags + ["box"]
    if error in ("premature_box", "box_value"):
        steps.append(_boxed(cur if error == "premature_box" else _near(cur, rng)))
        tags.append(f"error:{error}")
        return steps, tags
    if error == "truncated":
        full = _line(cur, (problem.ops[i],), _apply(cur, (problem.ops[i],)))
        return steps + [full[:rng.randrange(1, len(full) - 1)].strip()], tags + ["error:truncated"]
    if error == "extra_op":
        b = rng.randint(1, 9)
        sign = rng.choice("+-") if cur >= b else "+"
        line, used = _line(cur, ((sign, b),), _apply(cur, ((sign, b),))), 0
        cur = _apply(cur, ((sign, b),))
    else:
        line, cur, used = _wrong_step(error, cur, i, problem, history, rng)
    steps.append(line)
    tags.append(f"error:{error}")
    if rng.random() < carry_on:
        for op in problem.ops[i + used:]:
            steps.append(_line(cur, (op,), _apply(cur, (op,))))
            cur = _apply(cur, (op,))
            tags.append("after")
        steps.append(_boxed(cur))
        tags.append("after")
    return steps, tags


@dataclass
class LabelledSolution:
    prompt: str
    steps: list[str]
    labels: list[bool]
    categories: list[str]  # per step: good:<tag> | first_error:<tag> | after_error


def _categories(labels: list[bool], tags: list[str]) -> list[str]:
    out, seen_bad = [], False
    for good, tag in zip(labels, tags):
        if good:
            out.append(f"good:{tag}")
        elif not seen_bad:
            out.append(f"first_error:{tag.removeprefix('error:')}")
        else:
            out.append("after_error")
        seen_bad = seen_bad or not good
    return out


def labelled(prompt: str, steps: list[str], tags: list[str]) -> LabelledSolution:
    """``steps`` of a solution to ``prompt`` with their :func:`label_steps` labels and categories."""
    labels = label_steps(prompt, steps)
    return LabelledSolution(prompt, steps, labels, _categories(labels, tags))


def labelled_solutions(prompts: list[str], per_problem: int, seed: int, clean: float = 0.25) -> list[LabelledSolution]:
    """``per_problem`` solutions of each prompt for training: a share ``clean`` without a
    mistake, half of them with one of :data:`FIRST_ERROR_KINDS` (equally often), the rest
    with one of :data:`OTHER_ERRORS`; redundancy rate drawn from {0, 0, 0.15, 0.3}."""
    rng = random.Random(seed)
    out = []
    for prompt in prompts:
        problem = parse_problem(prompt)
        for _ in range(per_problem):
            r = rng.random()
            error = None if r < clean else rng.choice(FIRST_ERROR_KINDS if r < (1 + clean) / 2 else OTHER_ERRORS)
            if error == "skip" and len(problem.ops) < 2:
                error = "result"
            steps, tags = sample_solution(problem, rng, error, rng.choice((0.0, 0.0, 0.15, 0.3)))
            out.append(labelled(prompt, steps, tags))
    return out


def first_error_solutions(prompts: list[str], seed: int) -> list[LabelledSolution]:
    """The held-out measure's solutions: per prompt, the gold solution and one solution
    for each of :data:`FIRST_ERROR_KINDS`, cut after the mistake (later steps are not scored)."""
    rng = random.Random(seed)
    out = []
    for prompt in prompts:
        problem = parse_problem(prompt)
        for error in (None, *FIRST_ERROR_KINDS):
            steps, tags = sample_solution(problem, rng, error, carry_on=0.0)
            out.append(labelled(prompt, steps, tags))
    return out
