"""Reading configs: the ``configs/`` folder, Hydra composition, a run directory's saved
config and the conversion of a composed config to the validated :class:`TrainConfig`.

Import-light (Hydra and OmegaConf are imported inside the functions): the command layer
imports this module before it knows which command runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from omegaconf import DictConfig

    from critic_free_rl.config.schema import TrainConfig

#: name of the structured schema ``configs/train.yaml`` lists in its defaults
SCHEMA_NAME = "train_schema"


def config_dir() -> str:
    """``configs/`` of the source tree (editable install) or the copy inside the wheel."""
    package = Path(__file__).resolve().parents[1]
    for cand in (package / "configs", package.parents[1] / "configs"):
        if cand.is_dir():
            return str(cand)
    raise FileNotFoundError("critic-free-rl: cannot find the configs/ folder")


def register_schema() -> None:
    """Store :class:`TrainConfig` in Hydra's ConfigStore, so composition type-checks every key."""
    from hydra.core.config_store import ConfigStore

    from critic_free_rl.config.schema import TrainConfig

    ConfigStore.instance().store(name=SCHEMA_NAME, node=TrainConfig)


def compose(overrides: list[str], config_name: str = "train") -> DictConfig:
    """The config ``config_name`` composed from :func:`config_dir` with Hydra ``overrides``,
    as the command line would compose it (unvalidated: see :func:`to_train_config`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_schema()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))


def to_train_config(cfg: DictConfig) -> TrainConfig:
    """Hydra DictConfig -> validated :class:`TrainConfig` dataclass instance."""
    from omegaconf import OmegaConf

    from critic_free_rl.config.validate import validate

    tc = OmegaConf.to_object(cfg)
    validate(tc)
    return _resolved(tc)


def load_run_config(run_dir: Path) -> TrainConfig:
    """The resolved TrainConfig a run directory was started with (``config.yaml``); its
    ``plugins`` are imported, so a rank process knows the estimators and shapes they register."""
    from critic_free_rl.config.plugins import import_plugins
    from critic_free_rl.config.schema import TrainConfig, load_structured

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a run directory of critic-free-rl (no config.yaml)")
    tc = load_structured(TrainConfig, path)
    import_plugins(tc.plugins)
    return _resolved(tc)


def _resolved(tc):
    """``tc`` with ``model.dtype=auto`` made concrete for this machine (start-up detection)."""
    from critic_free_rl.config.environment import resolve_dtype

    tc.model.dtype = resolve_dtype(tc.model.dtype)
    return tc
