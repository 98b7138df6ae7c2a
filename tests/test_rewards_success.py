"""Success reward: reference parsing, the math-verify worker pool, gold GSM8K / MATH500 data."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from latex2sympy2_extended.math_normalization import extract_boxed_content

from critic_free_rl.data.answers import parse_reference
from critic_free_rl.rewards.success import SuccessVerifier, answer_region, exact_match

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HANG = "\\boxed{9^{9^{9^9}}}"  # sympy evaluates the power tower: hours, uninterruptible by signals


@pytest.fixture(scope="module")
def verifier() -> Iterator[SuccessVerifier]:
    with SuccessVerifier(timeout_s=1.5, num_workers=2) as v:
        yield v


def _rows(name: str) -> list[dict]:
    path = DATA / name / "test.jsonl"
    if not path.exists():
        pytest.skip(f"gold data {path} is absent (shared/data is provisioned beside the repo)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_parse_reference_formats() -> None:
    assert parse_reference("She pays 2 * 500 = 1000\n#### 1,000", "gsm8k") == "1000"
    assert parse_reference("so $\\boxed{\\frac{1}{2}}$.", "boxed") == "\\frac{1}{2}"
    assert parse_reference("  (3, \\frac{\\pi}{2}) ", "raw") == "(3, \\frac{\\pi}{2})"
    for text, fmt in [("no marker", "gsm8k"), ("no box", "boxed"), ("x", "yaml")]:
        with pytest.raises(ValueError):
            parse_reference(text, fmt)


def test_answer_region_caps_and_sanitises() -> None:
    region = answer_region("x" * 100_000 + "\ud800 \\boxed{5}")
    assert len(region) <= 2048 and region.endswith("\\boxed{5}") and "\ud800" not in region
    assert answer_region("2 + 3 = 5\n#### 1,005") == "\\boxed{1005}"
    assert exact_match(answer_region("so $\\boxed{ 1005 }$."), "1005")
    assert not exact_match(answer_region("1005"), "1005")  # no box: left to math-verify


def test_scores_equivalent_forms(verifier: SuccessVerifier) -> None:
    completions = ["17 + 25 = 42\n\\boxed{38}", "\\boxed{\\frac{1}{2}}", "the answer is 0.5", "\\boxed{39}",
                   "", "#### 38", "\\boxed{x = 5}"]
    references = ["38", "0.5", "\\frac12", "38", "38", "38", "5"]
    correct, counts = verifier.score(completions, references)
    assert correct == [True, True, True, False, False, True, True]
    assert counts == {"verify_timeouts": 0.0, "verify_worker_errors": 0.0}


def test_hanging_completion_times_out_and_pool_recovers(verifier: SuccessVerifier) -> None:
    # unbounded, the power tower runs for hours: returning at all shows the CPU budget holds
    correct, counts = verifier.score([HANG, "\\boxed{7}", HANG], ["5", "7", "5"])
    assert correct == [False, True, False]
    assert counts["verify_timeouts"] == 2
    assert verifier.score(["\\boxed{3^2}"], ["9"]) == ([True], {"verify_timeouts": 0.0, "verify_worker_errors": 0.0})


def test_closed_verifier_refuses_work() -> None:
    v = SuccessVerifier(timeout_s=1.0, num_workers=1)
    v.close()
    with pytest.raises(RuntimeError, match="closed"):
        v.score(["\\boxed{1}"], ["1"])


def _change_last_box(solution: str) -> str:
    """The solution with its last ``\\boxed{a}`` turned into ``\\boxed{a+1}``."""
    i = solution.rfind("\\boxed")
    box = "\\boxed{" + extract_boxed_content(solution[i:]) + "}"
    assert solution.startswith(box, i)
    return solution[:i] + box[:-1] + "+1}" + solution[i + len(box):]


def _change_gsm8k(solution: str, reference: str) -> str:
    number = float(reference) + 1
    return solution.rsplit("#### ", 1)[0] + "#### " + (f"{number:g}" if "." in reference else str(int(number)))


def test_gold_solutions_score_correct_and_changed_answers_wrong() -> None:
    gsm8k, math500 = _rows("gsm8k"), _rows("math500")
    assert (len(gsm8k), len(math500)) == (1319, 500)
    gsm_refs = [parse_reference(r["answer"], "gsm8k") for r in gsm8k]
    completions = [r["answer"] for r in gsm8k] + [r["solution"] for r in math500]
    references = gsm_refs + [r["answer"] for r in math500]
    changed = ([_change_gsm8k(r["answer"], ref) for r, ref in zip(gsm8k, gsm_refs)]
               + [_change_last_box(r["solution"]) for r in math500])
    with SuccessVerifier(timeout_s=5.0, num_workers=2) as v:
        correct, counts = v.score(completions + changed, references + references)
    n = len(completions)
    assert counts["verify_timeouts"] == 0
    assert [references[i] for i in range(n) if not correct[i]] == []
    assert [changed[i][-60:] for i in range(n) if correct[n + i]] == []


def _expanded_power(n: int, plus: int = 1) -> str:
    """``\\boxed{}`` of (x+1)^n written out: 0.3-0.7 CPU seconds of math-verify to compare."""
    import sympy

    x = sympy.Symbol("x")
    return "\\boxed{" + sympy.latex(sympy.expand((x + 1) ** n - 1 + plus)) + "}"


def test_verdicts_do_not_depend_on_machine_load() -> None:
    """The budget is CPU time of the worker: with busy processes on every core (4 per core),
    completions that cost a good part of the budget keep their verdict and none times out.
    Catches a wall-clock budget (each comparison then takes several times its CPU time)."""
    import os
    import subprocess
    import sys

    completions = [_expanded_power(n, plus) for n in (24, 30, 40) for plus in (1, 2)] + [HANG]
    references = [f"(x+1)^{{{n}}}" for n in (24, 30, 40) for _ in range(2)] + ["5"]
    expected = [True, False] * 3 + [False]
    with SuccessVerifier(timeout_s=2.0, num_workers=2) as v:
        idle = v.score(completions, references)
        busy = [subprocess.Popen(["timeout", "300", sys.executable, "-c", "while True: pass"], start_new_session=True)
                for _ in range(4 * (os.cpu_count() or 1))]
        try:
            loaded = v.score(completions, references)
        finally:
            for p in busy:
                os.killpg(p.pid, 9)
                p.wait()
    assert idle[0] == loaded[0] == expected
    assert idle[1] == loaded[1] == {"verify_timeouts": 1.0, "verify_worker_errors": 0.0}
