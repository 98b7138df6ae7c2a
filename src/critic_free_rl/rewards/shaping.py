"""Clip and Delta refinements of PRM step rewards (arXiv 2410.15115, Sec. 4).

For a response with PRM step scores ``r_1 .. r_K``:

- ``none``:  ``s_k = r_k``. The return ``sum_k r_k`` grows with the number of steps,
  so repeating plausible steps is rewarded (the hacking the paper reports).
- ``clip``:  ``s_k = min(r_k - eta, 0)``. Every shaped reward is ``<= 0``, hence every
  prefix sum ``sum_{j<=k} s_j <= 0``: extra steps can never raise the return.
- ``delta``: ``s_k = r_k - r_{k+1}`` for ``k < K`` and ``s_K = r_K``. The return from
  any step telescopes, ``sum_{j>=k} s_j = r_k``, so it is bounded by one step's score
  (``<= max_k r_k <= 1``) whatever the length.
- ``clip_delta``: Delta applied to the clipped scores ``c_k = min(r_k - eta, 0)``: the
  return from step ``k`` is ``c_k``, which lies in ``[-eta, 0]``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

SHAPINGS = ("none", "clip", "delta", "clip_delta")


def shape_step_rewards(scores: torch.Tensor, mode: str, eta: float = 0.0,
                       mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Refine step scores ``[K]`` or ``[B, K]`` (float) into shaped rewards of the same shape.

    ``mask`` (``[B, K]`` bool, optional) marks real steps of a padded batch; real steps
    must come first in each row (a prefix). Padded entries come back as 0 and never
    take part in Delta (a row's last real step keeps its own score). ``eta`` is the
    Clip threshold and is unused by ``none`` / ``delta``.
    """
    if mode not in SHAPINGS:
        raise ValueError(f"unknown reward.shaping {mode!r}; expected one of {SHAPINGS}")
    squeeze = scores.dim() == 1
    r = scores.float().unsqueeze(0) if squeeze else scores.float()
    if mask is None:
        valid = torch.ones_like(r, dtype=torch.bool)
    else:
        valid = (mask.unsqueeze(0) if squeeze else mask).bool()
    r = torch.where(valid, r, 0.0)
    if mode in ("clip", "clip_delta"):
        r = torch.where(valid, torch.clamp(r - eta, max=0.0), 0.0)
    if mode in ("delta", "clip_delta"):
        next_r = F.pad(r[:, 1:], (0, 1))
        next_valid = F.pad(valid[:, 1:], (0, 1), value=False)
        r = torch.where(next_valid, r - next_r, r)
    return r.squeeze(0) if squeeze else r
