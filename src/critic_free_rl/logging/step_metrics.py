"""The scalars of one training step, built in one place (TensorBoard, metrics.jsonl, the log line)."""
from __future__ import annotations

from typing import Optional

import torch

from critic_free_rl.logging.study_stats import study_metrics


def step_metrics(*, success: torch.Tensor, dense_return: torch.Tensor, kl_return: torch.Tensor, success_coef: float,
                 flat: torch.Tensor, response_mask: torch.Tensor, finished: list[bool],
                 reward_metrics: dict[str, float], update: Optional[dict[str, float]], lr: float,
                 times: dict[str, float], world_size: int = 1, advantages: Optional[torch.Tensor] = None,
                 token_returns: Optional[torch.Tensor] = None, values: Optional[torch.Tensor] = None,
                 loss_mask: Optional[torch.Tensor] = None, extra: Optional[dict[str, float]] = None) -> dict[str, float]:
    """Scalars of one step from its parts (B samples, T response tokens).

    ``reward/mean`` and ``reward/std`` are over the return each sample is optimised for::

        R_i = success_coef * success_i + dense_return_i + kl_return_i

    with ``success`` [B] before its coefficient, ``dense_return`` [B] with ``dense_coef``
    applied, ``kl_return`` [B] the summed KL-in-reward penalty (0 without it). ``flat`` [B]:
    samples in zero-variance groups; ``response_mask`` [B, T]; ``finished`` [B]: ended on EOS;
    ``reward_metrics``: the reward pipeline's own scalars; ``update``: the learner's (None when
    the step's update was skipped for non-finite rewards or advantages; its keys go under
    ``train/`` unless they name their own group, like ``ratio/mean``); ``times``: the phase
    timer's ``time/<phase>_s``; ``world_size``: ranks, each generating as many tokens as this one.
    ``advantages``, ``token_returns`` [B, T] (the estimator's returns) (and PPO's ``values``) over ``loss_mask`` [B, T] give
    :func:`~critic_free_rl.logging.study_stats.study_metrics`; ``extra``: further scalars as they are.
    """
    returns = success_coef * success + dense_return + kl_return
    metrics = {
        "reward/mean": float(returns.mean()),
        "reward/std": float(returns.std()) if len(returns) > 1 else 0.0,
        "reward/kl_mean": float(kl_return.mean()),
        "reward/zero_variance_group_frac": float(flat.float().mean()),
        "response/length_tokens": float(response_mask.sum(1).float().mean()),
        "response/truncated_frac": 1.0 - sum(finished) / len(finished),
        **reward_metrics,
    }
    if update is None:
        metrics["train/update_skipped"] = 1.0
    else:
        metrics.update({k if "/" in k else f"train/{k}": v for k, v in update.items()})
    if advantages is not None and token_returns is not None and loss_mask is not None:
        metrics.update(study_metrics(advantages, token_returns, values, loss_mask))
    metrics.update(extra or {})
    metrics["train/lr"] = lr
    metrics.update(times)
    tokens = float(response_mask.sum()) * world_size
    metrics["perf/generated_tokens_per_s"] = tokens / max(times.get("time/generate_s", 1e-9), 1e-9)
    return metrics
