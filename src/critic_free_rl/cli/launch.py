"""Entry point of each rank under the DeepSpeed launcher:
``deepspeed --num_gpus N --module critic_free_rl.cli.launch RUN_DIR`` (multi-node: add
``--hostfile``). Reads the resolved ``RUN_DIR/config.yaml`` written by ``train``."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

if __name__ == "__main__":
    from critic_free_rl.cli.train import run_training
    from critic_free_rl.config.environment import setup_environment
    from critic_free_rl.config.loading import load_run_config

    run_dir = Path(sys.argv[-1])
    tc = load_run_config(run_dir)
    setup_environment(tc.trainer.num_ranks, tc.trainer.num_nodes)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][rank %(process)d][%(name)s] %(message)s")
    run_training(tc, run_dir)
