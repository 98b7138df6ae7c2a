"""RewardPipeline: reward placement on tokens, the per-mode bounds end to end, monitors, score_records."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from critic_free_rl.config.schema import RewardConfig
from critic_free_rl.models.tiny import build_char_tokenizer, build_tiny_model
from critic_free_rl.rewards.pipeline import RewardPipeline, ScoredBatch, score_records
from critic_free_rl.rewards.shaping import REWARD_MODES

SEP = "<extra_0>"
PROMPT = "17 + 25 - 8 + 4 = ?\n"
EXAMPLE = "17 + 25 = 42\n42 - 8 = 34\n34 + 4 = 38\n\\boxed{38}"
TOK = build_char_tokenizer()
lines = st.lists(st.text(alphabet="0123456789+-= x\\{}", min_size=0, max_size=10), min_size=0, max_size=10)
FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def prm_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    tiny = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    return str(build_tiny_model(tmp_path_factory.mktemp("prm"), token_classification=True, extra_tokens=[SEP], **tiny))


def _cfg(name: str, shaping: str, prm_path: str, **kw) -> RewardConfig:
    return RewardConfig(name=name, shaping=shaping, success_coef=5.0, dense_coef=2.0, prm=prm_path,
                        prm_separator=SEP, prm_device="cpu", prm_batch_size=3, verify_workers=1, **kw)


@pytest.fixture(scope="module")
def pipelines(prm_path: str) -> Iterator[dict[str, RewardPipeline]]:
    modes = {"success": "none", "pr": "none", "pr_clip": "clip", "pr_delta": "delta", "pr_min": "min", "pr_progress": "progress"}
    pipes = {name: RewardPipeline(_cfg(name, shaping, prm_path, verify_timeout_s=1.5), TOK)
             for name, shaping in modes.items()}
    yield pipes
    for pipe in pipes.values():
        pipe.close()


def _score(pipe: RewardPipeline, completions: list[str], reference: str = "38") -> ScoredBatch:
    ids = [TOK(c, add_special_tokens=False).input_ids + [TOK.eos_token_id] for c in completions]
    return pipe.score([PROMPT] * len(completions), completions, ids, [reference] * len(completions))


def _dense_part(batch: ScoredBatch, i: int, success_coef: float = 5.0) -> torch.Tensor:
    """Row ``i`` of token_rewards without the success term on its last (EOS) token."""
    row = batch.token_rewards[i].clone()
    last = int(batch.reward_mask[i].nonzero().max())
    row[last] -= success_coef * float(batch.success[i])
    return row


def test_token_rewards_land_on_step_ends_and_last_token(pipelines: dict[str, RewardPipeline]) -> None:
    batch = _score(pipelines["pr"], [EXAMPLE, "\\boxed{37}"])
    assert batch.token_rewards.shape == batch.reward_mask.shape == (2, 48)
    assert batch.steps[0] == ["17 + 25 = 42", "42 - 8 = 34", "34 + 4 = 38", "\\boxed{38}"]
    assert batch.step_end_tokens == [[11, 23, 35, 46], [9]]
    assert batch.reward_mask[0].nonzero().flatten().tolist() == [11, 23, 35, 46, 47]
    assert batch.reward_mask[1].nonzero().flatten().tolist() == [9, 10]
    expected = torch.zeros(2, 48)
    expected[0, [11, 23, 35, 46]] = 2.0 * torch.tensor(batch.prm_scores[0])  # pr: shaped == PRM score
    expected[0, 47] = 5.0  # correct: success_coef * correct_value
    expected[1, 9] = 2.0 * batch.prm_scores[1][0]  # wrong: 5 * 0 on token 10
    assert torch.allclose(batch.token_rewards, expected)
    assert batch.correct.tolist() == [True, False] and batch.success.tolist() == [1.0, 0.0]
    assert torch.allclose(batch.dense_return, expected.sum(1) - torch.tensor([5.0, 0.0]))


@given(st.lists(lines, min_size=1, max_size=3))
@FEW
def test_pr_clip_every_prefix_sum_of_dense_rewards_is_non_positive(
        pipelines: dict[str, RewardPipeline], samples: list[list[str]]) -> None:
    batch = _score(pipelines["pr_clip"], ["\n".join(s) for s in samples])
    for i in range(len(samples)):
        assert torch.all(torch.cumsum(_dense_part(batch, i), 0) <= 1e-6)


@given(st.lists(lines, min_size=1, max_size=3))
@FEW
def test_pr_delta_return_from_each_step_is_its_prm_score(
        pipelines: dict[str, RewardPipeline], samples: list[list[str]]) -> None:
    batch = _score(pipelines["pr_delta"], ["\n".join(s) for s in samples])
    for i in range(len(samples)):
        dense = _dense_part(batch, i)
        returns = [float(dense[t:].sum()) for t in batch.step_end_tokens[i]]
        assert returns == pytest.approx([2.0 * r for r in batch.prm_scores[i]], abs=1e-5)
        assert max(returns, default=0.0) <= 2.0 * max(batch.prm_scores[i], default=0.0) + 1e-5


@given(st.lists(lines, min_size=1, max_size=4))
@FEW
def test_success_mode_leaves_dense_rewards_zero(pipelines: dict[str, RewardPipeline], samples: list[list[str]]) -> None:
    batch = _score(pipelines["success"], ["\n".join(s) for s in samples])
    assert batch.prm_scores is None and torch.all(batch.dense_return == 0)
    for i in range(len(samples)):
        assert torch.all(_dense_part(batch, i) == 0)
        assert int(batch.reward_mask[i].sum()) == 1


def test_monitors(pipelines: dict[str, RewardPipeline]) -> None:
    looped = "Step 1: 34 + 4 = 38\nStep 2: 34+4 = 38.\n34 + 4 = 38\n34 + 4 = 38\n\\boxed{38}"
    metrics = _score(pipelines["pr"], [EXAMPLE, looped]).metrics
    assert metrics["reward/steps_per_response"] == 4.5
    assert metrics["reward/repeated_step_frac"] == pytest.approx(1 / 9)
    assert metrics["reward/repeated_step_frac_norm"] == pytest.approx(3 / 9)
    assert metrics["reward/success_rate"] == metrics["reward/success_mean"] == 1.0
    assert 0.0 <= metrics["reward/prm_min"] <= metrics["reward/prm_mean"] <= 1.0
    assert metrics["reward/verify_timeouts"] == 0.0
    assert metrics["response/length_chars"] == (len(EXAMPLE) + len(looped)) / 2
    assert "reward/dense_mean" in metrics
    assert "reward/prm_mean" not in _score(pipelines["success"], [EXAMPLE]).metrics


@pytest.mark.timeout(300)  # a hang guard, not a speed bound: the check's budget is CPU time
def test_hanging_completion_is_wrong_bounded_and_counted(pipelines: dict[str, RewardPipeline]) -> None:
    batch = _score(pipelines["success"], ["\\boxed{9^{9^{9^9}}}", EXAMPLE])
    assert batch.correct.tolist() == [False, True]
    assert batch.metrics["reward/verify_timeouts"] == 1.0


def test_score_records_matches_training_path(pipelines: dict[str, RewardPipeline]) -> None:
    pipe = pipelines["pr_delta"]
    records = [{"prompt": PROMPT, "completion": EXAMPLE, "reference": "38", "id": 7},
               {"prompt": PROMPT, "completion": "", "reference": "38", "id": 8}]
    out = score_records(records, pipe)
    batch = pipe.score([PROMPT] * 2, [EXAMPLE, ""], [TOK(EXAMPLE).input_ids, []], ["38", "38"])
    assert out[0]["id"] == 7 and out[0]["correct"] and out[0]["steps"] == batch.steps[0]
    assert out[0]["prm_scores"] == pytest.approx(batch.prm_scores[0])
    assert out[0]["shaped"] == pytest.approx(batch.shaped[0])
    assert sum(out[0]["shaped"]) == pytest.approx(out[0]["prm_scores"][0])  # delta telescopes
    assert out[0]["return"] == pytest.approx(5.0 + 2.0 * out[0]["prm_scores"][0])
    assert out[1]["steps"] == [] and out[1]["return"] == 0.0 and not out[1]["correct"]
    assert score_records([], pipe) == []


def test_config_errors(prm_path: str) -> None:
    with pytest.raises(ValueError, match="reward.shaping='clip'"):
        RewardPipeline(_cfg("pr_clip", "delta", prm_path), TOK)
    with pytest.raises(ValueError, match="reward.name"):
        RewardPipeline(_cfg("pr_bonus", "none", prm_path), TOK)
    with pytest.raises(ValueError, match="step_tag"):
        RewardPipeline(replace(_cfg("success", "none", prm_path), step_split="tag"), TOK)


@given(st.lists(lines, min_size=1, max_size=3))
@FEW
def test_pr_min_return_from_each_step_is_the_suffix_min(
        pipelines: dict[str, RewardPipeline], samples: list[list[str]]) -> None:
    """On the tokens: the dense rewards from a step's last token on add up to dense_coef *
    min of the PRM scores from that step on (catches a shape placed on the wrong tokens)."""
    batch = _score(pipelines["pr_min"], ["\n".join(s) for s in samples])
    for i in range(len(samples)):
        dense, r = _dense_part(batch, i), batch.prm_scores[i]
        returns = [float(dense[t:].sum()) for t in batch.step_end_tokens[i]]
        assert returns == pytest.approx([2.0 * min(r[k:]) for k in range(len(r))], abs=1e-5)


def test_pr_progress_reads_the_prompt_score_and_telescopes(pipelines: dict[str, RewardPipeline], prm_path: str) -> None:
    """r_0 is the PRM's token_cls output at a SEP right after [BOS] prompt, and the dense
    return from the first step is dense_coef * (r_K - r_0)."""
    from transformers import AutoModelForTokenClassification

    prm_tok = pipelines["pr_progress"].prm.tokenizer
    batch = _score(pipelines["pr_progress"], [EXAMPLE, "\\boxed{37}", ""])
    model = AutoModelForTokenClassification.from_pretrained(prm_path)
    ids = [prm_tok.bos_token_id] if prm_tok.bos_token_id is not None else []
    ids += prm_tok(PROMPT, add_special_tokens=False).input_ids + [prm_tok.convert_tokens_to_ids(SEP)]
    with torch.no_grad():
        r0 = float(model(input_ids=torch.tensor([ids])).logits[0, -1].softmax(-1)[1])
    assert batch.prm_prompt_scores == pytest.approx([r0] * 3, abs=1e-5)
    for i in range(2):
        r = batch.prm_scores[i]
        assert batch.shaped[i] == pytest.approx([b - a for a, b in zip([r0] + r[:-1], r)], abs=1e-5)
        assert float(_dense_part(batch, i).sum()) == pytest.approx(2.0 * (r[-1] - r0), abs=1e-5)
    assert batch.shaped[2] == [] and float(batch.dense_return[2]) == 0.0
    assert batch.metrics["reward/prm_prompt_mean"] == pytest.approx(r0, abs=1e-5)
    assert _score(pipelines["pr_min"], [EXAMPLE]).prm_prompt_scores is None  # read only for the shapes that need it


def test_overlong_penalty_lands_on_the_last_token(prm_path: str) -> None:
    """Limit 12 tokens, buffer 4: lengths 8 / 11 / 12 (EOS included) get 0 / -0.75c / -c on
    their last token, added to the success reward there, and counted in dense_return."""
    cfg = replace(_cfg("success", "none", prm_path), dense_coef=0.0, overlong_buffer=4, overlong_coef=3.0,
                  overlong_max_tokens=12)
    completions = ["1234567", "\\boxed{38}", "12345678901"]
    with RewardPipeline(cfg, TOK) as pipe:
        batch = _score(pipe, completions)
    assert batch.correct.tolist() == [False, True, False]
    assert batch.overlong.tolist() == pytest.approx([0.0, -2.25, -3.0])
    assert batch.dense_return.tolist() == pytest.approx([0.0, -2.25, -3.0])
    for i, n in enumerate((8, 11, 12)):
        assert batch.reward_mask[i].nonzero().flatten().tolist() == [n - 1]
    assert batch.token_rewards[:, -1].tolist() == pytest.approx([0.0, 0.0, -3.0])
    assert float(batch.token_rewards[1, 10]) == pytest.approx(5.0 - 2.25)
    assert batch.metrics["reward/overlong_frac"] == pytest.approx(2 / 3)
    assert batch.metrics["reward/overlong_penalty_mean"] == pytest.approx(-5.25 / 3)


def test_shape_monitors_for_every_shape(pipelines: dict[str, RewardPipeline]) -> None:
    """Each shape logs its return and the length-return correlation; with steps appended the
    raw sum (pr) grows (correlation near 1), min and Clip returns never do."""
    padded = ["\n".join([EXAMPLE] + ["34 + 4 = 38"] * k) for k in range(6)]  # a causal PRM keeps earlier scores
    corr = {}
    for name, pipe in pipelines.items():
        batch = _score(pipe, padded)
        m = batch.metrics
        if REWARD_MODES[name] is None:
            assert "reward/shaped_return" not in m
            continue
        assert m["reward/shaped_return"] == pytest.approx(sum(map(sum, batch.shaped)) / len(padded), abs=1e-5)
        assert ("reward/prm_below_eta_frac" in m) == (name == "pr_clip")
        assert ("reward/prm_prompt_mean" in m) == (name == "pr_progress")
        assert "reward/overlong_frac" not in m  # penalty off
        corr[name] = m["reward/shaped_return_len_corr"]
        returns = [sum(s) for s in batch.shaped]
        if name in ("pr_min", "pr_clip"):
            assert all(b <= a + 1e-6 for a, b in zip(returns, returns[1:]))  # padding never raises the return
    assert corr["pr"] > 0.9
    clip = _score(pipelines["pr_clip"], padded)
    below = [x < 0.5 for s in clip.prm_scores for x in s]
    assert clip.metrics["reward/prm_below_eta_frac"] == pytest.approx(sum(below) / len(below))
