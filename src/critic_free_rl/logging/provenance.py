"""What a run's numbers depend on beyond its config, recorded in ``summary.json``: the
machine it ran on and the exact weights of its starting policy and of its PRM, so runs
merged from several machines can be checked to share their models
(``reports/<name>/results.csv``)."""
from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import Optional

#: weight files hashed, in name order (a model saved by ``save_pretrained``)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def machine() -> str:
    """``<CPU model> x <cores>`` (cores this process may use), e.g. ``AMD EPYC 7B13 x 2``."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return f"{model or platform.processor() or platform.machine()} x {cores}"


def weights_sha256(path: Optional[str]) -> Optional[str]:
    """SHA-256 over the weight files of a local model folder, in name order; None for no
    path, a hub name or a folder without weight files (an oracle such as ``prm=exact``)."""
    if not path or not Path(path).is_dir():
        return None
    files = sorted(p for p in Path(path).iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def provenance(policy_path: str, prm_path: Optional[str]) -> dict[str, Optional[str]]:
    """``machine``, ``policy_sha256`` and ``prm_sha256`` for ``summary.json``."""
    return {"machine": machine(), "policy_sha256": weights_sha256(policy_path), "prm_sha256": weights_sha256(prm_path)}
