"""GRPO advantages (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300, section 4.1).

Shapes: B samples in groups of n (``group_ids``), T padded response tokens.

Outcome supervision (sequence-level reward R_i, one per sample)::

    A_{i,t} = (R_i - mean_g R) / (std_g R + eps)      for every response token t

Process supervision, ``dense_mode == "process"`` (section 4.1.3). Each sample is cut into
steps that end at its ``reward_mask`` positions (its last response token always ends a
step). Step k of sample i carries s_{i,k} = sum of the token rewards of the tokens in
that step, i.e. every token's reward is *folded* into the first step ending at or after
it. Then, with mean/std over all step rewards of the group (std unbiased)::

    s~_{i,k} = (s_{i,k} - mean_g s) / (std_g s + eps)
    A_{i,t}  = sum_{k : end(k) >= t} s~_{i,k}

KL in the reward (``kl_in == "reward"``): the ``-kl_coef * k1`` penalty sits on every
token without setting ``reward_mask``; by the folding rule it is added to the reward of
the step containing the token and group-normalised with it. With sequence-level rewards
there is one step per sample, s_{i,1} = R_i = success - kl_coef * sum_t k1_t (the KL-in-
sequence-reward of RLOO), and the process form equals the outcome form exactly - so
one code path serves both.

Return-to-go form, ``dense_mode == "return_to_go"`` (G_{i,t} = sum_{t' >= t} r_{i,t'},
R_i = G_{i,0})::

    A_{i,t} = (n-1)/n * (G_{i,t} - mean_{j != i} R_j) / (std_g R + eps)

whose subtracted baseline never depends on sample i's own rewards; the std (a scale)
does, as in GRPO. With sequence-level rewards it equals the outcome formula.

``scale_by_std=False`` drops the std division (Dr. GRPO, ``cfg.norm_by_std=False``).
``cfg.global_norm`` additionally whitens the advantages over the masked batch.
A group of size 1 has zero variance and gets zero advantages.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from critic_free_rl.algorithms.common import (
    DENSE_MODES,
    GROUP_STD_EPS,
    check_dense_mode,
    discounted_cumsum,
    group_centered_returns,
    group_moments,
    make_output,
    returns_to_go,
    sequence_scores,
)
from critic_free_rl.algorithms.registry import AdvantageInput, AdvantageOutput, register_estimator

if TYPE_CHECKING:
    from critic_free_rl.config.schema import AlgorithmConfig


def step_ends(reward_mask: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """bool [B, T]: ``reward_mask`` plus each sample's last response token, inside the response."""
    next_in_response = torch.nn.functional.pad(response_mask[:, 1:], (0, 1), value=False)
    last_token = response_mask & ~next_in_response
    return (reward_mask | last_token) & response_mask


def step_rewards(
    token_rewards: torch.Tensor, ends: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """[B, T]: at a step end, the sum of the token rewards of its step; 0 elsewhere.

    Token t belongs to step k = (number of step ends strictly before t).
    """
    ends_long = ends.long()
    step_index = ends_long.cumsum(-1) - ends_long
    rewards = token_rewards * response_mask
    per_step = rewards.new_zeros(rewards.shape[0], rewards.shape[1] + 1)
    per_step.scatter_add_(1, step_index, rewards)
    return per_step.gather(1, step_index) * ends


def _process_advantages(batch: AdvantageInput, scale_by_std: bool) -> torch.Tensor:
    """DeepSeekMath process supervision: reverse cumsum of group-normalised step rewards."""
    ends = step_ends(batch.reward_mask, batch.response_mask)
    steps = step_rewards(batch.token_rewards, ends, batch.response_mask)
    mean, std, _ = group_moments(steps, batch.group_ids, ends)
    normalized = (steps - mean[:, None]) * ends
    if scale_by_std:
        normalized = normalized / (std[:, None] + GROUP_STD_EPS)
    return discounted_cumsum(normalized, batch.response_mask, 1.0)


def _return_to_go_advantages(
    batch: AdvantageInput, returns: torch.Tensor, scale_by_std: bool
) -> torch.Tensor:
    """(n-1)/n * (G_{i,t} - mean_{j != i} R_j), optionally divided by the group std of R."""
    seq_returns = sequence_scores(batch.token_rewards, batch.response_mask)
    advantages = group_centered_returns(returns, seq_returns, batch.group_ids)
    if scale_by_std:
        advantages = advantages / (group_moments(seq_returns, batch.group_ids)[1][:, None] + GROUP_STD_EPS)
    return advantages


def group_normalized_advantages(
    batch: AdvantageInput, cfg: AlgorithmConfig, scale_by_std: bool, estimator: str
) -> AdvantageOutput:
    """GRPO family; ``returns`` are the undiscounted returns-to-go G_{i,t} [B, T]."""
    check_dense_mode(cfg, DENSE_MODES, estimator)
    returns = returns_to_go(batch)
    if cfg.dense_mode == "process":
        advantages = _process_advantages(batch, scale_by_std)
    else:
        advantages = _return_to_go_advantages(batch, returns, scale_by_std)
    return make_output(advantages, returns, batch.response_mask, whiten=cfg.global_norm)


@register_estimator("grpo")
def grpo(batch: AdvantageInput, cfg: AlgorithmConfig) -> AdvantageOutput:
    """GRPO; divides by the group std unless ``cfg.norm_by_std`` is False."""
    return group_normalized_advantages(batch, cfg, scale_by_std=cfg.norm_by_std, estimator="grpo")
