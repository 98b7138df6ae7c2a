"""Process environment of a run, set before vLLM, DeepSpeed or torch extensions are imported,
and CPU thread sizing: how many intra-op threads each process of a run may use.

Every CPU-bound process (a training rank with its in-process vLLM engine, one job of
``compare``) gets its share of the cores this process may run on, never more: a
multi-threaded op ends in an OpenMP barrier, and a thread whose core another process
holds stalls that barrier for a scheduler time slice (docs/performance.md).

The share travels from parent to child in ``OMP_NUM_THREADS``, the standard knob: a
parent that runs ``n`` children at once (``compare.jobs``) gives each
:func:`process_cpu_threads` ``(n)`` threads, and :func:`cpu_thread_env` divides what a
command was given among its ranks on this node.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Optional

#: the variable that carries a process's thread budget to its children (and libgomp / torch)
THREADS_VAR = "OMP_NUM_THREADS"


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, which taskset, cgroups' cpusets and
    SLURM narrow; ``os.cpu_count()`` counts the whole machine)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def budget_threads() -> int:
    """Threads this process and its children may use together: ``OMP_NUM_THREADS`` when a parent
    (or the user) set it to a positive integer, else :func:`available_cores`."""
    value = os.environ.get(THREADS_VAR, "")
    return int(value) if value.isdigit() and int(value) > 0 else available_cores()


def process_cpu_threads(processes: int = 1, cores: Optional[int] = None) -> int:
    """Intra-op threads for each of ``processes`` CPU-bound processes running at once on
    ``cores`` cores (default :func:`budget_threads`): ``cores // processes``, at least 1, so
    that ``threads * processes <= cores`` whenever ``processes <= cores``.

    Example: 2 cores, ``compare.jobs=2``: 1 thread per run; 16 cores, 4 jobs of 2 ranks
    each: 16 // 4 = 4 threads per job, then 4 // 2 = 2 per rank."""
    if processes < 1:
        raise ValueError(f"process_cpu_threads: processes={processes} must be >= 1")
    return max(1, (budget_threads() if cores is None else cores) // processes)


@functools.lru_cache(maxsize=None)
def command_budget() -> int:
    """:func:`budget_threads` as this process started: read once, so that a second
    :func:`cpu_thread_env` in the same process (the next job of a ``train -m`` multirun) does not
    divide again what the first one divided."""
    return budget_threads()


def cpu_thread_env(ranks_per_node: int = 1, budget: Optional[int] = None) -> dict[str, str]:
    """The thread variables of a command that runs ``ranks_per_node`` ranks on this node with
    ``budget`` threads in all (default :func:`command_budget`).

    ``OMP_NUM_THREADS``: the budget divided among the ranks; inside a rank started by the
    launcher (``LOCAL_RANK`` set) the launcher's per-rank value is the budget, kept whole.
    ``VLLM_CPU_OMP_THREADS_BIND=nobind``: vLLM's CPU worker must not pin its threads, since its
    automatic binding picks the same cores in every process of a node (two ``compare`` jobs
    would share them); a value the user set is kept."""
    budget = command_budget() if budget is None else budget
    threads = budget if "LOCAL_RANK" in os.environ else process_cpu_threads(ranks_per_node, cores=budget)
    return {THREADS_VAR: str(threads), "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")}


def setup_environment(num_ranks: int = 1, num_nodes: int = 1) -> None:
    """Environment for the in-process vLLM engine and CPU DeepSpeed; set before imports.
    CPU threads: this command's budget divided among its ``num_ranks / num_nodes`` ranks on
    this node (:func:`cpu_thread_env`)."""
    os.environ.update(cpu_thread_env(max(1, num_ranks // max(1, num_nodes))))
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


def _has_cuda() -> bool:
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


#: /proc/cpuinfo flags of CPUs that compute bfloat16 natively (Intel AMX, AVX512-BF16)
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_has_native_bf16(cpuinfo: Optional[str] = None) -> bool:
    """Whether the CPU's flags (``/proc/cpuinfo``'s text, read when None) name a native bf16 unit."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def resolve_dtype(name: str, cpuinfo: Optional[str] = None) -> str:
    """``model.dtype``: ``auto`` becomes bfloat16 where the hardware computes it natively (a GPU
    with bf16, or :func:`cpu_has_native_bf16`) and float32 elsewhere; other names are kept."""
    if name != "auto":
        return name
    if _has_cuda():
        import torch

        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_native_bf16(cpuinfo) else "float32"
