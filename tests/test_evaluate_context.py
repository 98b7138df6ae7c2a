"""`critic-free-rl evaluate` on prompts longer than the policy's context: they are skipped
and counted per dataset, never handed to vLLM (whose start-up would fail on them)."""
from __future__ import annotations

import json

import pytest
from conftest import SHARED_DATA, run_cli

from critic_free_rl.cli.evaluate import CONTEXT_SLACK, fits


def test_fits_counts_prompt_answer_and_slack():
    """Catches an off-by-one in the budget or a forgotten max_new_tokens."""
    assert fits(512 - 64 - CONTEXT_SLACK, 64, 512)
    assert not fits(512 - 64 - CONTEXT_SLACK + 1, 64, 512)
    assert fits(10_000, 64, None)  # a config without max_position_embeddings: no limit known


@pytest.mark.skipif(not (SHARED_DATA / "gsm8k").is_dir(), reason="../shared/data not present")
def test_every_prompt_too_long_is_reported_not_a_crash(tiny_model_dir, tmp_path):
    """Answers of 600 tokens never fit the tiny policy's 512 positions: every prompt of both
    datasets is skipped, eval.json says so per dataset, and the command succeeds without
    starting an engine (today's failure: vLLM's max_model_len validation error)."""
    out = tmp_path / "eval"
    res = run_cli("evaluate", "model.embedded=false", f"model.name_or_path={tiny_model_dir}", "eval.datasets=[gsm8k,math500]",
                  f"eval.data_root={SHARED_DATA}", "eval.max_examples=3", "eval.max_new_tokens=600", f"run_dir={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "eval.json").read_text())
    assert report["context"] == 512
    for name in ("gsm8k", "math500"):
        got = report["datasets"][name]
        assert (got["n"], got["skipped_for_length"], got["greedy_accuracy"]) == (0, 3, None)
        assert f"{name}: all 3 prompts skipped" in res.stdout


def test_chunked_evaluation_equals_one_call(tiny_model_dir, monkeypatch):
    """Greedy evaluation of 7 problems in chunks of 3 (3+3+1, the progress granularity)
    gives the accuracy, count and mean length of one call over all 7: catches chunks merged
    without weighting by their size, or a chunk dropped."""
    from types import SimpleNamespace

    from critic_free_rl.cli import evaluate as cmd
    from critic_free_rl.data.datasets import Example
    from critic_free_rl.evaluation import evaluate
    from critic_free_rl.rewards.success import SuccessVerifier
    from critic_free_rl.rollout import make_engine

    exs = [Example(uid=f"test-{i}", question=f"What is {i} + {i}?", prompt=f"What is {i} + {i}?\n", reference=str(2 * i))
           for i in range(7)]
    e = SimpleNamespace(max_new_tokens=6, num_samples=0, temperature=0.7)
    engine = make_engine("hf", str(tiny_model_dir), dtype="float32", seed=0)
    monkeypatch.setattr(cmd, "CHUNK", 3)
    done: list[int] = []
    try:
        with SuccessVerifier(3.0, 1) as verifier:
            whole = evaluate(engine, verifier, exs, e.max_new_tokens)
            chunked = cmd.evaluate_in_chunks(engine, verifier, exs, e, done.append)
    finally:
        engine.close()
    assert done == [3, 6, 7]
    assert (chunked.num_examples, chunked.sampling_accuracy) == (7, None)
    assert chunked.greedy_accuracy == pytest.approx(whole.greedy_accuracy)
    assert chunked.mean_response_chars == pytest.approx(whole.mean_response_chars)
