"""Table of reward shapes keyed by name (as :mod:`critic_free_rl.algorithms.registry`).

A shape is a pure function on a padded batch of PRM step scores::

    fn(scores: [B, K] float, mask: [B, K] bool, **needs) -> shaped: [B, K] float

``mask`` marks real steps (a prefix of each row); padded entries of ``scores`` are 0 on
the way in and whatever ``fn`` returns there is zeroed on the way out. ``needs`` are only
the inputs the shape declares, from :data:`NEEDS`. Adding one is one module in this
package decorated with ``@register_shape("name", needs=(...))`` plus one YAML in
``configs/reward/`` (see ``docs/adding_a_reward_shape.md``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

#: what a shape may declare it needs -> where the pipeline takes it from
NEEDS: dict[str, str] = {
    "eta": "reward.clip_eta (float)",
    "temperature": "reward.min_temperature (float or None)",
    "prompt_score": "the PRM's score of the prompt alone, r_0 ([B] float tensor)",
}

ShapeFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Shape:
    """A registered shape: ``reward`` is the ``reward.name`` that selects it."""

    name: str
    fn: ShapeFn
    needs: tuple[str, ...]
    reward: str


_SHAPES: dict[str, Shape] = {}


def register_shape(name: str, needs: tuple[str, ...] = (), reward: str = "") -> Callable[[ShapeFn], ShapeFn]:
    """Register ``fn`` as ``reward.shaping=name``, selected by ``reward.name=reward``
    (default ``pr_<name>``), receiving the keyword arguments ``needs``."""
    unknown = sorted(set(needs) - set(NEEDS))
    if unknown:
        raise ValueError(f"shape {name!r} declares unknown needs {unknown}; known: {sorted(NEEDS)}")

    def deco(fn: ShapeFn) -> ShapeFn:
        if name in _SHAPES:
            raise ValueError(f"reward shape {name!r} registered twice")
        _SHAPES[name] = Shape(name, fn, tuple(needs), reward or f"pr_{name}")
        return fn

    return deco


def get_shape(name: str) -> Shape:
    if name not in _SHAPES:
        raise ValueError(f"unknown reward.shaping {name!r}; valid choices: {sorted(_SHAPES)}")
    return _SHAPES[name]


def shape_names() -> list[str]:
    return sorted(_SHAPES)
