"""Resolve ``model.name_or_path`` to something ``from_pretrained`` (and vLLM) can load.

A hub name or a local folder is returned unchanged. ``model.embedded=true`` builds the
bundled tiny character-level Qwen2 and its seeded SFT warm start on the embedded task,
cached under ``$CFRL_CACHE`` (default ``~/.cache/critic-free-rl``) by a hash of every
setting that shapes it, so later runs reuse it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from critic_free_rl.config.schema import DataConfig, ModelConfig


def cache_root() -> Path:
    return Path(os.environ.get("CFRL_CACHE", Path.home() / ".cache" / "critic-free-rl"))


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def embedded_policy(mcfg: ModelConfig, dcfg: DataConfig) -> Path:
    """Build (once) the tiny policy warm-started by SFT on the embedded task's train split."""
    from critic_free_rl.data.arithmetic import ArithmeticSpec, generate_task
    from critic_free_rl.models.tiny import build_tiny_model
    from critic_free_rl.models.warmstart import sft

    w = dict(mcfg.warmstart)
    arch = dict(mcfg.arch)
    parts = {"arch": arch, "warmstart": w, "data_seed": dcfg.seed, "spec": dict(dcfg.spec), "num_train": dcfg.num_train, "template": dcfg.prompt_template, "v": 1}
    out = cache_root() / f"policy-{_key(parts)}"
    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    base = build_tiny_model(tmp / "init", seed=int(w.get("seed", 0)), **arch)
    task = generate_task(dcfg.num_train, dcfg.num_test, dcfg.seed, ArithmeticSpec(**dcfg.spec))
    pairs = [(dcfg.prompt_template.format(question=r["question"]), r["solution"]) for r in task["train"]]
    sft(base, tmp / "model", pairs, steps=int(w.get("steps", 1000)), batch_size=int(w.get("batch_size", 64)), lr=float(w.get("lr", 1e-3)), seed=int(w.get("seed", 0)))
    (tmp / "model" / "warmstart.json").write_text(json.dumps(parts, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp / "model", out)  # atomic: a half-built model never looks cached
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_model_path(mcfg: ModelConfig, dcfg: DataConfig) -> str:
    if mcfg.embedded:
        return str(embedded_policy(mcfg, dcfg))
    return mcfg.name_or_path
