"""PRM (token_cls and tag_lm conventions) and ORM on tiny random local models."""
from __future__ import annotations


import pytest
import torch
from transformers import Qwen2ForSequenceClassification

from critic_free_rl.config.schema import RewardConfig
from critic_free_rl.models.tiny import build_char_tokenizer, build_tiny_model, tiny_qwen2_config
from critic_free_rl.rewards.orm import OutcomeRewardModel
from critic_free_rl.rewards.pipeline import RewardPipeline
from critic_free_rl.rewards.prm import ProcessRewardModel

SEP, TAG = "<extra_0>", "ки"
TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
PROMPTS = ["17 + 25 - 8 + 4 = ?\n", "2 * 3 = ?\n", "empty\n", "1 + 1 = ?\n"]
STEPS = [["17 + 25 = 42", "42 - 8 = 34", "34 + 4 = 38", "\\boxed{38}"], ["2 * 3 = 6", "\\boxed{6}"], [],
         ["\\boxed{2}"]]


@pytest.fixture(scope="module")
def cls_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("prm_cls"), token_classification=True, extra_tokens=[SEP], **TINY))


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("prm_lm"), seed=1, extra_tokens=[TAG], **TINY))


@pytest.fixture(scope="module")
def orm_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("orm")
    tok = build_char_tokenizer()
    torch.manual_seed(2)
    cfg = tiny_qwen2_config(len(tok), num_labels=1, **TINY)
    Qwen2ForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def _prm(kind: str, path: str, batch_size: int, **kw) -> ProcessRewardModel:
    if kind == "token_cls":
        return ProcessRewardModel(path, "token_cls", SEP, device="cpu", batch_size=batch_size, **kw)
    return ProcessRewardModel(path, "tag_lm", TAG, "+", "-", device="cpu", batch_size=batch_size, **kw)


@pytest.mark.parametrize("kind", ["token_cls", "tag_lm"])
def test_one_score_in_unit_interval_per_step_batched_equals_unbatched(kind: str, cls_path: str, lm_path: str) -> None:
    path = cls_path if kind == "token_cls" else lm_path
    batched = _prm(kind, path, batch_size=3).score(PROMPTS, STEPS)
    single = _prm(kind, path, batch_size=1).score(PROMPTS, STEPS)
    assert [len(s) for s in batched] == [len(s) for s in STEPS]
    assert all(0.0 <= x <= 1.0 for sample in batched for x in sample)
    assert len({x for sample in batched for x in sample}) > 1  # really read per step
    for a, b in zip(batched, single):
        assert a == pytest.approx(b, abs=1e-5)


def test_input_format_and_separator_positions(cls_path: str) -> None:
    prm = _prm("token_cls", cls_path, batch_size=2)
    seqs, positions = prm.build_inputs(PROMPTS[:1], STEPS[:1])
    assert prm.tokenizer.decode(seqs[0]) == PROMPTS[0] + "".join(s + SEP for s in STEPS[0])
    assert [seqs[0][p] for p in positions[0]] == [prm.separator_id] * 4
    assert positions[0][-1] == len(seqs[0]) - 1


def test_tag_lm_reads_the_label_token_pair_at_the_tag(lm_path: str) -> None:
    prm = _prm("tag_lm", lm_path, batch_size=4)
    seqs, positions = prm.build_inputs(PROMPTS[:1], STEPS[:1])
    with torch.no_grad():
        logits = prm.model(input_ids=torch.tensor(seqs)).logits[0, positions[0]][:, prm.label_ids]
    assert prm.score(PROMPTS[:1], STEPS[:1])[0] == pytest.approx(logits.softmax(-1)[:, 0].tolist(), abs=1e-5)


def test_truncated_steps_score_zero(cls_path: str) -> None:
    prm = _prm("token_cls", cls_path, batch_size=2, max_length=30)
    scores = prm.score(PROMPTS[:1], STEPS[:1])[0]  # response alone is 48 tokens
    assert len(scores) == 4 and scores[2:] == [0.0, 0.0] and all(0 < x < 1 for x in scores[:2])


def test_missing_or_bad_config_names_the_field(cls_path: str, lm_path: str) -> None:
    with pytest.raises(ValueError, match="prm_separator"):
        ProcessRewardModel(cls_path, "token_cls", None, device="cpu")
    with pytest.raises(ValueError, match="prm_separator.*single token"):
        ProcessRewardModel(cls_path, "token_cls", "ab", device="cpu")
    with pytest.raises(ValueError, match="prm_positive_token"):
        ProcessRewardModel(lm_path, "tag_lm", TAG, None, "-", device="cpu")
    with pytest.raises(ValueError, match="prm_negative_token"):
        ProcessRewardModel(lm_path, "tag_lm", TAG, "+", "", device="cpu")
    with pytest.raises(ValueError, match="prm_kind"):
        ProcessRewardModel(cls_path, "value_head", SEP, device="cpu")
    with pytest.raises(ValueError, match="reward.prm "):
        ProcessRewardModel.from_config(RewardConfig(name="pr"))
    prm = ProcessRewardModel.from_config(RewardConfig(name="pr", prm=cls_path, prm_separator=SEP, prm_device="cpu"))
    assert prm.batch_size == 64 and prm.max_length == 512  # rm_max_length capped by the model's positions


def test_orm_scores_batched_equals_unbatched(orm_path: str) -> None:
    completions = ["17 + 25 = 42\n\\boxed{42}", "\\boxed{6}", "", "1 + 1 = 2\n\\boxed{2}"]
    batched = OutcomeRewardModel(orm_path, "cpu", batch_size=4).score(PROMPTS, completions)
    single = OutcomeRewardModel(orm_path, "cpu", batch_size=1).score(PROMPTS, completions)
    assert len(batched) == 4 and all(0.0 < x < 1.0 for x in batched)
    assert batched == pytest.approx(single, abs=1e-5)
    with pytest.raises(ValueError, match="reward.orm"):
        OutcomeRewardModel.from_config(RewardConfig(name="orm"))


def test_orm_mode_adds_the_sequence_score_on_the_last_token(orm_path: str) -> None:
    cfg = RewardConfig(name="orm", success_coef=5.0, dense_coef=2.0, orm=orm_path, prm_device="cpu", verify_workers=1)
    tok = build_char_tokenizer()
    completions = ["17 + 25 = 42\n\\boxed{42}", "\\boxed{6}"]
    ids = [tok(c, add_special_tokens=False).input_ids for c in completions]
    with RewardPipeline(cfg, tok) as pipe:
        batch = pipe.score(PROMPTS[:2], completions, ids, ["42", "7"])
    orm = OutcomeRewardModel(orm_path, "cpu").score(PROMPTS[:2], completions)
    assert batch.orm_scores == pytest.approx(orm) and batch.prm_scores is None
    assert batch.token_rewards[0, len(ids[0]) - 1] == pytest.approx(5.0 + 2.0 * orm[0])
    assert batch.token_rewards[1, len(ids[1]) - 1] == pytest.approx(2.0 * orm[1])
    assert float(batch.token_rewards.abs().sum()) == pytest.approx(5.0 + 2.0 * sum(orm))
    assert batch.metrics["reward/orm_mean"] == pytest.approx(sum(orm) / 2)
