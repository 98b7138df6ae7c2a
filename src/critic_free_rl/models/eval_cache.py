"""The step-0 evaluation, computed once per warm start and reused by every run that starts
from the same weights on the same evaluation split with the same settings (a grid's runs).

An entry is ``cache_root()/eval-at-start/<key>.json`` with ``key`` the hash of (the policy's
weight files, the evaluation examples, the evaluation settings); it is written atomically,
so a parallel run reads a whole entry or none (and then computes its own).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from critic_free_rl.data.datasets import Example
from critic_free_rl.logging.tracker import atomic_write_text
from critic_free_rl.models.cache import cache_root, key

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def weights_hash(model_path: str) -> str:
    """SHA-256 of the model folder's weight files (name and content, in name order)."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(model_path).iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in model folder {model_path}")
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
    return h.hexdigest()


def examples_hash(examples: list[Example]) -> str:
    """SHA-256 of the evaluation examples as the engine sees them (prompt and reference)."""
    return hashlib.sha256(json.dumps([[e.prompt, e.reference] for e in examples]).encode()).hexdigest()


def entry(model_path: str, examples: list[Example], settings: dict[str, Any]) -> Path:
    """Where the step-0 evaluation of ``model_path`` on ``examples`` under ``settings`` (every
    setting that changes its numbers: eval config, engine, dtype, seed, ranks) is cached."""
    k = key({"weights": weights_hash(model_path), "examples": examples_hash(examples), "settings": settings})
    return cache_root() / "eval-at-start" / f"{k}.json"


def load(path: Path) -> Optional[dict[str, Any]]:
    """The cached result's fields (``EvalResult``'s), or None when there is none or it is unreadable."""
    try:
        d = json.loads(path.read_text())
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def store(path: Path, fields: dict[str, Any]) -> None:
    """Write an entry: ``fields`` JSON-serialisable (an ``EvalResult``'s ``__dict__``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(fields))
