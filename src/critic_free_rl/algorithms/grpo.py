"""GRPO advantages (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300, section 4.1), in a form
that keeps the bound of shaped step rewards.

Shapes: B samples in groups of n (``group_ids``), T padded response tokens. The rewards
split into the outcome o_i [B] (``batch.outcome``: success, ORM) and the rest
d_{i,t} [B, T] = shaped step rewards on step ends + the KL-in-reward penalty
``-kl_coef * k1`` on every token (``kl_in == "reward"``); D_{i,t} = sum_{t' >= t} d_{i,t'}
is the dense return-to-go and D_i = D_{i,0}. The outcome term is normalised by its own
group statistics only::

    a_i = (o_i - mean_g o) / (std_g o + eps)          (std unbiased; without it: Dr. GRPO)

Outcome supervision (no dense rewards, no KL in the reward): A_{i,t} = a_i on every token.

Process form, ``dense_mode == "process"``::

    A_{i,t} = a_i + D_{i,t}

Return-to-go form, ``dense_mode == "return_to_go"``::

    A_{i,t} = a_i + (n-1)/n * (D_{i,t} - mean_{j != i} D_j)

Neither form shifts a sample's step rewards by a statistic that its own steps enter, nor
scales them by one: a step worth 0 changes no advantage, and a negative step only lowers
the advantages of the tokens before it (and, in the return-to-go form, raises the other
samples' by lowering their baseline). DeepSeekMath's process form normalises all step
rewards by the group's mean and std of steps instead; padding a solution with steps worth
0 under Clip (whose steps are <= 0, so the mean is negative) then raises its advantages
(tests/test_estimator_bounds.py keeps that form as the counter-example). The success
term sits in a_i; the KL-in-reward term sits in D with the step rewards, on the tokens it
was paid on, unnormalised. Without ``batch.outcome`` all rewards count as the outcome
(o_i = sum_t r_{i,t}, D = 0). A group of one gets a_i = 0 (zero outcome variance).
``cfg.global_norm`` additionally whitens the advantages over the masked batch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from critic_free_rl.algorithms.common import (
    GROUP_STD_EPS,
    check_dense_mode,
    discounted_cumsum,
    group_centered_returns,
    group_moments,
    make_output,
    returns_to_go,
    split_outcome,
)
from critic_free_rl.algorithms.registry import DENSE_MODES, AdvantageInput, AdvantageOutput, register_estimator

if TYPE_CHECKING:
    from critic_free_rl.config.schema import AlgorithmConfig


def outcome_advantages(outcome: torch.Tensor, group_ids: torch.Tensor, scale_by_std: bool) -> torch.Tensor:
    """[B]: a_i = o_i - mean_g o, divided by (std_g o + eps) when ``scale_by_std``."""
    mean, std, _ = group_moments(outcome, group_ids)
    centred = outcome - mean
    return centred / (std + GROUP_STD_EPS) if scale_by_std else centred


def group_normalized_advantages(
    batch: AdvantageInput, cfg: AlgorithmConfig, scale_by_std: bool, estimator: str
) -> AdvantageOutput:
    """GRPO family (see the module docstring); ``returns`` are the undiscounted returns-to-go G_{i,t}."""
    check_dense_mode(cfg, estimator)
    outcome, rest = split_outcome(batch)
    dense = discounted_cumsum(rest, batch.response_mask, 1.0)
    if cfg.dense_mode == "return_to_go":
        dense = group_centered_returns(dense, dense[:, 0], batch.group_ids)
    advantages = outcome_advantages(outcome, batch.group_ids, scale_by_std)[:, None] + dense
    return make_output(advantages, returns_to_go(batch), batch.response_mask, whiten=cfg.global_norm)


@register_estimator("grpo", group_baseline=True, dense_modes=DENSE_MODES)
def grpo(batch: AdvantageInput, cfg: AlgorithmConfig) -> AdvantageOutput:
    """GRPO; divides the outcome term by its group std unless ``cfg.norm_by_std`` is False."""
    return group_normalized_advantages(batch, cfg, scale_by_std=cfg.norm_by_std, estimator="grpo")
