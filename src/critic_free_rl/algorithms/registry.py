"""Table of advantage estimators keyed by name (as verl's ``AdvantageEstimator``).

An estimator is a pure function on tensors::

    fn(batch: AdvantageInput, cfg: AlgorithmConfig) -> AdvantageOutput

Adding one is one file in this package that decorates its function with
``@register_estimator("name")`` plus one YAML in ``configs/algorithm/``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import torch

if TYPE_CHECKING:
    from critic_free_rl.config.schema import AlgorithmConfig


@dataclass
class AdvantageInput:
    """The one input contract shared by every estimator.

    B = number of samples (prompts x G), T = padded response length.

    - ``token_rewards`` [B, T] float: the success reward sits on the last response token,
      dense step rewards on the last token of each step, and (when ``kl_in == "reward"``)
      the per-token KL penalty ``-kl_coef * k1`` on every response token.
    - ``reward_mask`` [B, T] bool: positions that carry an outcome/step reward
      (step ends and the last response token); KL penalties do not set it.
    - ``response_mask`` [B, T] bool: real response tokens.
    - ``group_ids`` [B] long: samples with the same id answer the same prompt.
    - ``values`` [B, T] float or None: critic values (PPO only).
    """

    token_rewards: torch.Tensor
    reward_mask: torch.Tensor
    response_mask: torch.Tensor
    group_ids: torch.Tensor
    values: Optional[torch.Tensor] = None


@dataclass
class AdvantageOutput:
    """``advantages`` and ``returns`` are [B, T], zero outside ``response_mask``."""

    advantages: torch.Tensor
    returns: torch.Tensor


Estimator = Callable[[AdvantageInput, "AlgorithmConfig"], AdvantageOutput]
_ESTIMATORS: dict[str, Estimator] = {}


def register_estimator(name: str) -> Callable[[Estimator], Estimator]:
    def deco(fn: Estimator) -> Estimator:
        if name in _ESTIMATORS:
            raise ValueError(f"estimator {name!r} registered twice")
        _ESTIMATORS[name] = fn
        return fn

    return deco


def get_estimator(name: str) -> Estimator:
    if name not in _ESTIMATORS:
        raise KeyError(f"unknown estimator {name!r}; valid choices: {sorted(_ESTIMATORS)}")
    return _ESTIMATORS[name]


def estimator_names() -> list[str]:
    return sorted(_ESTIMATORS)
