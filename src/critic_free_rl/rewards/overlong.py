"""Overlong-response penalty (DAPO, arXiv 2503.14476, Sec. 3.4), a term added to any reward.

For a response of ``L`` tokens, the generation limit ``L_max`` (``reward.overlong_max_tokens``,
the rollout's ``max_new_tokens``), a buffer of ``B`` tokens (``reward.overlong_buffer``) and
a coefficient ``c`` (``reward.overlong_coef``)::

    p(L) = 0                                  L <= L_max - B
    p(L) = -c * (L - (L_max - B)) / B         L_max - B < L <= L_max
    p(L) = -c                                 L > L_max

so ``-c <= p(L) <= 0``: it only ever lowers the reward, linearly over the last ``B`` tokens
before the limit, and responses cut off at the limit get the full ``-c``. The pipeline puts
it on the last response token.
"""
from __future__ import annotations

import torch


def overlong_penalty(lengths: torch.Tensor, max_tokens: int, buffer: int, coef: float) -> torch.Tensor:
    """``[B]`` response lengths in tokens -> ``[B]`` float penalties ``p(L)`` (all 0 when ``buffer`` is 0)."""
    if buffer == 0:
        return torch.zeros(lengths.shape, dtype=torch.float32)
    if not 0 < buffer <= max_tokens:
        raise ValueError(f"reward.overlong_buffer={buffer} must be 0 (off) or in [1, reward.overlong_max_tokens={max_tokens}]")
    excess = (lengths.float() - (max_tokens - buffer)).clamp(min=0.0, max=float(buffer))
    return -coef * excess / buffer
