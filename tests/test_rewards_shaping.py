"""Clip / Delta shaping: the bounds the paper's refinements guarantee, as properties."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from critic_free_rl.rewards.shaping import shape_step_rewards

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
