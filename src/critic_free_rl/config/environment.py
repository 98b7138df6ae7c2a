"""Process environment of a run, set before vLLM, DeepSpeed or torch extensions are imported."""
from __future__ import annotations

import os
import sys


def setup_environment(num_ranks: int = 1) -> None:
    """Environment for the in-process vLLM engine and CPU DeepSpeed; set before imports."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    # ops DeepSpeed compiles on first use (its CPU all-reduce: ~45 s, a 1 GiB compiler) live in
    # this environment, where scripts/install.sh builds them: a run never compiles them, and
    # two environments on one machine do not rebuild each other's (a read-only environment
    # keeps torch's default, ~/.cache/torch_extensions)
    if os.access(sys.prefix, os.W_OK):
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
    if not _has_cuda():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        if num_ranks > 1:
            os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_ranks)))


def _has_cuda() -> bool:
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
