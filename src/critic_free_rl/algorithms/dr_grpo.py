"""Dr. GRPO advantages (Liu et al. 2025, "Understanding R1-Zero-Like Training", arXiv 2503.20783).

GRPO without the std division (shapes, o, d and D as in :mod:`.grpo`)::

    A_{i,t} = o_i - mean_g o                                         (outcome only)
    A_{i,t} = o_i - mean_g o + D_{i,t}                               (dense_mode "process")
    A_{i,t} = o_i - mean_g o + (n-1)/n * (D_{i,t} - mean_{j != i} D_j)
            = (n-1)/n * (G_{i,t} - mean_{j != i} R_j)                (dense_mode "return_to_go")

The success term is the centred o; step rewards and the KL-in-reward penalty are in D,
never shifted by a statistic of the sample's own steps (see :mod:`.grpo`).
Its other half, no per-sequence length normalisation, is the loss aggregation
``loss_agg: seq-mean-token-sum-norm`` (see :func:`critic_free_rl.algorithms.losses.aggregate`).
``cfg.norm_by_std`` is ignored: the std division is always off.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from critic_free_rl.algorithms.grpo import group_normalized_advantages
from critic_free_rl.algorithms.registry import DENSE_MODES, AdvantageInput, AdvantageOutput, register_estimator

if TYPE_CHECKING:
    from critic_free_rl.config.schema import AlgorithmConfig


@register_estimator("dr_grpo", group_baseline=True, dense_modes=DENSE_MODES)
def dr_grpo(batch: AdvantageInput, cfg: AlgorithmConfig) -> AdvantageOutput:
    """GRPO advantages without the group-std division."""
    return group_normalized_advantages(batch, cfg, scale_by_std=False, estimator="dr_grpo")
