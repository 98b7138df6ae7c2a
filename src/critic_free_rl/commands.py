"""The subcommands behind ``critic-free-rl`` (see :mod:`critic_free_rl.cli`)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from critic_free_rl.cli import run_hydra, setup_environment

log = logging.getLogger("critic_free_rl")


def to_train_config(cfg):
    """Hydra DictConfig -> validated :class:`TrainConfig` dataclass instance."""
    from omegaconf import OmegaConf

    from critic_free_rl.config.validate import validate

    tc = OmegaConf.to_object(cfg)
    validate(tc)
    return tc


def load_run_config(run_dir: Path):
    """The resolved TrainConfig a run directory was started with (``config.yaml``)."""
    from critic_free_rl.config.schema import TrainConfig, load_structured

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a run directory of critic-free-rl (no config.yaml)")
    return load_structured(TrainConfig, path)


def _hydra_output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def prepare_run_dir(run_dir: Path, tc) -> bool:
    """Refuse to overwrite a finished or started run unless ``overwrite=true``; write the
    resolved ``config.yaml`` atomically. Returns False when the run already finished and
    ``extra.skip_if_done`` asks to reuse it (comparisons resume this way)."""
    from omegaconf import OmegaConf

    from critic_free_rl.logging.tracker import atomic_write_text
    from critic_free_rl.multinode import for_disk

    done = (run_dir / "summary.json").is_file()
    if done and tc.extra.get("skip_if_done"):
        print(f"[critic-free-rl] {run_dir}: finished run reused (summary.json present)")
        return False
    started = done or any(run_dir.glob("events.out.tfevents*")) or (run_dir / "final").exists() or (run_dir / "checkpoints").exists()
    if started and not tc.overwrite:
        raise FileExistsError(f"run directory {run_dir} already holds a run; pass overwrite=true, resume={run_dir}, or choose another run_dir=")
    if started:
        import shutil

        for f in run_dir.glob("events.out.tfevents*"):
            f.unlink()
        for name in ("summary.json", "metrics.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
        for sub in ("checkpoints", "final"):  # never resume into, or evaluate, another run's state
            shutil.rmtree(run_dir / sub, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(for_disk(tc))))
    return True


def run_training(tc, run_dir: Path) -> dict:
    """Train in this process as one rank of the world described by the environment."""
    from critic_free_rl.backends.distributed import init_world
    from critic_free_rl.trainer import Trainer

    world = init_world(tc.trainer.backend)
    trainer = Trainer(tc, run_dir, world)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def launch_ranks(run_dir: Path, t) -> None:
    """Start the ranks through DeepSpeed's launcher (see :mod:`critic_free_rl.multinode`)."""
    from critic_free_rl.multinode import launcher_command, master_port

    if t.hostfile and not Path(t.hostfile).expanduser().is_file():
        raise FileNotFoundError(f"trainer.hostfile={t.hostfile}: no such file")
    cmd = launcher_command(t, run_dir, master_port(t))
    print("[critic-free-rl] launching:", " ".join(cmd), flush=True)
    rc = subprocess.run(cmd, env=os.environ.copy()).returncode
    if rc:
        raise SystemExit(f"critic-free-rl: DeepSpeed ranks exited with code {rc}")


def _resume_task(cfg) -> bool:
    """``train resume=RUN_DIR``: continue RUN_DIR from its latest checkpoint with its saved
    config (see :func:`critic_free_rl.checkpointing.resume_config`). False: this node
    writes no summary (node K > 0 of a multi-node run)."""
    from hydra.core.hydra_config import HydraConfig

    from omegaconf import OmegaConf

    from critic_free_rl.checkpointing import latest_step, resume_config
    from critic_free_rl.config.validate import validate
    from critic_free_rl.logging.tracker import atomic_write_text
    from critic_free_rl.multinode import for_disk, wait_for_run_config

    run_dir = Path(cfg.resume)
    tc = resume_config(run_dir, list(HydraConfig.get().overrides.task))
    validate(tc)
    setup_environment(tc.trainer.num_ranks, tc.trainer.num_nodes)
    print(f"[critic-free-rl] run directory: {run_dir.resolve()} (resume from step {latest_step(run_dir)})", flush=True)
    summary = run_dir / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("steps", 0) >= tc.trainer.total_steps:
        print(f"[critic-free-rl] {run_dir}: already finished ({summary})", flush=True)
        return True
    if tc.trainer.node_rank:  # node K > 0 of a multi-node run: node 0 writes the config
        wait_for_run_config(run_dir, tc)
    else:
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(for_disk(tc))))  # the ranks read it
    _run_or_launch(tc, run_dir)
    return not tc.trainer.node_rank


