"""``critic-free-rl evaluate``: held-out greedy and sampling accuracy of one model.

The model is ``model.name_or_path`` (or the embedded policy), or the ``final/`` checkpoint
of a training run with ``eval.run=RUN_DIR``. It is evaluated on every dataset named in
``eval.datasets`` through the configured rollout engine (vLLM by default): greedy accuracy,
and the mean accuracy of ``eval.num_samples`` samples at ``eval.temperature``. Results go
to ``<run_dir>/eval.json`` and, as ``eval/<dataset>/*`` scalars, to TensorBoard in the
same folder (``run_dir`` defaults to ``evals/<timestamp>``)::

    critic-free-rl evaluate eval.run=runs/compare-default/grpo-pr_clip_delta-s0 \
        'eval.datasets=[embedded,gsm8k,math500]' eval.data_root=../shared/data eval.max_examples=200
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from critic_free_rl.cli.hydra_app import run_hydra
from critic_free_rl.config.schema import DataConfig, TrainConfig, load_structured

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from critic_free_rl.rollout import RolloutEngine

#: output folder of an evaluation unless ``run_dir=`` is given
DEFAULT_OUTPUT = "evals/${now:%Y%m%d-%H%M%S}"


def dataset_config(name: str, cfg: TrainConfig) -> DataConfig:
    """The data config of ``name``: the composed ``data`` group when it is that dataset,
    otherwise ``configs/data/<name>.yaml``; then ``eval.data_root`` / ``eval.max_examples``."""
    from dataclasses import replace

    from critic_free_rl.config.loading import config_dir

    if name == cfg.data.name:
        dc = cfg.data
    else:
        path = Path(config_dir()) / "data" / f"{name}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise ValueError(f"eval.datasets: unknown dataset {name!r}; known: {known}")
        dc = load_structured(DataConfig, path)
    local = Path(cfg.eval.data_root or "", name)
    if cfg.eval.data_root and local.is_dir():
        dc = replace(dc, path=str(local))
    if cfg.eval.max_examples is not None:
        # both limits: load_examples reads max_train_rows when test_split == train_split (math500)
        dc = replace(dc, max_test_rows=cfg.eval.max_examples, max_train_rows=cfg.eval.max_examples)
    return dc


def model_path(cfg: TrainConfig) -> str:
    """``<eval.run>/final`` when a run is given, else the configured (or embedded) policy."""
    from critic_free_rl.models.loading import resolve_model_path

    if cfg.eval.run is None:
        return resolve_model_path(cfg.model, cfg.data)
    final = Path(cfg.eval.run) / "final"
    if not (final / "config.json").is_file():
        raise FileNotFoundError(f"eval.run={cfg.eval.run}: no final/ checkpoint (has the run finished?)")
    return str(final)


def open_engine(tc: TrainConfig, path: str, prompts: list[str]) -> RolloutEngine:
    """The ``rollout.engine`` for ``path``, with a context long enough for every prompt."""
    from transformers import AutoTokenizer

    from critic_free_rl.rollout import make_engine

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=tc.model.trust_remote_code)
    longest = max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    r = tc.rollout
    return make_engine(r.engine, path, dtype=tc.model.dtype, seed=r.seed, max_model_len=longest + tc.eval.max_new_tokens + 8,
                       gpu_memory_utilization=r.gpu_memory_utilization, cpu_kvcache_gib=r.cpu_kvcache_gib,
                       tensor_parallel_size=r.tensor_parallel_size, enforce_eager=r.enforce_eager,
                       max_seqs=len(prompts) * max(1, tc.eval.num_samples))


def evaluate_task(cfg: DictConfig) -> None:
    """Hydra task of ``critic-free-rl evaluate`` (see the module docstring)."""
    from critic_free_rl.config.environment import setup_environment
    from critic_free_rl.config.loading import to_train_config

    tc = to_train_config(cfg)
    setup_environment()
    from hydra.core.hydra_config import HydraConfig

    from critic_free_rl.data.datasets import load_examples
    from critic_free_rl.evaluation import evaluate
    from critic_free_rl.logging.tracker import Tracker, atomic_write_text
    from critic_free_rl.rewards.success import SuccessVerifier

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    e = tc.eval
    path = model_path(tc)
    data = {name: dataset_config(name, tc) for name in e.datasets}
    examples = {name: load_examples(dc, dc.test_split) for name, dc in data.items()}
    engine = open_engine(tc, path, [x.prompt for exs in examples.values() for x in exs])
    tracker = Tracker(out_dir)
    results: dict[str, dict] = {}
    try:
        with SuccessVerifier(tc.reward.verify_timeout_s, tc.reward.verify_workers) as verifier:
            for name, exs in examples.items():
                res = evaluate(engine, verifier, exs, e.max_new_tokens, e.num_samples, e.temperature)
                tracker.scalars(res.metrics(f"eval/{name}"), 0)
                results[name] = {"greedy_accuracy": res.greedy_accuracy, "sampling_accuracy": res.sampling_accuracy,
                                 "n": res.num_examples, "data": data[name].path}
                print(f"[critic-free-rl] {name}: greedy_accuracy={res.greedy_accuracy:.4f} "
                      f"sampling_accuracy={res.sampling_accuracy} n={res.num_examples}", flush=True)
    finally:
        tracker.close()
        engine.close()
    report = {"model": path, "run": e.run, "engine": tc.rollout.engine, "num_samples": e.num_samples,
              "temperature": e.temperature, "max_new_tokens": e.max_new_tokens, "datasets": results}
    atomic_write_text(out_dir / "eval.json", json.dumps(report, indent=2))
    print(f"[critic-free-rl] evaluation written to {out_dir / 'eval.json'}", flush=True)


def run(args: list[str]) -> None:
    run_hydra("evaluate", [f"run_dir={DEFAULT_OUTPUT}", *args], evaluate_task)
