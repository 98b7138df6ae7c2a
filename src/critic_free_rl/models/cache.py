"""The one cache of embedded assets (policy, warm start, PRM, ORM).

An asset lives in ``cache_root()/<kind>-<key(settings)>``: ``key`` hashes every setting
that shapes it, so a changed setting builds a new folder and an unchanged one reuses it.
:func:`cached` builds a missing entry once under an exclusive lock (a parallel ``compare``
waits instead of building twice), in a temporary folder moved into place with
``os.replace`` (a half-built asset never looks cached), and writes its JSON record (the
settings plus whatever the build measured) next to the model.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

#: the file every cached model folder holds once complete
COMPLETE_MARKER = "config.json"


def cache_root() -> Path:
    """``$CFRL_CACHE``, default ``~/.cache/critic-free-rl``."""
    return Path(os.environ.get("CFRL_CACHE", Path.home() / ".cache" / "critic-free-rl"))


def key(settings: dict[str, Any]) -> str:
    """12 hex digits of the SHA-256 of ``settings`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def entry_path(kind: str, settings: dict[str, Any]) -> Path:
    """Where the asset ``kind`` built from ``settings`` is cached."""
    return cache_root() / f"{kind}-{key(settings)}"


@contextlib.contextmanager
def cache_lock(entry: Path) -> Iterator[None]:
    """Hold an exclusive lock on cache ``entry`` while building it, so concurrent runs (a
    parallel ``compare``) build it once: the others wait, then find it cached."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.with_name(entry.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_record(entry: Path, name: str) -> dict[str, Any]:
    """The JSON record ``name`` kept in cache ``entry``."""
    return json.loads((Path(entry) / name).read_text())


def write_record(folder: Path, name: str, record: dict[str, Any]) -> None:
    """Write the JSON record ``name`` into ``folder``."""
    (Path(folder) / name).write_text(json.dumps(record, indent=2))


def cached(kind: str, settings: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """The cache entry of ``kind`` for ``settings``, built first when missing.

    ``build(tmp)`` must leave a complete model folder at ``tmp`` (with its records); it is
    then moved into place atomically. Returns the entry's path.
    """
    out = entry_path(kind, settings)
    with cache_lock(out):
        if not (out / COMPLETE_MARKER).is_file():
            work = out.with_name(f"{out.name}.tmp{os.getpid()}")
            shutil.rmtree(work, ignore_errors=True)
            try:
                build(work / "model")
                os.replace(work / "model", out)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return out
