"""Reward shapes: the bounds each one guarantees, as properties, and hand-computed examples."""
from __future__ import annotations

from typing import Optional

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from critic_free_rl.rewards.shapes import get_shape, register_shape, shape_names
from critic_free_rl.rewards.shaping import REWARD_MODES, shape_step_rewards

scores_1d = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40).map(torch.tensor)
etas = st.floats(0.0, 1.0)


@given(scores_1d, etas)
def test_clip_every_prefix_sum_is_non_positive(scores: torch.Tensor, eta: float) -> None:
    shaped = shape_step_rewards(scores, "clip", eta)
    assert torch.all(shaped <= 0)
    assert torch.all(torch.cumsum(shaped, 0) <= 1e-6)
    assert torch.allclose(shaped, torch.clamp(scores - eta, max=0.0))


@given(scores_1d)
def test_delta_return_from_any_step_telescopes_to_its_score(scores: torch.Tensor) -> None:
    shaped = shape_step_rewards(scores, "delta")
    returns = torch.flip(torch.cumsum(torch.flip(shaped, [0]), 0), [0])  # sum_{j >= k} s_j
    assert torch.allclose(returns, scores.float(), atol=1e-5)
    assert float(returns.max()) <= float(scores.max()) + 1e-5
    assert float(shaped[-1]) == pytest.approx(float(scores[-1]))


@given(scores_1d, etas)
def test_clip_delta_is_delta_of_clipped(scores: torch.Tensor, eta: float) -> None:
    shaped = shape_step_rewards(scores, "clip_delta", eta)
    expected = shape_step_rewards(shape_step_rewards(scores, "clip", eta), "delta")
    assert torch.allclose(shaped, expected)
    assert float(shaped.sum()) <= 1e-6 and float(shaped.sum()) >= -eta - 1e-6


@given(st.lists(st.lists(st.floats(0.0, 1.0), min_size=0, max_size=8), min_size=1, max_size=6),
       st.sampled_from(["none", "clip", "delta", "clip_delta"]), etas)