def _run_or_launch(tc, run_dir: Path) -> None:
    """Train in this process, or in fresh processes: through DeepSpeed's launcher for
    several ranks, and one process per job in a ``-m`` multirun (vLLM and DeepSpeed keep
    process-global state that a second job in the same process would collide with)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from critic_free_rl.multinode import uses_launcher

    if uses_launcher(tc.trainer) and "LOCAL_RANK" not in os.environ:
        launch_ranks(run_dir, tc.trainer)
    elif HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        rc = subprocess.run([sys.executable, "-m", "critic_free_rl.launch", str(run_dir)], env=os.environ.copy()).returncode
        if rc:
            raise SystemExit(f"critic-free-rl: training process exited with code {rc}")
    else:
        run_training(tc, run_dir)


def _train_task(cfg) -> None:
    run_dir = _hydra_output_dir()
    if cfg.get("resume"):
        run_dir = Path(cfg.resume)
        if not _resume_task(cfg):
            return
    else:
        tc = to_train_config(cfg)
        setup_environment(tc.trainer.num_ranks, tc.trainer.num_nodes)
        print(f"[critic-free-rl] run directory: {run_dir.resolve()}", flush=True)
        if tc.trainer.node_rank:  # node K > 0 of a multi-node run: node 0 prepares the run directory
            from critic_free_rl.multinode import wait_for_run_config

            wait_for_run_config(run_dir, tc)
            _run_or_launch(tc, run_dir)
            return
        if not prepare_run_dir(run_dir, tc):
            return
        _run_or_launch(tc, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    print(f"[critic-free-rl] done: initial_accuracy={summary['initial_accuracy']} final_accuracy={summary['final_accuracy']} "
          f"wall_seconds={summary['wall_seconds']:.1f} -> {run_dir / 'summary.json'}", flush=True)


def train(args: list[str]) -> None:
    resume = [a.split("=", 1)[1] for a in args if a.startswith("resume=")]
    if resume and resume[-1] not in ("", "null"):
        # Hydra's output folder (train.log) is the resumed run's own folder
        args = [*args, f"hydra.run.dir={resume[-1]}", "hydra.output_subdir=null"]
    run_hydra("train", args, _train_task)


#: run a command in the current directory without Hydra output folders or log files
QUIET_HYDRA = ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none", "hydra.run.dir=."]


def _warmstart_task(cfg) -> None:
    tc = to_train_config(cfg)
    setup_environment()
    from critic_free_rl.models.loading import resolve_model_path

    print(resolve_model_path(tc.model, tc.data))


def warmstart(args: list[str]) -> None:
    run_hydra("warmstart", args + QUIET_HYDRA, _warmstart_task)


def evaluate(args: list[str]) -> None:
    """Held-out greedy / sampling accuracy on ``eval.datasets`` (see :mod:`critic_free_rl.report.evaluate_cmd`)."""
    from critic_free_rl.report.evaluate_cmd import DEFAULT_OUTPUT, evaluate_task

    run_hydra("evaluate", [f"run_dir={DEFAULT_OUTPUT}", *args], evaluate_task)


def compare(args: list[str]) -> None:
    """Train algorithms x rewards x seeds, reusing finished runs, then report (see :mod:`critic_free_rl.report.compare`)."""
    from critic_free_rl.report.compare import compare_command

    compare_command(args)


def report(args: list[str]) -> None:
    """``report RUN_DIR... [--name NAME] [--out DIR]`` (see :mod:`critic_free_rl.report.report`)."""
    from critic_free_rl.report.report import report_command

    report_command(args)


def _train_prm_task(cfg) -> None:
    tc = to_train_config(cfg)
    setup_environment()
    from critic_free_rl.rewards.prm_train import embedded_prm_for, load_eval

    path = embedded_prm_for(tc.reward, tc.data)
    e = load_eval(path)
    print(path)
    print(f"held-out step accuracy {e['accuracy']:.4f} (balanced {e['balanced_accuracy']:.4f}; good steps "
          f"{e['accuracy_good']:.4f}, bad steps {e['accuracy_bad']:.4f}; majority baseline {e['majority_baseline']:.4f}; "
          f"{e['steps']} steps of {e['solutions']} test-split solutions); trained in {e['train_seconds']:.0f} s")


def train_prm(args: list[str]) -> None:
    """Train (once, cached) the embedded tiny PRM; print its path and held-out step accuracy."""
    run_hydra("train-prm", args + QUIET_HYDRA, _train_prm_task)


SCORE_FIELDS = ("prompt", "completion", "reference")


def read_score_input(path: Path) -> list[dict]:
    """Rows of a ``score`` input jsonl; ``SystemExit`` naming the file, line and field on bad input."""
    if not path.is_file():
        sys.exit(f"critic-free-rl score: {path}: no such file")
    rows = []
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
                row = json.loads(line) if line.strip() else None
            except UnicodeDecodeError:
                sys.exit(f"critic-free-rl score: {path}:{n}: not UTF-8 text")
            except json.JSONDecodeError as e:
                sys.exit(f"critic-free-rl score: {path}:{n}: invalid JSON ({e.msg} at column {e.colno})")
            if row is None:  # blank line
                continue
            if not isinstance(row, dict):
                sys.exit(f"critic-free-rl score: {path}:{n}: expected a JSON object with {', '.join(SCORE_FIELDS)}")
            for field in SCORE_FIELDS:
                if field not in row:
                    sys.exit(f"critic-free-rl score: {path}:{n}: missing field {field!r} (rows need {', '.join(SCORE_FIELDS)})")
                if not isinstance(row[field], str):
                    sys.exit(f"critic-free-rl score: {path}:{n}: field {field!r} must be a string, got {type(row[field]).__name__}")
            rows.append(row)
    return rows


def _score_task(cfg, records: list[dict], output: Path) -> None:
    import dataclasses

    tc = to_train_config(cfg)
    setup_environment()
    from critic_free_rl.logging.tracker import atomic_write_text
    from critic_free_rl.rewards.pipeline import RewardPipeline, score_records
    from critic_free_rl.rewards.prm_train import resolve_prm_path

    if tc.model.embedded:  # the embedded policy's tokenizer, without building the policy
        from critic_free_rl.models.tiny import build_char_tokenizer

        tokenizer = build_char_tokenizer()
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tc.model.name_or_path, trust_remote_code=tc.model.trust_remote_code)
    rcfg = dataclasses.replace(tc.reward, prm=resolve_prm_path(tc.reward, tc.data))
    with RewardPipeline(rcfg, tokenizer) as pipeline:
        scored = [row for lo in range(0, len(records), 256) for row in score_records(records[lo:lo + 256], pipeline)]
    atomic_write_text(output, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in scored))
    correct = sum(row["correct"] for row in scored)
    print(f"[critic-free-rl] scored {len(scored)} rows with reward={rcfg.name} ({correct} correct) -> {output}")


def score(args: list[str]) -> None:
    """``score --input FILE.jsonl --output OUT.jsonl [overrides]``: offline reward scoring
    through :func:`~critic_free_rl.rewards.pipeline.score_records` (the training code path)."""
    paths, overrides, it = {}, [], iter(args)
    for arg in it:
        key, eq, value = arg.partition("=")
        if key in ("--input", "--output"):
            paths[key[2:]] = value if eq else next(it, "")
            if not paths[key[2:]]:
                sys.exit(f"critic-free-rl score: {key} needs a file name")
        else:
            overrides.append(arg)
    for key in ("input", "output"):
        if key not in paths:
            sys.exit(f"critic-free-rl score: --{key} is required (usage: score --input FILE.jsonl --output OUT.jsonl [overrides])")
    records = read_score_input(Path(paths["input"]))  # before any model loads
    output = Path(paths["output"])
    if not output.parent.is_dir():
        sys.exit(f"critic-free-rl score: {output}: the folder {output.parent} does not exist")
    run_hydra("score", overrides + QUIET_HYDRA, lambda cfg: _score_task(cfg, records, output))


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "train": train,
    "warmstart": warmstart,
    "evaluate": evaluate,
    "compare": compare,
    "report": report,
    "score": score,
    "train-prm": train_prm,
}
