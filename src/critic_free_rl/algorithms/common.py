"""Tensor pieces shared by the estimators and the losses.

Shapes: B = samples (prompts x G), T = padded response length. ``mask`` arguments are
bool [B, T] (``response_mask``) unless stated; ``group_ids`` is long [B]. Group
statistics are gathered back per sample, so every group helper maps [B] -> [B].
Everything is vectorised over samples (scatter via ``index_add_``); the only Python loop
is over time in :func:`discounted_cumsum` when ``discount != 1``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from critic_free_rl.algorithms.registry import DENSE_MODES, AdvantageInput, AdvantageOutput

if TYPE_CHECKING:
    from critic_free_rl.config.schema import AlgorithmConfig

#: added to a group's std before dividing (GRPO)
GROUP_STD_EPS = 1e-6
#: added to the batch variance before whitening
WHITEN_EPS = 1e-8


# --------------------------------------------------------------------------- masked
def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """sum(x * mask) / max(sum(mask), 1), over all elements or along ``dim``.

    Masked-out entries are dropped with ``where`` (a non-finite value there stays out).
    """
    kept, count = zero_outside(x, mask), mask.to(x.dtype)
    if dim is None:
        return kept.sum() / count.sum().clamp(min=1)
    return kept.sum(dim) / count.sum(dim).clamp(min=1)


def zero_outside(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` where ``mask`` is set, else 0 (same shape as ``x``)."""
    return torch.where(mask.bool(), x, 0.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population (biased) variance of the masked elements: 0-dim."""
    return masked_mean((x - masked_mean(x, mask)) ** 2, mask)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked elements; 0 outside ``mask``."""
    return (x - masked_mean(x, mask)) * torch.rsqrt(masked_var(x, mask) + WHITEN_EPS) * mask


# --------------------------------------------------------------------------- groups
def group_sum(x: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """[B] -> [B]: out_i = sum_{j : g_j = g_i} x_j. Ids need not be contiguous."""
    _, dense_ids = torch.unique(group_ids, return_inverse=True)
    totals = x.new_zeros(x.shape[0]).index_add_(0, dense_ids, x)
    return totals[dense_ids]


def group_sizes(group_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[B] -> [B]: n_i = number of samples in sample i's group."""
    return group_sum(torch.ones(group_ids.shape[0], dtype=dtype, device=group_ids.device), group_ids)


def group_moments(
    x: torch.Tensor, group_ids: torch.Tensor, mask: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, unbiased std and element count of a group's masked elements, each [B].

    ``x`` is [B] (one value per sample) or [B, T] with ``mask`` [B, T] picking the values
    (several per sample, e.g. step rewards). The std is 0 for a group with <= 1 element.
    """
    if x.dim() == 1:
        x = x[:, None]
    m = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    count = group_sum(m.sum(-1), group_ids)
    mean = group_sum((x * m).sum(-1), group_ids) / count.clamp(min=1)
    sq_dev = group_sum(((x - mean[:, None]) ** 2 * m).sum(-1), group_ids)
    std = torch.where(count > 1, (sq_dev / (count - 1).clamp(min=1)).sqrt(), 0.0)
    return mean, std, count


def leave_one_out_centred(
    returns: torch.Tensor, seq_returns: torch.Tensor, group_ids: torch.Tensor
) -> torch.Tensor:
    """[B, T]: G_{i,t} - mean_{j != i, g_j = g_i} R_j; 0 for a group of one (no other sample).

    ``returns`` G [B, T], ``seq_returns`` R [B]. The baseline uses only the other
    samples' returns, so it never depends on sample i's actions.
    """
    n = group_sizes(group_ids, seq_returns.dtype)
    others = (group_sum(seq_returns, group_ids) - seq_returns) / (n - 1).clamp(min=1)
    return torch.where((n > 1)[:, None], returns - others[:, None], 0.0)


def group_centered_returns(
    returns: torch.Tensor, seq_returns: torch.Tensor, group_ids: torch.Tensor
) -> torch.Tensor:
    """Group-mean centring generalised to dense returns, [B, T].

        C_{i,t} = (n-1)/n * (G_{i,t} - mean_{j != i} R_j)

    With sequence-level rewards G_{i,t} = R_i and C_i = R_i - mean_j R_j (the textbook
    group-mean centring). 0 for groups of size 1.
    """
    n = group_sizes(group_ids, seq_returns.dtype)
    return ((n - 1) / n)[:, None] * leave_one_out_centred(returns, seq_returns, group_ids)


# --------------------------------------------------------------------------- time
def discounted_cumsum(x: torch.Tensor, mask: torch.Tensor, discount: float) -> torch.Tensor:
    """Reverse discounted cumulative sum along T: y_t = x_t + discount * y_{t+1}.

    ``x`` is zeroed outside ``mask`` first and ``y`` is 0 there. ``discount == 1`` is the
    plain reverse cumsum sum_{t' >= t} x_{t'} (vectorised); otherwise a loop over time.
    """
    x = x * mask
    if discount == 1.0:
        return x.flip(-1).cumsum(-1).flip(-1) * mask
    running = x.new_zeros(x.shape[0])
    out = []
    for t in reversed(range(x.shape[-1])):
        running = x[:, t] + discount * running
        out.append(running)
    return torch.stack(out[::-1], dim=-1) * mask


def returns_to_go(batch: AdvantageInput, gamma: float = 1.0) -> torch.Tensor:
    """[B, T]: G_{i,t} = sum_{t' >= t} gamma^{t'-t} r_{i,t'} over the response tokens."""
    return discounted_cumsum(batch.token_rewards, batch.response_mask, gamma)


def sequence_scores(token_rewards: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] -> [B]: R_i = sum_t r_{i,t} over response tokens (KL penalty included)."""
    return (token_rewards * response_mask).sum(-1)


def last_token(response_mask: torch.Tensor) -> torch.Tensor:
    """bool [B, T]: each sample's last response token."""
    next_in_response = torch.nn.functional.pad(response_mask[:, 1:], (0, 1), value=False)
    return response_mask & ~next_in_response


def split_outcome(batch: AdvantageInput) -> tuple[torch.Tensor, torch.Tensor]:
    """(o [B], d [B, T]): the outcome and the rest of ``token_rewards`` (step rewards + KL).

    ``d = token_rewards - o * [t = last response token]``. Without ``batch.outcome`` the
    rewards are taken as sequence-level: o_i = sum_t r_{i,t} and d = 0.
    """
    if batch.outcome is None:
        return sequence_scores(batch.token_rewards, batch.response_mask), torch.zeros_like(batch.token_rewards)
    outcome = batch.outcome.to(batch.token_rewards.dtype)
    rest = batch.token_rewards - outcome[:, None] * last_token(batch.response_mask)
    return outcome, rest * batch.response_mask


# --------------------------------------------------------------------------- estimator glue
def check_dense_mode(cfg: AlgorithmConfig, estimator: str) -> None:
    """Raise a ValueError naming ``algorithm.dense_mode`` unless it is one of DENSE_MODES, for
    estimators that branch on it (start-up validation checks the declared modes; this guards
    direct calls, where an unknown mode would silently take the other branch)."""
    if cfg.dense_mode not in DENSE_MODES:
        raise ValueError(
            f"estimator {estimator!r} supports algorithm.dense_mode in {list(DENSE_MODES)}, "
            f"got {cfg.dense_mode!r}"
        )


def make_output(
    advantages: torch.Tensor, returns: torch.Tensor, response_mask: torch.Tensor, whiten: bool
) -> AdvantageOutput:
    """Zero both outside ``response_mask``; whiten advantages over the masked batch if asked."""
    advantages = masked_whiten(advantages, response_mask) if whiten else advantages * response_mask
    return AdvantageOutput(advantages=advantages, returns=returns * response_mask)
