"""The embedded default task: seeded multi-step integer arithmetic.

A problem is a chain of additions and subtractions evaluated left to right; the gold
solution writes one reasoning step per line and the final answer in ``\\boxed{}``, so the
success reward takes the same math-verify path as GSM8K and MATH::

    question: What is 17 + 25 - 8 + 4?
    solution: 17 + 25 = 42
              42 - 8 = 34
              34 + 4 = 38
              \\boxed{38}
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class ArithmeticSpec:
    """Difficulty knobs of the generator."""

    min_ops: int = 2
    max_ops: int = 3
    max_first: int = 99
    max_operand: int = 99


def _problem(rng: random.Random, spec: ArithmeticSpec) -> dict[str, str]:
    value = rng.randint(10, spec.max_first)
    terms, steps = [str(value)], []
    for _ in range(rng.randint(spec.min_ops, spec.max_ops)):
        b = rng.randint(1, spec.max_operand)
        op = rng.choice("+-")
        if op == "-" and b > value:  # keep every intermediate result non-negative
            op = "+"
        new = value + b if op == "+" else value - b
        steps.append(f"{value} {op} {b} = {new}")
        terms.append(f"{op} {b}")
        value = new
    return {
        "question": f"What is {' '.join(terms)}?",
        "solution": "\n".join(steps + [f"\\boxed{{{value}}}"]),
        "answer": str(value),
    }


def early_answer(solution: str) -> str:
    """``solution`` cut one operation short: its last step is dropped and the value before
    it boxed (a wrong answer). The warm-start corpus writes some solutions this way (see
    :func:`critic_free_rl.models.loading.embedded_policy`).

        17 + 25 = 42            17 + 25 = 42
        42 - 8 = 34      ->     42 - 8 = 34
        34 + 4 = 38             \\boxed{34}
        \\boxed{38}
    """
    *steps, _box = solution.split("\n")
    if len(steps) < 2:
        raise ValueError(f"a solution of one step cannot be cut short: {solution!r}")
    value = steps[-2].rsplit("=", 1)[1].strip()
    return "\n".join(steps[:-1] + [f"\\boxed{{{value}}}"])


def generate_split(n: int, seed: int, spec: ArithmeticSpec = ArithmeticSpec(), exclude: frozenset[str] = frozenset()) -> list[dict[str, str]]:
    """``n`` distinct problems from ``seed`` whose questions are not in ``exclude``."""
    rng = random.Random(seed)
    seen, rows = set(exclude), []
    while len(rows) < n:
        row = _problem(rng, spec)
        if row["question"] not in seen:
            seen.add(row["question"])
            rows.append(row)
    return rows


#: name of the large held-out split of final evaluations (see :func:`generate_task`)
HELDOUT = "heldout"
#: seed offsets of the splits drawn after the training split: ``seed + 1`` test, ``seed + 2``
#: the warm start's validation split (models/loading.py), ``seed + 3`` the held-out split
HELDOUT_SEED_OFFSET = 3


def generate_task(num_train: int, num_test: int, seed: int, spec: ArithmeticSpec = ArithmeticSpec(),
                  num_heldout: int = 0) -> dict[str, list[dict[str, str]]]:
    """Train and test splits with no question in common and, when ``num_heldout > 0``, a
    ``heldout`` split with no question of either. The held-out split is drawn last, from its
    own seed, so asking for it (of any size) leaves train and test as they were: neither
    the warm start (trained on train) nor the in-training curve (on test) changes."""
    test = generate_split(num_test, seed + 1, spec)
    train = generate_split(num_train, seed, spec, exclude=frozenset(r["question"] for r in test))
    task = {"train": train, "test": test}
    if num_heldout > 0:
        seen = frozenset(r["question"] for rows in (train, test) for r in rows)
        task[HELDOUT] = generate_split(num_heldout, seed + HELDOUT_SEED_OFFSET, spec, exclude=seen)
    return task
