"""``critic-free-rl warmstart [overrides]``: build the embedded tiny policy and its cached
SFT warm start; print the model's path."""
from __future__ import annotations

from critic_free_rl.cli.hydra_app import QUIET_HYDRA, run_hydra
from critic_free_rl.config.environment import setup_environment
from critic_free_rl.config.loading import to_train_config


def _task(cfg) -> None:
    tc = to_train_config(cfg)
    setup_environment()
    from critic_free_rl.models.loading import resolve_model_path

    print(resolve_model_path(tc.model, tc.data))


def run(args: list[str]) -> None:
    run_hydra("warmstart", args + QUIET_HYDRA, _task)
