"""Terms the algorithm adds to, or reads from, the task reward before its estimator runs.

KL in the reward (``algorithm.kl_in=reward``), per response token t of sample i::

    r'_{i,t} = r_{i,t} - kl_coef * (log pi_old(y_t) - log pi_ref(y_t))      (k1, detached)

Zero-variance groups: a group whose samples all score the same carries no signal for a
group baseline (every advantage is 0); ``algorithm.filter_zero_variance_groups`` drops them.
"""
from __future__ import annotations

import torch

from critic_free_rl.algorithms.common import zero_variance_groups
from critic_free_rl.algorithms.losses import kl_reward


def add_kl_penalty(token_rewards: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                   coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rewards [B, T], kl_per_sample [B])``: ``token_rewards`` [B, T] plus the k1 penalty
    ``-coef * (old_logp - ref_logp)`` on the response tokens (``mask`` [B, T] bool; 0 elsewhere),
    and each sample's summed penalty (its share of the return)."""
    penalty = kl_reward(old_logp, ref_logp, coef).masked_fill(~mask, 0.0)
    return token_rewards + penalty, penalty.sum(1)


def flat_groups(scores: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """bool [B]: sample i's group (``group_ids`` [B]) has identical ``scores`` [B] (or one sample)."""
    return zero_variance_groups(scores, group_ids)
