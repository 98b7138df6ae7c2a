"""The PRM step-reward refinements of arXiv 2410.15115 (Sec. 4): raw, Clip, Delta, Clip-Delta.

For a response with PRM step scores ``r_1 .. r_K`` in ``[0, 1]``, shaped rewards ``s_k``
and the return from step ``k``, ``R_k = sum_{j>=k} s_j``:

- ``none``:  ``s_k = r_k``. ``R_1 = sum_k r_k`` grows with the number of steps, so
  repeating plausible steps is rewarded (the hacking the paper reports). No bound.
- ``clip``:  ``s_k = min(r_k - eta, 0)``. Every ``s_k <= 0``, hence every prefix sum
  ``sum_{j<=k} s_j <= 0`` and ``R_k <= 0``: extra steps can never raise the return.
- ``delta``: ``s_k = r_k - r_{k+1}`` for ``k < K`` and ``s_K = r_K``. The return
  telescopes, ``R_k = r_k``, so it is bounded by one step's score (``<= max_k r_k <= 1``)
  whatever the length.
- ``clip_delta``: Delta of the clipped scores ``c_k = min(r_k - eta, 0)``: ``R_k = c_k``,
  which lies in ``[-eta, 0]``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from critic_free_rl.rewards.shapes.registry import register_shape


def delta(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` -> ``[B, K]``: ``v_k - v_{k+1}`` where step ``k + 1`` is real, else ``v_k``
    (a row's last real step keeps its value), so ``sum_{j>=k}`` of the result is ``v_k``."""
    next_v = F.pad(values[:, 1:], (0, 1))
    next_real = F.pad(mask[:, 1:], (0, 1), value=False)
    return torch.where(next_real, values - next_v, values)


@register_shape("none", reward="pr")
def raw(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``s_k = r_k`` (unbounded return: the hackable baseline)."""
    return scores


@register_shape("clip", needs=("eta",))
def clip(scores: torch.Tensor, mask: torch.Tensor, eta: float) -> torch.Tensor:
    """``s_k = min(r_k - eta, 0) <= 0``: every prefix sum is ``<= 0``."""
    return torch.clamp(scores - eta, max=0.0)


@register_shape("delta")
def delta_shape(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``s_k = r_k - r_{k+1}``, ``s_K = r_K``: ``R_k = r_k``."""
    return delta(scores, mask)


@register_shape("clip_delta", needs=("eta",))
def clip_delta(scores: torch.Tensor, mask: torch.Tensor, eta: float) -> torch.Tensor:
    """Delta of ``c_k = min(r_k - eta, 0)``: ``R_k = c_k`` in ``[-eta, 0]``."""
    return delta(clip(scores, mask, eta), mask)
