"""RLOO advantages (Ahmadian et al. 2024, "Back to Basics", arXiv 2402.14740).

Shapes: token_rewards [B, T], group_ids [B] (n samples per prompt; validation asks n >= 2,
a group of one gets zero advantages).
Each sample is baselined by the mean return of the *other* samples of its group::

    b_i     = mean_{j != i, g_j = g_i} R_j            R_j = sum_t r_{j,t}
    A_{i,t} = G_{i,t} - b_i                           G_{i,t} = sum_{t' >= t} r_{i,t'}

With sequence-level rewards (only the last token carries one) G_{i,t} = R_i, so
A_{i,t} = R_i - b_i, the textbook RLOO. Dense rewards enter only this return-to-go way
(``dense_mode: return_to_go``): b_i never depends on sample i's actions, so the estimator
stays unbiased. The success term and the KL penalty (``kl_in: reward``) are part of r,
hence of R_j and G_{i,t}. A step worth 0 changes no advantage and a negative step lowers
G_{i,t} of the tokens before it while b_i stays: the shaping's bound is kept.
``cfg.global_norm`` additionally whitens the advantages over the masked batch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from critic_free_rl.algorithms.common import leave_one_out_centred, make_output, returns_to_go, sequence_scores
from critic_free_rl.algorithms.registry import AdvantageInput, AdvantageOutput, register_estimator

if TYPE_CHECKING:
    from critic_free_rl.config.schema import AlgorithmConfig


@register_estimator("rloo", group_baseline=True, dense_modes=("return_to_go",))
def rloo(batch: AdvantageInput, cfg: AlgorithmConfig) -> AdvantageOutput:
    """Leave-one-out baselined returns-to-go; ``returns`` = G_{i,t} [B, T]."""
    returns = returns_to_go(batch)
    seq_returns = sequence_scores(batch.token_rewards, batch.response_mask)
    advantages = leave_one_out_centred(returns, seq_returns, batch.group_ids)
    return make_output(advantages, returns, batch.response_mask, whiten=cfg.global_norm)
