"""``reward.prm`` / ``reward.orm`` as something the reward pipeline can load.

``embedded`` names the tiny PRM (:mod:`critic_free_rl.models.prm_train`) or ORM
(:mod:`critic_free_rl.models.orm_train`) of the embedded task, trained on first use and
cached; ``reward.embedded_rm`` overrides their recipe (``arch``, ``prm``, ``orm`` dicts,
part of the cache key). Any other value (hub name, path, ``exact``, ``None``) is kept.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

from critic_free_rl.config.schema import DataConfig, RewardConfig

EMBEDDED = "embedded"


def _check_embedded(rcfg: RewardConfig, dcfg: DataConfig, field: str) -> None:
    if dcfg.name != EMBEDDED:
        raise ValueError(f"reward.{field}=embedded is the tiny reward model of the embedded arithmetic task, not of "
                         f"data.name={dcfg.name!r}; set reward.{field} to a model for that data (hub name or path)")
    if field == "prm" and rcfg.prm_kind != "token_cls":
        raise ValueError(f"reward.prm=embedded is a token_cls PRM; got reward.prm_kind={rcfg.prm_kind!r}")


def embedded_prm_for(rcfg: RewardConfig, dcfg: DataConfig, log: Callable[[str], None] = print) -> Path:
    """The embedded PRM for a run's reward and data configs (``critic-free-rl train-prm``).

    Raises ``ValueError`` when the data is not the embedded task (the tiny PRM only knows
    its arithmetic) or ``reward.prm_kind`` is not ``token_cls``.
    """
    from critic_free_rl.models.prm_train import SEPARATOR, embedded_prm

    _check_embedded(rcfg, dcfg, "prm")
    rm = rcfg.embedded_rm
    return embedded_prm(dcfg, rcfg.prm_separator or SEPARATOR, rm.get("arch"), rm.get("prm"), rcfg.prm_device, log)


def embedded_orm_for(rcfg: RewardConfig, dcfg: DataConfig, log: Callable[[str], None] = print) -> Path:
    """The embedded ORM (on the embedded PRM's backbone, built first when missing)."""
    from critic_free_rl.models.orm_train import embedded_orm
    from critic_free_rl.models.prm_train import SEPARATOR, prm_settings

    _check_embedded(rcfg, dcfg, "orm")
    rm = rcfg.embedded_rm
    separator = rcfg.prm_separator or SEPARATOR
    prm_dir = embedded_prm_for(dataclasses.replace(rcfg, prm_kind="token_cls", prm_separator=separator), dcfg, log)
    settings = prm_settings(dcfg, separator, rm.get("arch"), rm.get("prm"))
    return embedded_orm(dcfg, prm_dir, settings, rm.get("orm"), rcfg.prm_device, log)


def resolve_prm_path(rcfg: RewardConfig, dcfg: DataConfig, log: Callable[[str], None] = print) -> Optional[str]:
    """``reward.prm`` as something ``from_pretrained`` can load.

    ``embedded`` becomes the cached tiny PRM (trained on first use, see
    :func:`embedded_prm_for`) when ``reward.name`` uses a PRM, and ``None`` when it does
    not (nothing is trained); any other value (hub name, path, ``exact``, ``None``) is returned as is.
    """
    from critic_free_rl.rewards.pipeline import REWARD_MODES

    if rcfg.prm != EMBEDDED:
        return rcfg.prm
    if REWARD_MODES.get(rcfg.name) is None:
        return None
    return str(embedded_prm_for(rcfg, dcfg, log))


def resolve_orm_path(rcfg: RewardConfig, dcfg: DataConfig, log: Callable[[str], None] = print) -> Optional[str]:
    """``reward.orm`` likewise: ``embedded`` becomes the cached tiny ORM when ``reward.name=orm``
    (``None`` otherwise); any other value is returned as is."""
    if rcfg.orm != EMBEDDED:
        return rcfg.orm
    if rcfg.name != "orm":
        return None
    return str(embedded_orm_for(rcfg, dcfg, log))
