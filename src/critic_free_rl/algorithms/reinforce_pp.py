"""REINFORCE++ advantages (Hu 2025, arXiv 2501.03262; OpenRLHF ``reinforce`` / ``reinforce_baseline``).

Shapes: token_rewards [B, T] (success + PRM step rewards + the per-token KL penalty
when ``kl_in == "reward"``), response_mask [B, T], group_ids [B].

``reinforce_pp``: per-token discounted return-to-go, whitened over the masked batch::

    G_{i,t} = sum_{t' >= t} gamma^{t'-t} r_{i,t'}
    A_{i,t} = (G_{i,t} - mean_batch G) / std_batch G

``reinforce_pp_baseline``: subtract the group mean of the sequence returns first::

    A_{i,t} = whiten_batch( (n-1)/n * (G_{i,t} - mean_{j != i} R_j) ),   R_j = sum_t r_{j,t}

With sequence-level rewards and gamma = 1 the inner term is R_i - mean_g R (the textbook
form); with dense rewards its baseline only uses the other samples' returns, so it
never depends on sample i's actions (the (n-1)/n scale cancels in the whitening when
all groups have the same size). Dense rewards always enter as returns-to-go, so
``dense_mode`` must be ``return_to_go``. Whitening is part of the definition (always on).

The success term and the KL-in-reward penalty are part of r. Before the whitening
(:func:`baselined_returns`) the shaping's bound is kept: a step worth 0 changes no G or
R, and a negative one lowers G_{i,t} of the tokens before it while the baseline, the other
samples' returns, stays. The batch-wide whitening then shifts every token by the batch
mean and scales by the batch std, which a sample's own steps enter.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from critic_free_rl.algorithms.common import group_centered_returns, make_output, returns_to_go, sequence_scores
from critic_free_rl.algorithms.registry import AdvantageInput, AdvantageOutput, register_estimator

if TYPE_CHECKING:
    from critic_free_rl.config.schema import AlgorithmConfig


def baselined_returns(batch: AdvantageInput, gamma: float) -> torch.Tensor:
    """[B, T]: (n-1)/n * (G_{i,t} - mean_{j != i} R_j), REINFORCE++-baseline before whitening."""
    seq_returns = sequence_scores(batch.token_rewards, batch.response_mask)
    return group_centered_returns(returns_to_go(batch, gamma), seq_returns, batch.group_ids)


@register_estimator("reinforce_pp", dense_modes=("return_to_go",))
def reinforce_pp(batch: AdvantageInput, cfg: AlgorithmConfig) -> AdvantageOutput:
    """Globally whitened discounted returns-to-go; ``returns`` = G_{i,t} [B, T]."""
    returns = returns_to_go(batch, cfg.gamma)
    return make_output(returns, returns, batch.response_mask, whiten=True)


@register_estimator("reinforce_pp_baseline", group_baseline=True, dense_modes=("return_to_go",))
def reinforce_pp_baseline(batch: AdvantageInput, cfg: AlgorithmConfig) -> AdvantageOutput:
    """Group-mean baselined, then globally whitened returns-to-go; ``returns`` = G_{i,t}."""
    centred = baselined_returns(batch, cfg.gamma)
    return make_output(centred, returns_to_go(batch, cfg.gamma), batch.response_mask, whiten=True)
