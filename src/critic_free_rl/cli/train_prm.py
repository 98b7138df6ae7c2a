"""``critic-free-rl train-prm [overrides]``: train (once, cached) the embedded tiny PRM;
print its path and held-out step accuracy."""
from __future__ import annotations

from critic_free_rl.cli.hydra_app import QUIET_HYDRA, run_hydra
from critic_free_rl.config.environment import setup_environment
from critic_free_rl.config.loading import to_train_config


def _task(cfg) -> None:
    tc = to_train_config(cfg)
    setup_environment()
    from critic_free_rl.rewards.prm_train import embedded_prm_for, load_eval

    path = embedded_prm_for(tc.reward, tc.data)
    e = load_eval(path)
    print(path)
    print(f"held-out step accuracy {e['accuracy']:.4f} (balanced {e['balanced_accuracy']:.4f}; good steps "
          f"{e['accuracy_good']:.4f}, bad steps {e['accuracy_bad']:.4f}; majority baseline {e['majority_baseline']:.4f}; "
          f"{e['steps']} steps of {e['solutions']} test-split solutions); trained in {e['train_seconds']:.0f} s")


def run(args: list[str]) -> None:
    run_hydra("train-prm", args + QUIET_HYDRA, _task)
