"""Hostile completions: bounded time, no code execution, bounded step segmentation."""
from __future__ import annotations

from pathlib import Path

import pytest

from critic_free_rl.models.tiny import build_char_tokenizer
from critic_free_rl.rewards.steps import SPLITTERS, locate_step_ends, split_steps
from critic_free_rl.rewards.success import SuccessVerifier, encodable


def hostile_corpus(sentinel: Path) -> list[str]:
    """At least 30 completions built to break, hang or exploit a verifier or a splitter."""
    touch = f"touch {sentinel}"
    code = [
        f"\\boxed{{__import__('os').system('{touch}')}}",
        f"__import__('os').system('{touch}')",
        f"\\boxed{{eval(\"open('{sentinel}', 'w')\")}}",
        f"\\boxed{{exec('import os; os.system(\"{touch}\")')}}",
        f"$({touch}) `{touch}` \\boxed{{$({touch})}}",
        "\\boxed{().__class__.__bases__[0].__subclasses__()}",
        "\\boxed{lambda: __import__('subprocess').run(['sh'])}",
        f"\\input{{/etc/passwd}} \\write18{{{touch}}} \\boxed{{1}}",
    ]
    huge = [
        "\\boxed{9^{9^{9^9}}}",
        "\\boxed{(10^{10})!}",
        "\\boxed{10^{10^{10}}}",
        "\\boxed{100000000!}",
        "\\boxed{\\sum_{n=1}^{10^{100}} n^{n}}",
        "\\boxed{x^{x^{x^{x^{x^{x}}}}}}",
        "\\boxed{1e99999999}",
        "1" * 100_000,
    ]
    shapes = [
        "",
        " \n\t ",
        "no steps and no answer",
        "x" * 100_000,
        "a" * 100_000 + "\\boxed{5}",
        "1 + 1 = 2\n" * 5000 + "\\boxed{2}",
        "Step 1: again\n" * 3000,
        "ки" * 5000,
        "\n" * 50_000,
        bytes(range(256)).decode("utf-8", errors="replace") * 10 + "\\boxed{5}",
        "\ud800\udfff lone surrogates \\boxed{\ud83d}",
        "\x00" * 1000 + "\\boxed{\x00}",
        "\\boxed{" + "\\frac{1}{" * 500 + "1" + "}" * 1001,
        "{" * 10_000 + "}" * 10_000,
        "\\boxed{" * 5000,
        "}" * 5000 + "\\boxed{}",
        "\\boxed{" + "1+" * 20_000 + "1}",
        "\\boxed{" + "\\sqrt{" * 300 + "2" + "}" * 301,
        "\\begin{pmatrix}" * 200 + "\\boxed{5}",
        "\\boxed{5}" * 10_000,
        "answer: " + "1 = " * 5000,
        "😀" * 1000 + "\u202e\\boxed{5}",
        "\\boxed{\\infty - \\infty} \\boxed{0/0}",
    ]
    return code + huge + shapes


@pytest.mark.timeout(600)  # a hang is hours; each item is bounded by its CPU budget, whatever the load
def test_hostile_batch_is_bounded_and_never_executes(tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    corpus = hostile_corpus(sentinel)
    assert len(corpus) >= 30
    with SuccessVerifier(timeout_s=2.0, num_workers=2) as v:
        correct, counts = v.score(corpus, ["5"] * len(corpus))
    assert not sentinel.exists()
    assert len(correct) == len(corpus) and not any(correct[:16])  # code and huge numbers are never 5
    assert counts["verify_timeouts"] >= 1  # the power tower at least


@pytest.mark.timeout(300)  # catastrophic regex backtracking would hang: a guard, not a speed bound
@pytest.mark.parametrize("mode", SPLITTERS)
def test_hostile_corpus_splits_within_bounds(tmp_path: Path, mode: str) -> None:
    tok = build_char_tokenizer()
    for text in hostile_corpus(tmp_path / "SENTINEL"):
        spans = split_steps(text, mode, tag="ки", max_steps=64)
        assert len(spans) <= 64
        assert all(s.text and text[s.start:s.end] == s.text for s in spans)
        head = encodable(text[:5000])
        ids = tok(head, add_special_tokens=False).input_ids
        assert len(locate_step_ends(split_steps(head, mode, tag="ки"), ids, tok)) <= 64
