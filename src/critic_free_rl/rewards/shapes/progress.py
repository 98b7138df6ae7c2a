"""Progress rewards (PAV, arXiv 2410.08146): a step is worth how much it moves the PRM's
estimate of success.

With ``r_0`` the PRM's score of the prompt alone (its estimate before any step)::

    s_k = r_k - r_{k-1}                       (k = 1 .. K)
    R_k = sum_{j>=k} s_j = r_K - r_{k-1}      R_1 = r_K - r_0

Bounds: with scores in ``[0, 1]`` every ``R_k`` lies in ``[-1, 1]`` whatever the number of
steps (the sum telescopes), so repeating steps cannot accumulate reward; a response is
credited with its net progress from the prompt to its last step. A step that lowers the
estimate is penalised however good the steps around it are.
"""
from __future__ import annotations

import torch

from critic_free_rl.rewards.shapes.registry import register_shape


@register_shape("progress", needs=("prompt_score",))
def progress(scores: torch.Tensor, mask: torch.Tensor, prompt_score: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` scores and ``[B]`` prompt scores ``r_0`` -> ``s_k = r_k - r_{k-1}``."""
    previous = torch.cat([prompt_score.to(scores).unsqueeze(1), scores[:, :-1]], dim=1)
    return scores - previous
