"""``critic-free-rl <command> [hydra overrides]``.

Commands: train, evaluate, warmstart, score, train-prm, compare, report. Overrides are
Hydra overrides (``algorithm=rloo rollout.group_size=8``); ``train -m`` runs a multirun.
This module stays import-light (torch, vLLM and DeepSpeed are imported inside the
commands): reward worker processes re-import the program's main module.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

USAGE = """usage: critic-free-rl <command> [overrides...]

commands:
  train       RL training run (vLLM rollout, DeepSpeed update); -m for a multirun
  evaluate    held-out greedy / sampling accuracy of a model on the configured datasets
  warmstart   build the embedded tiny policy and its cached SFT warm start
  score       offline reward scoring: --input FILE.jsonl --output OUT.jsonl [overrides]
  train-prm   train the embedded tiny PRM on automatically labelled steps
  compare     multirun over algorithms x rewards x seeds, then a report
  report      RUN_DIR... -> reports/<name>/report.md with plots
"""


def config_dir() -> str:
    """``configs/`` of the source tree (editable install) or the copy inside the wheel."""
    here = Path(__file__).resolve().parent
    for cand in (here / "configs", here.parents[1] / "configs"):
        if cand.is_dir():
            return str(cand)
    raise FileNotFoundError("critic-free-rl: cannot find the configs/ folder")


def setup_environment(num_ranks: int = 1, num_nodes: int = 1) -> None:
    """Environment for the in-process vLLM engine and CPU DeepSpeed; set before imports.
    CPU threads: this command's budget divided among its ``num_ranks / num_nodes`` ranks on
    this node (:func:`critic_free_rl.config.environment.cpu_thread_env`)."""
    from critic_free_rl.config.environment import cpu_thread_env

    os.environ.update(cpu_thread_env(max(1, num_ranks // max(1, num_nodes))))
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    # ops DeepSpeed compiles on first use (its CPU all-reduce: ~45 s, a 1 GiB compiler) live in
    # this environment, where scripts/install.sh builds them: a run never compiles them, and
    # two environments on one machine do not rebuild each other's (a read-only environment
    # keeps torch's default, ~/.cache/torch_extensions)
    if os.access(sys.prefix, os.W_OK):
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
    if not _has_cuda():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def _has_cuda() -> bool:
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def _register_schema() -> None:
    from hydra.core.config_store import ConfigStore

    from critic_free_rl.config.schema import TrainConfig

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def run_hydra(command: str, args: list[str], task: Callable, config_name: str = "train") -> None:
    """Run ``task(cfg)`` under ``hydra.main`` with ``args`` as the command line."""
    import hydra

    _register_schema()
    sys.argv = [f"critic-free-rl {command}"] + args
    hydra.main(version_base="1.3", config_path=config_dir(), config_name=config_name)(task)()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    from critic_free_rl import commands

    table = commands.COMMANDS
    if command not in table:
        sys.exit(f"critic-free-rl: unknown command {command!r}; valid commands: {', '.join(table)}")
    table[command](rest)


if __name__ == "__main__":
    main()
