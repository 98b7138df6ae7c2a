"""Reward-side terms of one training step, as named functions on plain tensors.

Shapes: B samples, T padded response tokens; ``mask`` = response_mask bool [B, T].
"""
from __future__ import annotations

import torch

from critic_free_rl.algorithms.common import group_moments, zero_outside
from critic_free_rl.algorithms.losses import kl_penalty


def add_kl_penalty(
    token_rewards: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL to the reference paid in the reward (``kl_in: reward``).

        k1_{i,t} = old_logp_{i,t} - ref_logp_{i,t}             (detached)
        r'_{i,t} = r_{i,t} - coef * k1_{i,t}                    on response tokens
        kl_i     = sum_t k1_{i,t}                               over response tokens

    Returns (r' [B, T], kl [B]); the penalty added to sample i's return is ``-coef * kl_i``.
    ``reward_mask`` is left as it is: the penalty marks no step end.
    """
    k1 = zero_outside(kl_penalty(old_logp, ref_logp, "k1").detach(), mask)
    return token_rewards - coef * k1, k1.sum(-1)


def flat_groups(scores: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """bool [B]: sample i's group has all its ``scores`` [B] equal (or one sample), so a group
    baseline leaves it no signal (``algorithm.filter_zero_variance_groups``)."""
    return group_moments(scores, group_ids)[1] == 0
