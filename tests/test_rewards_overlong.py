"""DAPO's overlong penalty as a pure function: hand values and its bounds."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from critic_free_rl.rewards.overlong import overlong_penalty


def test_hand_values() -> None:
    """L_max 20, buffer 4, c 2: 0 up to 16 tokens, then -0.5 a token down to -2 at 20 (and past it)."""
    lengths = torch.tensor([0, 10, 16, 17, 18, 20, 25])
    assert overlong_penalty(lengths, 20, 4, 2.0).tolist() == pytest.approx([0, 0, 0, -0.5, -1.0, -2.0, -2.0])
    assert overlong_penalty(lengths, 20, 0, 2.0).tolist() == [0.0] * 7  # buffer 0: off
    assert overlong_penalty(torch.tensor([3]), 4, 4, 1.0).tolist() == pytest.approx([-0.75])  # the whole budget as buffer
    with pytest.raises(ValueError, match="overlong_buffer=21"):
        overlong_penalty(lengths, 20, 21, 1.0)


@given(st.integers(1, 200), st.integers(1, 200), st.floats(0.0, 5.0), st.lists(st.integers(0, 300), min_size=1, max_size=20))
def test_bounded_and_non_increasing_in_length(max_tokens: int, buffer: int, coef: float, lengths: list[int]) -> None:
    """-c <= p(L) <= 0, p = 0 below L_max - B and p is non-increasing in L (longer never pays)."""
    buffer = min(buffer, max_tokens)
    ordered = torch.tensor(sorted(lengths))
    p = overlong_penalty(ordered, max_tokens, buffer, coef)
    assert torch.all(p <= 0) and torch.all(p >= -coef - 1e-6)
    assert torch.all(p[ordered <= max_tokens - buffer] == 0)
    assert torch.all(p[1:] <= p[:-1] + 1e-6)
