"""Running a command's task under ``hydra.main``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

#: run a command in the current directory without Hydra output folders or log files
QUIET_HYDRA = ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none", "hydra.run.dir=."]


def run_hydra(command: str, args: list[str], task: Callable, config_name: str = "train") -> None:
    """Run ``task(cfg)`` under ``hydra.main`` with ``args`` as the command line."""
    import hydra

    from critic_free_rl.config.loading import config_dir, register_schema

    register_schema()
    sys.argv = [f"critic-free-rl {command}"] + args
    hydra.main(version_base="1.3", config_path=config_dir(), config_name=config_name)(task)()


def hydra_output_dir() -> Path:
    """The output folder of the running Hydra job (the run directory of ``train``)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)
