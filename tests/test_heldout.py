"""The held-out split of final evaluations, its per-problem outcomes, the Clip threshold
taken from PRM scores, and the provenance a run records.

Catches: a held-out split that changes the training or test split (or the warm start's
cache entry), that shares questions with them, or that is cut to ``max_test_rows``; outcome
rows out of problem order; a quantile taken over the wrong scores; a machine or weights
hash that is missing or ignores a changed weight file."""
from __future__ import annotations

from pathlib import Path

import pytest

from critic_free_rl.config.errors import ConfigError
from critic_free_rl.config.schema import DataConfig, ModelConfig
from critic_free_rl.data.arithmetic import HELDOUT, generate_task
from critic_free_rl.data.datasets import DataError, Example, load_examples
from critic_free_rl.evaluation import outcome_rows, prompt_sha256, score_quantile
from critic_free_rl.logging.provenance import machine, weights_sha256

EMBEDDED = dict(name="embedded", path="embedded", num_train=200, num_test=30, seed=7, spec={"max_operand": 9})


def test_heldout_split_leaves_train_and_test_unchanged_and_shares_no_question():
    plain = generate_task(200, 30, 7)
    with_heldout = generate_task(200, 30, 7, num_heldout=1000)
    assert with_heldout["train"] == plain["train"] and with_heldout["test"] == plain["test"]
    held = {r["question"] for r in with_heldout[HELDOUT]}
    assert len(held) == 1000
    assert not held & {r["question"] for split in ("train", "test") for r in plain[split]}
    assert generate_task(200, 30, 7, num_heldout=10)[HELDOUT] == with_heldout[HELDOUT][:10]  # a prefix: size is a cut


def test_final_split_is_read_whole_and_checked():
    cfg = DataConfig(**EMBEDDED, num_heldout=1000, max_test_rows=20, final_split="heldout")
    held = load_examples(cfg, "heldout")
    assert len(held) == 1000 and held[0].uid == "heldout-0" and len(load_examples(cfg, "test")) == 20
    with pytest.raises(DataError, match="no split 'valid'"):
        load_examples(cfg, "valid")
    from critic_free_rl.config.validate import _validate_data

    with pytest.raises(ConfigError, match="data.final_split='valid'"):
        _validate_data(DataConfig(**EMBEDDED, final_split="valid"))


def test_warm_start_cache_entry_does_not_depend_on_the_heldout_split(tmp_path, monkeypatch):
    """The policy's cache key is computed from the settings that shape it; the held-out
    split's size and use are not among them (the build itself is skipped here: only the
    entry's name is compared)."""
    from critic_free_rl.models import loading

    monkeypatch.setenv("CFRL_CACHE", str(tmp_path))
    built = []

    def fake_build(out: Path, parts: dict, dcfg: DataConfig) -> None:
        built.append(out)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(loading, "_build_policy", fake_build)
    model = ModelConfig(name_or_path="embedded", embedded=True)
    a = loading.embedded_policy(model, DataConfig(**EMBEDDED))
    b = loading.embedded_policy(model, DataConfig(**EMBEDDED, num_heldout=5000, final_split="heldout"))
    assert a == b and len(built) == 1


def test_outcome_rows_and_prompt_hash():
    examples = [Example(f"heldout-{i}", f"q{i}", f"What is {i}?\n", str(i)) for i in range(3)]
    rows = outcome_rows(examples, [True, False, True], [0, 2, 4])
    assert [(r["index"], r["id"], r["reference"], r["correct"]) for r in rows] == [(0, "heldout-0", "0", True), (2, "heldout-1", "1", False),
                                                                                 (4, "heldout-2", "2", True)]
    assert rows[1]["prompt_sha256"] == prompt_sha256("What is 1?\n") != prompt_sha256("What is 1? \n") and len(rows[0]["prompt_sha256"]) == 64


def test_score_quantile_pools_every_step_of_every_sample():
    # 6 step scores 0.1 .. 0.6 over samples of 1, 3 and 2 steps (and one without steps): median 0.35
    scores = [[0.6], [0.1, 0.5, 0.2], [], [0.4, 0.3]]
    assert score_quantile(scores, 0.5) == pytest.approx(0.35)
    assert score_quantile(scores, 0.0) == pytest.approx(0.1) and score_quantile(scores, 1.0) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="no PRM step scores"):
        score_quantile([[], []], 0.5)


def test_clip_eta_quantile_is_checked():
    from conftest import compose_train

    from critic_free_rl.config.loading import to_train_config

    with pytest.raises(ConfigError, match="reward.clip_eta_quantile=1.5"):
        to_train_config(compose_train("reward=pr_clip", "reward.clip_eta_quantile=1.5"))


def test_provenance_machine_and_weights_hash(tmp_path):
    assert " x " in machine() and int(machine().rsplit(" x ", 1)[1]) >= 1
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    first = weights_sha256(str(tmp_path))
    (tmp_path / "config.json").write_text('{"changed": 1}')  # not a weight file
    assert weights_sha256(str(tmp_path)) == first and len(first) == 64
    (tmp_path / "model.safetensors").write_bytes(b"weightz")
    assert weights_sha256(str(tmp_path)) != first
    assert weights_sha256(None) is None and weights_sha256("Qwen/Qwen2.5-Math-PRM-7B") is None and weights_sha256("exact") is None
