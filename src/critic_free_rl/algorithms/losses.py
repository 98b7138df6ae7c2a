"""Policy / value losses, KL penalties and entropy, on [B, T] per-token tensors.

``logp``, ``old_logp``, ``ref_logp``: log-probabilities of the sampled tokens under the
current, rollout (behaviour) and frozen reference policies; ``mask`` = response_mask.
Metrics are detached 0-dim tensors with plain names.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from critic_free_rl.algorithms.common import masked_mean, zero_outside

if TYPE_CHECKING:
    from critic_free_rl.config.schema import AlgorithmConfig

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k2", "k3")
KL_PLACEMENTS = ("loss", "reward", "none")
#: k3 is clamped to at most this value (as verl's low_var_kl) against exp overflow
K3_MAX = 10.0


def aggregate(
    values: torch.Tensor, mask: torch.Tensor, mode: str, norm_len: Optional[int] = None
) -> torch.Tensor:
    """Reduce per-token ``values`` [B, T] to a scalar; L_i = number of tokens of sample i.

    - ``token-mean``:              sum_{i,t} x / sum_i L_i
    - ``seq-mean-token-mean``:     mean_i (sum_t x_{i,t} / L_i)
    - ``seq-mean-token-sum``:      mean_i sum_t x_{i,t}
    - ``seq-mean-token-sum-norm``: mean_i sum_t x_{i,t} / norm_len  (Dr. GRPO; a constant,
      ``norm_len=None`` uses the padded length T)
    """
    if mode == "token-mean":
        return masked_mean(values, mask)
    if mode == "seq-mean-token-mean":
        return masked_mean(values, mask, dim=-1).mean()
    token_sums = zero_outside(values, mask).sum(-1)
    if mode == "seq-mean-token-sum":
        return token_sums.mean()
    if mode == "seq-mean-token-sum-norm":
        return token_sums.mean() / (norm_len or values.shape[-1])
    raise ValueError(f"unknown algorithm.loss_agg {mode!r}; valid choices: {list(LOSS_AGG_MODES)}")


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate [B, T] of KL(pi || pi_ref) from samples of pi (Schulman's k1/k2/k3).

    With log r = ref_logp - logp:  k1 = -log r,  k2 = (log r)^2 / 2,  k3 = (r - 1) - log r
    (k3 clamped to ``K3_MAX``).
    """
    log_ratio = ref_logp - logp
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return (torch.expm1(log_ratio) - log_ratio).clamp(max=K3_MAX)
    raise ValueError(f"unknown algorithm.kl_estimator {estimator!r}; valid choices: {list(KL_ESTIMATORS)}")


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
    dual_clip: Optional[float] = None,
    loss_agg: str = "token-mean",
    norm_len: Optional[int] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate with separate clip ranges and optional dual clip, aggregated.

        rho = exp(logp - old_logp)
        l_t = max(-A rho, -A clip(rho, 1 - clip_low, 1 + clip_high))
        l_t = min(l_t, -A c)   where A < 0   (dual clip, Ye et al. 2020, c = dual_clip > 1)

    Metrics: ``pg_loss``; ``clip_frac`` (tokens where the clipped term is the larger);
    ``dual_clip_frac`` (tokens capped by the dual clip); ``approx_kl`` (k3 estimate of
    KL(old || current)). All token means over ``mask``.
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    dual_clipped = torch.zeros_like(mask)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"algorithm.dual_clip must be > 1 (or null), got {dual_clip}")
        cap = -advantages * dual_clip
        dual_clipped = (advantages < 0) & (per_token > cap)
        per_token = torch.where(dual_clipped, cap, per_token)
    loss = aggregate(per_token, mask, loss_agg, norm_len)
    metrics = {
        "pg_loss": loss.detach(),
        "clip_frac": masked_mean((clipped > unclipped).to(logp.dtype), mask).detach(),
        "dual_clip_frac": masked_mean(dual_clipped.to(logp.dtype), mask).detach(),
        "approx_kl": masked_mean(kl_penalty(old_logp, logp, "k3"), mask).detach(),
    }
    return loss, metrics


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: Optional[float] = None,
    loss_agg: str = "token-mean",
    norm_len: Optional[int] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss 0.5 * agg(max((V - R)^2, (V_clip - R)^2)).

    V_clip = old_V + clip(V - old_V, -clip, clip); ``clip=None`` disables clipping.
    Metrics: ``vf_loss``, ``vf_clip_frac`` (tokens where the clipped error is the larger).
    """
    clipped_values = values if clip is None else old_values + (values - old_values).clamp(-clip, clip)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped_values - returns) ** 2
    loss = 0.5 * aggregate(torch.maximum(unclipped_err, clipped_err), mask, loss_agg, norm_len)
    metrics = {
        "vf_loss": loss.detach(),
        "vf_clip_frac": masked_mean((clipped_err > unclipped_err).to(values.dtype), mask).detach(),
    }
    return loss, metrics


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """[B, T, V] -> [B, T]: H = logsumexp(z) - sum_v softmax(z)_v z_v."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(-1)


def policy_objective(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: AlgorithmConfig,
    ref_logp: Optional[torch.Tensor] = None,
    entropy: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total actor loss from ``cfg``, all terms aggregated with ``cfg.loss_agg``::

        loss = policy_loss + [kl_in == "loss"] kl_coef * agg(k(logp, ref_logp)) - entropy_coef * agg(H)

    ``ref_logp`` [B, T] is required when ``cfg.kl_in == "loss"`` and ``cfg.kl_coef > 0`` (else only logged as
    ``kl``); ``entropy`` [B, T] (see :func:`entropy_from_logits`) when
    ``cfg.entropy_coef > 0`` (else only logged). Metrics: those of :func:`policy_loss`
    plus ``kl``, ``entropy`` (token means, when given) and ``loss``.
    """
    if cfg.kl_in not in KL_PLACEMENTS:
        raise ValueError(f"unknown algorithm.kl_in {cfg.kl_in!r}; valid choices: {list(KL_PLACEMENTS)}")
    if cfg.kl_in == "loss" and cfg.kl_coef > 0 and ref_logp is None:
        raise ValueError("algorithm.kl_in == 'loss' with kl_coef > 0 needs ref_logp")
    if cfg.entropy_coef > 0 and entropy is None:
        raise ValueError("algorithm.entropy_coef > 0 needs the per-token entropy")
    loss, metrics = policy_loss(
        logp, old_logp, advantages, mask, cfg.clip_ratio_low, cfg.clip_ratio_high,
        cfg.dual_clip, cfg.loss_agg, cfg.loss_norm_len,
    )
    if ref_logp is not None:
        kl = kl_penalty(logp, ref_logp, cfg.kl_estimator)
        metrics["kl"] = masked_mean(kl, mask).detach()
        if cfg.kl_in == "loss":
            loss = loss + cfg.kl_coef * aggregate(kl, mask, cfg.loss_agg, cfg.loss_norm_len)
    if entropy is not None:
        metrics["entropy"] = masked_mean(entropy, mask).detach()
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * aggregate(entropy, mask, cfg.loss_agg, cfg.loss_norm_len)
    metrics["loss"] = loss.detach()
    return loss, metrics
