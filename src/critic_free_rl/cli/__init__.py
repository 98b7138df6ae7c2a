"""The command layer: ``critic-free-rl <command> [hydra overrides]``.

One module per subcommand (``cli/<command>.py``, each with ``run(args)``), the per-rank
launcher (:mod:`critic_free_rl.cli.launch`) and the multi-node glue
(:mod:`critic_free_rl.cli.multinode`). It depends on the library; the library never
imports it. Overrides are Hydra overrides (``algorithm=rloo rollout.group_size=8``);
``train -m`` runs a multirun.

This package stays import-light (torch, vLLM and DeepSpeed are imported inside the
commands): reward worker processes re-import the program's main module.
"""
from __future__ import annotations

import importlib
import sys

USAGE = """usage: critic-free-rl <command> [overrides...]

commands:
  train       RL training run (vLLM rollout, DeepSpeed update); -m for a multirun
  evaluate    held-out greedy / sampling accuracy of a model on the configured datasets
  warmstart   build the embedded tiny policy and its cached SFT warm start
  score       offline reward scoring: --input FILE.jsonl --output OUT.jsonl [overrides]
  train-prm   train the embedded tiny PRM on automatically labelled steps
  compare     multirun over algorithms x rewards x seeds, then a report
  report      RUN_DIR... -> reports/<name>/report.md with plots
  plan        the memory each GPU will hold for a train config, and whether it fits
"""

#: command name -> module of this package whose ``run(args)`` implements it
COMMANDS: dict[str, str] = {
    "train": "train",
    "warmstart": "warmstart",
    "evaluate": "evaluate",
    "compare": "compare",
    "report": "report",
    "score": "score",
    "train-prm": "train_prm",
    "plan": "plan",
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        sys.exit(f"critic-free-rl: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}")
    importlib.import_module(f"{__name__}.{COMMANDS[command]}").run(rest)
