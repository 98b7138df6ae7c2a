"""Mean-baseline REINFORCE: returns-to-go minus the group mean of the sequence returns.

Shapes: token_rewards, response_mask [B, T]; group_ids [B]::

    G_{i,t} = sum_{t' >= t} gamma^{t'-t} r_{i,t'}        R_i = sum_t r_{i,t}
    A_{i,t} = G_{i,t} - mean_{g_j = g_i} R_j

The success reward, the shaped step rewards and the KL-in-reward penalty are all in r.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from critic_free_rl.algorithms import AdvantageInput, AdvantageOutput, register_estimator
from critic_free_rl.algorithms.common import group_moments, make_output, returns_to_go, sequence_scores

if TYPE_CHECKING:
    from critic_free_rl.config.schema import AlgorithmConfig


@register_estimator("mean_baseline", group_baseline=True, critic=False, dense_modes=("return_to_go",))
def mean_baseline(batch: AdvantageInput, cfg: AlgorithmConfig) -> AdvantageOutput:
    """Group-mean baselined returns-to-go; ``returns`` = G_{i,t} [B, T]."""
    returns = returns_to_go(batch, cfg.gamma)
    group_mean, _, _ = group_moments(sequence_scores(batch.token_rewards, batch.response_mask), batch.group_ids)
    return make_output(returns - group_mean[:, None], returns, batch.response_mask, whiten=cfg.global_norm)
