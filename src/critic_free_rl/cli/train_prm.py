"""``critic-free-rl train-prm [overrides]``: train (once, cached) the embedded tiny PRM, and
with ``reward=orm`` the embedded ORM; print their paths and held-out figures (the PRM's
first-error AUC overall and per kind of mistake, the ORM's final-answer accuracy)."""
from __future__ import annotations

from critic_free_rl.cli.hydra_app import QUIET_HYDRA, run_hydra
from critic_free_rl.config.environment import setup_environment
from critic_free_rl.config.loading import to_train_config


def _task(cfg) -> None:
    tc = to_train_config(cfg)
    setup_environment()
    from critic_free_rl.models.cache import read_record
    from critic_free_rl.models.prm_eval import format_auc
    from critic_free_rl.models.reward_models import embedded_orm_for, embedded_prm_for

    path = embedded_prm_for(tc.reward, tc.data)
    e = read_record(path, "prm_eval.json")
    print(path)
    print(f"held-out {format_auc(e)}; step accuracy {e['step_accuracy']:.4f}; trained in {e['train_seconds']:.0f} s")
    if tc.reward.orm == "embedded":
        path = embedded_orm_for(tc.reward, tc.data)
        o = read_record(path, "orm_eval.json")
        print(path)
        print(f"held-out final-answer accuracy {o['accuracy']:.4f} (AUC {o['auc']:.4f}, {o['solutions']} solutions); "
              f"trained in {o['train_seconds']:.0f} s")


def run(args: list[str]) -> None:
    run_hydra("train-prm", args + QUIET_HYDRA, _task)
