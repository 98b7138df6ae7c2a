"""Min-form credit assignment (PURE, arXiv 2504.15275): a response is worth its weakest step.

Exact form (``reward.min_temperature`` unset). With ``m_k = min_{j>=k} r_j``::

    s_k = m_k - m_{k+1}   (k < K),        s_K = m_K
    R_k = sum_{j>=k} s_j = m_k = min_{j>=k} r_j

Bounds: ``R_k <= r_k`` (the return from a step never exceeds that step's score) and
``R_k`` never rises when steps are appended (a min over more terms), so padding a response
with good steps adds nothing and one bad step anywhere after ``k`` caps ``R_k``.

Softmin-weighted form (``reward.min_temperature = T > 0``), the paper's transform of the
step scores over the whole response::

    w_k = exp(-r_k / T) / sum_j exp(-r_j / T),        s_k = w_k * r_k
    R_1 = sum_k w_k r_k   -> min_k r_k as T -> 0

``R_1`` is a convex combination of the scores, hence in ``[min_k r_k, max_k r_k]``; it is
within ``K * T / e`` of ``min_k r_k`` (each step above the min adds ``w_k (r_k - min) <=
T / e``), so appending a good step raises it by at most ``T / e``. Returns from later
steps are partial sums of ``s``, not ``m_k``; the bounds of the exact form hold only as
``T -> 0``.
"""
from __future__ import annotations

from typing import Optional

import torch

from critic_free_rl.rewards.shapes.paper import delta
from critic_free_rl.rewards.shapes.registry import register_shape


def suffix_min(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, K]``: ``m_k = min_{j>=k, j real} r_j`` (``+inf`` on padding)."""
    r = torch.where(mask, scores, torch.inf)
    return torch.flip(torch.cummin(torch.flip(r, [1]), 1).values, [1])


@register_shape("min", needs=("temperature",))
def min_form(scores: torch.Tensor, mask: torch.Tensor, temperature: Optional[float]) -> torch.Tensor:
    """Exact min form (``temperature`` None) or the softmin-weighted form (``temperature > 0``)."""
    if temperature is None:
        return delta(torch.where(mask, suffix_min(scores, mask), 0.0), mask)
    weights = torch.softmax(torch.where(mask, -scores / temperature, -torch.inf), dim=1)
    return torch.where(mask, weights * scores, 0.0)  # rows without steps: softmax is NaN, masked out