@settings(max_examples=60)
def test_padded_batch_equals_per_row(rows: list[list[float]], mode: str, eta: float) -> None:
    K = max(1, max(map(len, rows)))
    scores = torch.full((len(rows), K), 7.0)  # garbage in the padding must not leak
    mask = torch.zeros(len(rows), K, dtype=torch.bool)
    for i, row in enumerate(rows):
        scores[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = True
    shaped = shape_step_rewards(scores, mode, eta, mask)
    assert torch.all(shaped[~mask] == 0)
    for i, row in enumerate(rows):
        if row:
            assert torch.allclose(shaped[i, :len(row)], shape_step_rewards(torch.tensor(row), mode, eta))


def test_hand_values_and_unknown_mode() -> None:
    r = torch.tensor([0.9, 0.2, 0.6])
    assert torch.allclose(shape_step_rewards(r, "none"), r)
    assert torch.allclose(shape_step_rewards(r, "clip", 0.5), torch.tensor([0.0, -0.3, 0.0]))
    assert torch.allclose(shape_step_rewards(r, "delta"), torch.tensor([0.7, -0.4, 0.6]))
    assert torch.allclose(shape_step_rewards(r, "clip_delta", 0.5), torch.tensor([0.3, -0.3, 0.0]))
    with pytest.raises(ValueError, match="shaping"):
        shape_step_rewards(r, "square")


def _returns(shaped: torch.Tensor) -> torch.Tensor:
    """``R_k = sum_{j >= k} s_j`` of a ``[K]`` vector."""
    return torch.flip(torch.cumsum(torch.flip(shaped, [0]), 0), [0])


def test_min_form_hand_values() -> None:
    """m = suffix min [0.2, 0.2, 0.6, 0.7]: s = [0, -0.4, -0.1, 0.7]; a shape that summed the
    scores or took the prefix min would differ."""
    r = torch.tensor([0.9, 0.2, 0.6, 0.7])
    shaped = shape_step_rewards(r, "min")
    assert torch.allclose(shaped, torch.tensor([0.0, -0.4, -0.1, 0.7]), atol=1e-6)
    assert torch.allclose(_returns(shaped), torch.tensor([0.2, 0.2, 0.6, 0.7]), atol=1e-6)


@given(scores_1d)
def test_min_form_return_is_the_suffix_min_and_at_most_the_step_score(scores: torch.Tensor) -> None:
    """Catches a min taken over the wrong range (prefix, whole response) or a lost last step."""
    returns = _returns(shape_step_rewards(scores, "min"))
    expected = torch.tensor([float(scores[k:].min()) for k in range(len(scores))])
    assert torch.allclose(returns, expected, atol=1e-5)
    assert torch.all(returns <= scores.float() + 1e-5)


@given(scores_1d, st.lists(st.floats(0.0, 1.0), min_size=1, max_size=10))
def test_min_form_appending_steps_never_raises_a_return(scores: torch.Tensor, extra: list[float]) -> None:
    """Padding with good steps must earn nothing: every original step's return can only fall."""
    K = len(scores)
    before = _returns(shape_step_rewards(scores, "min"))
    after = _returns(shape_step_rewards(torch.cat([scores, torch.tensor(extra)]), "min"))[:K]
    assert torch.all(after <= before + 1e-5)


@given(scores_1d, st.floats(0.01, 1.0), st.floats(0.0, 1.0))
def test_softmin_form_is_the_papers_weighting_and_bounded(scores: torch.Tensor, T: float, extra: float) -> None:
    """s_k = softmax(-r / T)_k * r_k; R_1 in [min, max], within K * T / e of the min, and an
    appended step raises it by at most T / e (the exact form's bound as T -> 0)."""
    shaped = shape_step_rewards(scores, "min", temperature=T)
    assert torch.allclose(shaped, torch.softmax(-scores / T, 0) * scores, atol=1e-6)
    R1, lo, hi = float(shaped.sum()), float(scores.min()), float(scores.max())
    assert lo - 1e-5 <= R1 <= hi + 1e-5
    assert R1 - lo <= len(scores) * T / torch.e + 1e-5
    longer = float(shape_step_rewards(torch.cat([scores, torch.tensor([extra])]), "min", temperature=T).sum())
    assert longer - R1 <= T / torch.e + 1e-5


def test_softmin_form_tends_to_the_exact_min() -> None:
    r = torch.tensor([0.9, 0.2, 0.6, 0.7])
    assert float(shape_step_rewards(r, "min", temperature=1e-3).sum()) == pytest.approx(0.2, abs=1e-4)
    assert float(shape_step_rewards(r, "min", temperature=10.0).sum()) == pytest.approx(float(r.mean()), abs=0.02)


def test_progress_hand_values() -> None:
    """r_0 = 0.5, r = [0.9, 0.2, 0.6]: s = [0.4, -0.7, 0.4]; R_k = r_K - r_{k-1} = [0.1, -0.3, 0.4]."""
    shaped = shape_step_rewards(torch.tensor([0.9, 0.2, 0.6]), "progress", prompt_score=0.5)
    assert torch.allclose(shaped, torch.tensor([0.4, -0.7, 0.4]), atol=1e-6)
    assert torch.allclose(_returns(shaped), torch.tensor([0.1, -0.3, 0.4]), atol=1e-6)
    with pytest.raises(ValueError, match="prompt"):
        shape_step_rewards(torch.tensor([0.9]), "progress")


@given(scores_1d, st.floats(0.0, 1.0))
def test_progress_return_telescopes_to_last_minus_previous(scores: torch.Tensor, r0: float) -> None:
    """R_1 = r_K - r_0 and R_k = r_K - r_{k-1}: catches an r_0 that is dropped or misplaced."""
    returns = _returns(shape_step_rewards(scores, "progress", prompt_score=r0))
    previous = torch.cat([torch.tensor([r0]), scores.float()[:-1]])
    assert torch.allclose(returns, float(scores[-1]) - previous, atol=1e-5)
    assert float(returns[0]) == pytest.approx(float(scores[-1]) - r0, abs=1e-5)
    assert torch.all(returns.abs() <= 1.0 + 1e-5)


@given(st.lists(st.lists(st.floats(0.0, 1.0), min_size=0, max_size=8), min_size=1, max_size=6),
       st.sampled_from(shape_names()), etas, st.sampled_from([None, 0.3]))
@settings(max_examples=80)
def test_every_shape_padded_batch_equals_per_row(rows: list[list[float]], mode: str, eta: float,
                                                 temperature: Optional[float]) -> None:
    """Every registered shape: padding never leaks into real steps (garbage 7.0 there) and
    comes back 0; a batch row equals the same row shaped alone (with its own r_0)."""
    K = max(1, max(map(len, rows)))
    scores = torch.full((len(rows), K), 7.0)
    mask = torch.zeros(len(rows), K, dtype=torch.bool)
    for i, row in enumerate(rows):
        scores[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = True
    r0 = torch.linspace(0.1, 0.9, len(rows))
    shaped = shape_step_rewards(scores, mode, eta, mask, prompt_score=r0, temperature=temperature)
    assert torch.all(shaped[~mask] == 0) and torch.isfinite(shaped).all()
    for i, row in enumerate(rows):
        if row:
            alone = shape_step_rewards(torch.tensor(row), mode, eta, prompt_score=r0[i], temperature=temperature)
            assert torch.allclose(shaped[i, :len(row)], alone, atol=1e-6)


def test_registry_declarations() -> None:
    """reward.name -> shape comes from the registrations; a bad registration fails at import."""
    assert REWARD_MODES == {"success": None, "orm": None, "prime": None, "pr": "none", "pr_clip": "clip", "pr_delta": "delta",
                            "pr_clip_delta": "clip_delta", "pr_min": "min", "pr_progress": "progress"}
    assert get_shape("clip").needs == get_shape("clip_delta").needs == ("eta",)
    assert get_shape("progress").needs == ("prompt_score",) and get_shape("min").needs == ("temperature",)
    with pytest.raises(ValueError, match="unknown needs"):
        register_shape("bonus", needs=("gamma",))
    with pytest.raises(ValueError, match="registered twice"):
        register_shape("clip")(lambda scores, mask: scores)
