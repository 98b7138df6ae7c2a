"""Resolve ``model.name_or_path`` to something ``from_pretrained`` (and vLLM) can load.

A hub name or a local folder is returned unchanged. ``model.embedded=true`` builds the
bundled tiny character-level Qwen2 and its seeded SFT warm start on the embedded task,
kept in the embedded-asset cache (:mod:`critic_free_rl.models.cache`), so later runs reuse it.
"""
from __future__ import annotations

import random
from pathlib import Path

from critic_free_rl.config.schema import DataConfig, ModelConfig
from critic_free_rl.models.cache import cached, write_record


def embedded_policy(mcfg: ModelConfig, dcfg: DataConfig) -> Path:
    """Build (once) the tiny policy warm-started by SFT on the embedded task's train split.

    ``model.warmstart`` keys: ``steps`` (at most), ``batch_size``, ``lr``, ``seed``;
    ``stop_at_accuracy`` / ``eval_every`` / ``eval_problems``: stop at the first check
    whose greedy accuracy on a validation split (``eval_problems`` fresh problems, in
    neither the train nor the test split) reaches ``stop_at_accuracy`` (see
    :mod:`critic_free_rl.models.warmstart`); ``early_answer_frac``: the fraction of the
    longest problems (``data.spec.max_ops`` operations) whose warm-start solution stops
    one operation early and boxes the wrong value (:func:`~critic_free_rl.data.arithmetic.early_answer`).

    That last knob is the embedded default's built-in flaw: the SFT policy copies the
    habit, answering the longest problems one step early under greedy decoding, while it
    can still sample the full solution. An outcome reward finds the habit (the finished
    solutions are the ones rewarded) and RL removes it; imitation cannot. It gives RL a
    known, checkable thing to fix on a 2-core budget, next to the slow work of sharpening
    arithmetic. ``warmstart.json`` in the folder records the settings, the steps taken and
    the validation accuracy.
    """
    w = dict(mcfg.warmstart)
    arch = dict(mcfg.arch)
    parts = {"arch": arch, "warmstart": w, "data_seed": dcfg.seed, "spec": dict(dcfg.spec), "num_train": dcfg.num_train,
             "num_test": dcfg.num_test, "template": dcfg.prompt_template, "v": 2}
    return cached("policy", parts, lambda folder: _build_policy(folder, parts, dcfg))


def warmstart_pairs(rows: list[dict[str, str]], template: str, max_ops: int, early_answer_frac: float, seed: int) -> list[tuple[str, str]]:
    """(prompt, solution) pairs of the warm-start corpus: each row's gold solution, except
    that an ``early_answer_frac`` share (seeded) of the rows with ``max_ops`` operations get
    :func:`~critic_free_rl.data.arithmetic.early_answer` instead."""
    from critic_free_rl.data.arithmetic import early_answer

    rng = random.Random(seed)
    out = []
    for r in rows:
        cut = r["solution"].count("\n") == max_ops and rng.random() < early_answer_frac
        out.append((template.format(question=r["question"]), early_answer(r["solution"]) if cut else r["solution"]))
    return out


def _build_policy(out: Path, parts: dict, dcfg: DataConfig) -> None:
    """Build the policy described by ``parts`` (see :func:`embedded_policy`) into folder ``out``."""
    from critic_free_rl.data.arithmetic import ArithmeticSpec, generate_split, generate_task
    from critic_free_rl.models.tiny import build_tiny_model
    from critic_free_rl.models.warmstart import StopRule, sft

    w = parts["warmstart"]
    spec = ArithmeticSpec(**dcfg.spec)
    base = build_tiny_model(out.parent / "init", seed=int(w.get("seed", 0)), **parts["arch"])
    task = generate_task(dcfg.num_train, dcfg.num_test, dcfg.seed, spec)
    prompt = dcfg.prompt_template.format
    pairs = warmstart_pairs(task["train"], dcfg.prompt_template, spec.max_ops, float(w.get("early_answer_frac", 0.0)), int(w.get("seed", 0)))
    stop = None
    if w.get("stop_at_accuracy") is not None:
        seen = frozenset(r["question"] for split in task.values() for r in split)
        val = generate_split(int(w.get("eval_problems", 200)), dcfg.seed + 2, spec, exclude=seen)
        stop = StopRule([(prompt(question=r["question"]), r["answer"]) for r in val], float(w["stop_at_accuracy"]), int(w.get("eval_every", 25)))
    res = sft(base, out, pairs, steps=int(w.get("steps", 1000)), batch_size=int(w.get("batch_size", 64)),
              lr=float(w.get("lr", 1e-3)), seed=int(w.get("seed", 0)), stop=stop)
    record = {**parts, "steps_taken": res.steps, "validation_greedy_accuracy": res.accuracy}
    write_record(out, "warmstart.json", record)


def resolve_model_path(mcfg: ModelConfig, dcfg: DataConfig) -> str:
    if mcfg.embedded:
        return str(embedded_policy(mcfg, dcfg))
    return mcfg.name_or_path
