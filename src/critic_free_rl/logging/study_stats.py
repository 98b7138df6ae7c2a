"""The statistics a PPO-vs-critic-free study reads, as pure functions of plain tensors.

Every function takes a [B, T] bool ``mask`` (the tokens that count) and tensors of the
same shape; none of them moves data or touches a model. An empty mask gives NaN, which
TensorBoard shows as a gap rather than a misleading zero.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

NAN = float("nan")


def masked_summary(x: torch.Tensor, mask: torch.Tensor, prefix: str,
                   stats: tuple[str, ...] = ("mean", "std", "min", "max")) -> dict[str, float]:
    """``{prefix}/mean|std|min|max`` of ``x`` [B, T] over ``mask`` [B, T].

    std is the population one, sqrt(mean((x - mean)^2)) over the N masked tokens
    (an estimator's whitening uses the same), so one token gives 0, not NaN."""
    v = x[mask].double()
    if v.numel() == 0:
        return {f"{prefix}/{s}": NAN for s in stats}
    m = v.mean()
    values = {"mean": m, "std": ((v - m) ** 2).mean().sqrt(), "min": v.min(), "max": v.max()}
    return {f"{prefix}/{s}": float(values[s]) for s in stats}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over ``mask``: 1 for a perfect critic, 0 for one that predicts
    the mean, negative for one worse than that. NaN when the returns do not vary."""
    r, v = returns[mask].double(), values[mask].double()
    if r.numel() == 0:
        return NAN
    var_r = r.var(unbiased=False)
    if var_r <= 0:
        return NAN
    return float(1.0 - (r - v).var(unbiased=False) / var_r)


class RatioStats:
    """Importance ratio rho = exp(logp - old_logp) over the tokens of an update's micro-batches:
    :meth:`add` each micro-batch, :meth:`metrics` gives ``ratio/mean|min|max`` over all of them
    (a token mean over the whole update, not a mean of micro-batch means)."""

    def __init__(self) -> None:
        self.total, self.count, self.lo, self.hi = 0.0, 0, math.inf, -math.inf

    def add(self, logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> None:
        """``logp``, ``old_logp``, ``mask``: [b, t] of one micro-batch (any device)."""
        rho = torch.exp(logp.detach().double() - old_logp.detach().double())[mask.bool()]
        if rho.numel():
            self.total += float(rho.sum())
            self.count += rho.numel()
            self.lo, self.hi = min(self.lo, float(rho.min())), max(self.hi, float(rho.max()))

    def metrics(self) -> dict[str, float]:
        if not self.count:
            return {"ratio/mean": NAN, "ratio/min": NAN, "ratio/max": NAN}
        return {"ratio/mean": self.total / self.count, "ratio/min": self.lo, "ratio/max": self.hi}


def logprob_gap(engine_logp: torch.Tensor, learner_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """``logprob/engine_gap_mean|max``: |engine - learner| log-prob of each sampled token over
    ``mask`` [B, T]; how far the rollout engine's sampling log-probs are from the learner's,
    i.e. how wrong they would be as PPO's old log-probs."""
    gap = (engine_logp.double() - learner_logp.double()).abs()[mask]
    if gap.numel() == 0:
        return {"logprob/engine_gap_mean": NAN, "logprob/engine_gap_max": NAN}
    return {"logprob/engine_gap_mean": float(gap.mean()), "logprob/engine_gap_max": float(gap.max())}


def study_metrics(advantages: torch.Tensor, returns: torch.Tensor, values: Optional[torch.Tensor],
                  loss_mask: torch.Tensor) -> dict[str, float]:
    """``adv/*``, ``return/mean|std`` and (with a critic's ``values``) ``value/explained_variance``,
    all over ``loss_mask`` [B, T] (response tokens that the update trains on)."""
    out = masked_summary(advantages, loss_mask, "adv")
    out.update(masked_summary(returns, loss_mask, "return", ("mean", "std")))
    if values is not None:
        out["value/explained_variance"] = explained_variance(values, returns, loss_mask)
    return out
