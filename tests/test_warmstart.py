"""The embedded warm start: SFT that stops at a validation accuracy, cached once per setting."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from critic_free_rl.models.warmstart import StopRule, greedy_accuracy, sft


def test_greedy_accuracy_reads_the_last_boxed_integer(tiny_model_dir: Path) -> None:
    """A random model writes no ``\\boxed{}``: 0 of 3 (the trained case is in the next test)."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    problems = [("What is 1 + 2?\n", "3"), ("What is 5 - 4?\n", "1"), ("What is 9 + 9?\n", "18")]
    assert greedy_accuracy(model, tok, problems, max_new_tokens=8) == 0.0


def test_sft_stops_at_the_first_check_that_reaches_the_target(tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs = [("What is 1 + 2?\n", "1 + 2 = 3\n\\boxed{3}")] * 8
    problems = [("What is 1 + 2?\n", "3")]
    # target 0: the first check (after eval_every steps) stops the run
    res = sft(tiny_model_dir, tmp_path / "a", pairs, steps=50, batch_size=4, lr=1e-2, stop=StopRule(problems, 0.0, eval_every=3))
    assert res.steps == 3 and res.accuracy == 0.0 and (res.path / "config.json").is_file()
    # memorising one problem: the run goes on until greedy decoding solves it, then stops
    res = sft(tiny_model_dir, tmp_path / "b", pairs, steps=300, batch_size=4, lr=1e-2, stop=StopRule(problems, 1.0, eval_every=10, max_new_tokens=24))
    assert res.accuracy == 1.0 and res.steps < 300 and res.steps % 10 == 0
    model = AutoModelForCausalLM.from_pretrained(res.path)
    assert greedy_accuracy(model, AutoTokenizer.from_pretrained(res.path), problems, 24) == 1.0


def test_embedded_policy_is_built_once_and_records_where_it_stopped(cache_dir: Path) -> None:
    from critic_free_rl.config.schema import DataConfig, ModelConfig
    from critic_free_rl.models.loading import embedded_policy

    arch = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
    ws = {"steps": 4, "batch_size": 4, "lr": 1e-3, "seed": 0, "stop_at_accuracy": 0.0, "eval_every": 2, "eval_problems": 4}
    mcfg = ModelConfig(name_or_path="embedded", embedded=True, arch=arch, warmstart=ws)
    dcfg = DataConfig(num_train=16, num_test=4)
    path = embedded_policy(mcfg, dcfg)
    record = json.loads((path / "warmstart.json").read_text())
    assert record["steps_taken"] == 2 and record["validation_greedy_accuracy"] == 0.0
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert embedded_policy(mcfg, dcfg) == path and (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert not list(cache_dir.glob("*.tmp*"))


def test_early_answer_boxes_the_value_before_the_last_step() -> None:
    from critic_free_rl.data.arithmetic import early_answer

    assert early_answer("17 + 25 = 42\n42 - 8 = 34\n34 + 4 = 38\n\\boxed{38}") == "17 + 25 = 42\n42 - 8 = 34\n\\boxed{34}"
    assert early_answer("1 + 2 = 3\n3 + 4 = 7\n\\boxed{7}") == "1 + 2 = 3\n\\boxed{3}"
    with pytest.raises(ValueError, match="one step cannot be cut short"):
        early_answer("1 + 2 = 3\n\\boxed{3}")


@pytest.mark.parametrize("frac", [0.0, 0.7, 1.0])
def test_warmstart_corpus_cuts_only_the_longest_problems(frac: float) -> None:
    from critic_free_rl.data.arithmetic import ArithmeticSpec, generate_split
    from critic_free_rl.models.loading import warmstart_pairs

    rows = generate_split(400, 0, ArithmeticSpec(min_ops=2, max_ops=3, max_first=99, max_operand=9))
    pairs = warmstart_pairs(rows, "{question}\n", 3, frac, seed=0)
    assert [p for p, _ in pairs] == [r["question"] + "\n" for r in rows]
    short = [s == r["solution"] for (_, s), r in zip(pairs, rows) if r["solution"].count("\n") == 2]
    longest = [s != r["solution"] for (_, s), r in zip(pairs, rows) if r["solution"].count("\n") == 3]
    assert all(short) and len(short) > 100 and len(longest) > 100
    cut = sum(longest) / len(longest)
    assert cut == frac if frac in (0.0, 1.0) else abs(cut - frac) < 0.1
    assert pairs == warmstart_pairs(rows, "{question}\n", 3, frac, seed=0)  # seeded
