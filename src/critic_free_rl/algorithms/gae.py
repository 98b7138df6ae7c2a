"""Generalised Advantage Estimation for PPO (Schulman et al. 2016, arXiv 1506.02438).

Shapes: token_rewards, values, response_mask [B, T]; one token = one action. Values
after a sample's last response token are 0 (terminal)::

    delta_t = r_t + gamma * V_{t+1} - V_t
    A_t     = sum_{l >= 0} (gamma * lam)^l * delta_{t+l}
    returns = A + V                      (targets of the value loss, before whitening)

The advantages are then whitened over the masked batch. The success reward, dense PRM
step rewards and the per-token KL penalty (``kl_in == "reward"``) simply enter as r_t;
``dense_mode`` does not apply.

The shaping's bound with a critic: with lam = 1, A_t = G_t - V_t, and V_t depends only on
the prefix up to t, so appending steps worth 0 changes no advantage of the original
tokens and appending negative ones only lowers them, whatever the critic (before the
whitening). With lam < 1 the critic's values of the appended tokens enter A_t through the
bootstrap (weights (gamma * lam)^{t'-t}), so a step worth 0 can move A_t, by as much as
the critic errs there: the bound holds only as far as the critic is accurate.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from critic_free_rl.algorithms.common import discounted_cumsum, make_output
from critic_free_rl.algorithms.registry import DENSE_MODES, AdvantageInput, AdvantageOutput, register_estimator

if TYPE_CHECKING:
    from critic_free_rl.config.schema import AlgorithmConfig


@register_estimator("gae", critic=True, dense_modes=DENSE_MODES)
def gae(batch: AdvantageInput, cfg: AlgorithmConfig) -> AdvantageOutput:
    """GAE(gamma, lam) with critic ``batch.values``; advantages whitened, returns = A + V."""
    if batch.values is None:
        raise ValueError("estimator 'gae' needs critic values (set algorithm.use_critic=true)")
    mask = batch.response_mask
    values = batch.values * mask
    next_values = torch.nn.functional.pad(values[:, 1:], (0, 1))
    deltas = batch.token_rewards + cfg.gamma * next_values - values
    advantages = discounted_cumsum(deltas, mask, cfg.gamma * cfg.lam)
    return make_output(advantages, advantages + values, mask, whiten=True)
