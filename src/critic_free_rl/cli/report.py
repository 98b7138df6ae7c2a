"""``critic-free-rl report RUN_DIR... [--name NAME] [--out reports]``: the comparison
report of training runs (see :mod:`critic_free_rl.report.report`)."""
from __future__ import annotations

import argparse
from pathlib import Path


def run(args: list[str]) -> None:
    from critic_free_rl.report.report import default_name, write_report

    parser = argparse.ArgumentParser(prog="critic-free-rl report",
                                     description="Comparison report of training runs: table, curves, TensorBoard layout.")
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories or folders of runs")
    parser.add_argument("--name", default=None, help="report name (default: the folder's name, or the runs' common parent's)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="parent folder of the report (default: reports)")
    ns = parser.parse_args(args)
    try:
        path = write_report(ns.run_dirs, ns.name or default_name(ns.run_dirs), ns.out)
    except FileNotFoundError as exc:
        raise SystemExit(f"critic-free-rl report: {exc}") from None
    print(f"[critic-free-rl] report written to {path}")
