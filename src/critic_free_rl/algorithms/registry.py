"""Table of advantage estimators keyed by name (as verl's ``AdvantageEstimator``).

An estimator is a pure function on tensors::

    fn(batch: AdvantageInput, cfg: AlgorithmConfig) -> AdvantageOutput

registered with what it needs from the rest of the config::

    @register_estimator("name", group_baseline=True, critic=False, dense_modes=("return_to_go",))

Start-up validation (:mod:`critic_free_rl.config.validate`) reads these declarations, so
adding an estimator is one file plus one YAML in ``configs/algorithm/`` (see
``docs/adding_an_estimator.md``; a file outside the package is loaded with ``plugins:``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import torch

if TYPE_CHECKING:
    from critic_free_rl.config.schema import AlgorithmConfig

#: how dense step rewards enter a critic-free estimator (``algorithm.dense_mode``)
DENSE_MODES = ("process", "return_to_go")


@dataclass
class AdvantageInput:
    """The one input contract shared by every estimator.

    B = number of samples (prompts x G), T = padded response length.

    - ``token_rewards`` [B, T] float: the sum of three terms, each already multiplied by
      its coefficient: the outcome o_i (success, and an ORM's score) on the last response
      token, shaped step rewards d on the last token of each step, and (when
      ``kl_in == "reward"``) the per-token KL penalty ``-kl_coef * k1`` on every response token.
    - ``reward_mask`` [B, T] bool: positions that carry an outcome/step reward
      (step ends and the last response token); KL penalties do not set it.
    - ``response_mask`` [B, T] bool: real response tokens.
    - ``group_ids`` [B] long: samples with the same id answer the same prompt.
    - ``outcome`` [B] float or None: o_i, the sequence-level part of ``token_rewards``
      (estimators that normalise the outcome apart from the step rewards need it).
    - ``values`` [B, T] float or None: critic values (PPO only).
    """

    token_rewards: torch.Tensor
    reward_mask: torch.Tensor
    response_mask: torch.Tensor
    group_ids: torch.Tensor
    values: Optional[torch.Tensor] = None
    outcome: Optional[torch.Tensor] = None


@dataclass
class AdvantageOutput:
    """``advantages`` and ``returns`` are [B, T], zero outside ``response_mask``."""

    advantages: torch.Tensor
    returns: torch.Tensor


@dataclass(frozen=True)
class EstimatorSpec:
    """An estimator and its declared needs, checked by start-up validation.

    - ``group_baseline``: baselines a sample by its group, so ``rollout.group_size >= 2``.
    - ``critic``: needs critic values, so ``algorithm.use_critic`` must equal it.
    - ``dense_modes``: the ``algorithm.dense_mode`` values it implements.
    """

    name: str
    fn: Callable[[AdvantageInput, "AlgorithmConfig"], AdvantageOutput]
    group_baseline: bool = False
    critic: bool = False
    dense_modes: tuple[str, ...] = ("return_to_go",)

    def __post_init__(self) -> None:
        unknown = set(self.dense_modes) - set(DENSE_MODES)
        if not self.dense_modes or unknown:
            raise ValueError(f"estimator {self.name!r}: dense_modes must be a non-empty subset of {list(DENSE_MODES)}, "
                             f"got {list(self.dense_modes)}")


Estimator = Callable[[AdvantageInput, "AlgorithmConfig"], AdvantageOutput]
_ESTIMATORS: dict[str, EstimatorSpec] = {}


def register_estimator(
    name: str, *, group_baseline: bool = False, critic: bool = False, dense_modes: tuple[str, ...] = ("return_to_go",)
) -> Callable[[Estimator], Estimator]:
    """Decorator: register ``fn`` under ``name`` with its needs (see :class:`EstimatorSpec`)."""

    def deco(fn: Estimator) -> Estimator:
        if name in _ESTIMATORS:
            raise ValueError(f"estimator {name!r} registered twice")
        _ESTIMATORS[name] = EstimatorSpec(name, fn, group_baseline, critic, tuple(dense_modes))
        return fn

    return deco


def estimator_spec(name: str) -> EstimatorSpec:
    """The registered :class:`EstimatorSpec` of ``name`` (KeyError listing the valid names)."""
    if name not in _ESTIMATORS:
        raise KeyError(f"unknown estimator {name!r}; valid choices: {sorted(_ESTIMATORS)}")
    return _ESTIMATORS[name]


def get_estimator(name: str) -> Estimator:
    """The registered function of ``name``."""
    return estimator_spec(name).fn


def estimator_names() -> list[str]:
    return sorted(_ESTIMATORS)
