"""``critic-free-rl evaluate``: held-out greedy and sampling accuracy of one model.

The model is ``model.name_or_path`` (or the embedded policy), or the ``final/`` checkpoint
of a training run with ``eval.run=RUN_DIR``. It is evaluated on every dataset named in
``eval.datasets`` through the configured rollout engine (vLLM by default): greedy accuracy,
and the mean accuracy of ``eval.num_samples`` samples at ``eval.temperature``. Results go
to ``<run_dir>/eval.json`` and, as ``eval/<dataset>/*`` scalars, to TensorBoard in the
same folder (``run_dir`` defaults to ``evals/<timestamp>``). A prompt that does not fit the
policy's context (``max_position_embeddings``) together with ``eval.max_new_tokens`` is
skipped and counted per dataset (``skipped_for_length``; the embedded policy has 512
positions, shorter than many benchmark prompts)::

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

    from critic_free_rl.data.datasets import Example
    from critic_free_rl.evaluation import EvalResult
    from critic_free_rl.rewards.success import SuccessVerifier
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


#: tokens kept free beside prompt + ``eval.max_new_tokens`` (special tokens an engine may add)
CONTEXT_SLACK = 8
#: problems generated per engine call, so that progress can be shown between calls
CHUNK = 64


def context_limit(path: str, trust_remote_code: bool) -> int | None:
    """The policy's context in positions (``max_position_embeddings``), None if unstated."""
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code), "max_position_embeddings", None)


def fits(prompt_tokens: int, max_new_tokens: int, limit: int | None) -> bool:
    """Whether a prompt of ``prompt_tokens`` plus ``max_new_tokens`` fits ``limit`` positions."""
    return limit is None or prompt_tokens + max_new_tokens + CONTEXT_SLACK <= limit


def open_engine(tc: TrainConfig, path: str, longest: int, num_prompts: int) -> RolloutEngine:
    """The ``rollout.engine`` for ``path``, with a context long enough for the ``longest`` prompt."""
    from critic_free_rl.rollout import make_engine

    r = tc.rollout
    return make_engine(r.engine, path, dtype=tc.model.dtype, seed=r.seed, max_model_len=longest + tc.eval.max_new_tokens + CONTEXT_SLACK,
                       gpu_memory_utilization=r.gpu_memory_utilization, cpu_kvcache_gib=r.cpu_kvcache_gib,
                       tensor_parallel_size=r.tensor_parallel_size, enforce_eager=r.enforce_eager,
                       max_seqs=min(num_prompts, CHUNK) * max(1, tc.eval.num_samples))


def evaluate_in_chunks(engine: RolloutEngine, verifier: SuccessVerifier, exs: list[Example], e, progress) -> EvalResult:
    """:func:`critic_free_rl.evaluation.evaluate` over ``exs`` in chunks of :data:`CHUNK`
    problems, merged into one result (counts summed); ``progress(n)`` after each chunk."""
    from critic_free_rl.evaluation import EvalResult, evaluate

    parts: list[EvalResult] = []
    for start in range(0, len(exs), CHUNK):
        parts.append(evaluate(engine, verifier, exs[start:start + CHUNK], e.max_new_tokens, e.num_samples, e.temperature))
        progress(min(start + CHUNK, len(exs)))
    n = sum(p.num_examples for p in parts)
    greedy = sum(p.greedy_accuracy * p.num_examples for p in parts) / n
    sampling = (sum(p.sampling_accuracy * p.num_examples for p in parts) / n) if e.num_samples > 0 else None
    chars = sum(p.mean_response_chars * p.num_examples for p in parts) / n
    return EvalResult(greedy, sampling, n, chars, [s for p in parts for s in p.samples][:4])


def evaluate_task(cfg: DictConfig) -> None:
    """Hydra task of ``critic-free-rl evaluate`` (see the module docstring)."""
    from critic_free_rl.config.environment import setup_environment
    from critic_free_rl.config.loading import to_train_config

    tc = to_train_config(cfg)
    setup_environment()
    from hydra.core.hydra_config import HydraConfig
    from transformers import AutoTokenizer

    from critic_free_rl.cli.progress import Progress
    from critic_free_rl.data.datasets import load_examples
    from critic_free_rl.logging.tracker import Tracker, atomic_write_text
    from critic_free_rl.rewards.success import SuccessVerifier

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    e = tc.eval
    path = model_path(tc)
    data = {name: dataset_config(name, tc) for name in e.datasets}
    examples = {name: load_examples(dc, dc.test_split) for name, dc in data.items()}
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=tc.model.trust_remote_code)
    lengths = {name: [len(tok(x.prompt, add_special_tokens=False)["input_ids"]) for x in exs] for name, exs in examples.items()}
    limit = context_limit(path, tc.model.trust_remote_code)
    kept = {name: [x for x, n in zip(exs, lengths[name]) if fits(n, e.max_new_tokens, limit)] for name, exs in examples.items()}
    skipped = {name: len(examples[name]) - len(kept[name]) for name in examples}
    results: dict[str, dict] = {}
    for name in examples:
        results[name] = {"greedy_accuracy": None, "sampling_accuracy": None, "n": 0, "skipped_for_length": skipped[name],
                         "data": data[name].path}
        if not kept[name]:
            print(f"[critic-free-rl] {name}: all {skipped[name]} prompts skipped: none fits the policy's context of {limit} "
                  f"positions with eval.max_new_tokens={e.max_new_tokens} (longest prompt: {max(lengths[name], default=0)} tokens)",
                  flush=True)
    fitting = [n for ns in lengths.values() for n in ns if fits(n, e.max_new_tokens, limit)]
    if fitting:
        engine = open_engine(tc, path, max(fitting), len(fitting))
        tracker = Tracker(out_dir)
        try:
            with SuccessVerifier(tc.reward.verify_timeout_s, tc.reward.verify_workers) as verifier, \
                    Progress("evaluate", {name: len(exs) for name, exs in kept.items() if exs}, "problems") as bar:
                for name, exs in kept.items():
                    if not exs:
                        continue
                    res = evaluate_in_chunks(engine, verifier, exs, e, lambda done, name=name: bar.update(name, done))
                    tracker.scalars(res.metrics(f"eval/{name}"), 0)
                    results[name].update(greedy_accuracy=res.greedy_accuracy, sampling_accuracy=res.sampling_accuracy,
                                         n=res.num_examples)
                    bar.log(f"[critic-free-rl] {name}: greedy_accuracy={res.greedy_accuracy:.4f} "
                            f"sampling_accuracy={res.sampling_accuracy} n={res.num_examples} skipped_for_length={skipped[name]}")
        finally:
            tracker.close()
            engine.close()
    report = {"model": path, "run": e.run, "engine": tc.rollout.engine, "num_samples": e.num_samples,
              "temperature": e.temperature, "max_new_tokens": e.max_new_tokens, "context": limit, "datasets": results}
    atomic_write_text(out_dir / "eval.json", json.dumps(report, indent=2))
    print(f"[critic-free-rl] evaluation written to {out_dir / 'eval.json'}", flush=True)


def run(args: list[str]) -> None:
    run_hydra("evaluate", [f"run_dir={DEFAULT_OUTPUT}", *args], evaluate_task)
