"""Host memory of the CPU rollout engine: hand the C heap's free pages back, fault pages in.

Both go through glibc (``ctypes``) and do nothing where it is absent. Their measured effect
is in docs/performance.md ("KV cache release").
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch

#: ``madvise`` advice (Linux 5.14+): fault pages in, writable, without writing to them
MADV_POPULATE_WRITE = 23
PAGE = 4096


@functools.lru_cache(maxsize=None)
def _libc():
    """glibc through ``ctypes`` (None elsewhere)."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def trim_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``). glibc keeps what
    an update freed for reuse, and the KV cache (``mmap`` blocks) cannot reuse it: without
    a trim the process would hold both at once."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def populate(storages: Sequence[torch.UntypedStorage]) -> bool:
    """Fault in every page of ``storages`` now, contents kept (``MADV_POPULATE_WRITE``; pages
    already there are left alone). False where the kernel or C library lacks it: the pages
    then come on first touch."""
    libc = _libc()
    if libc is None:
        return False
    for s in storages:
        start = s.data_ptr() & ~(PAGE - 1)
        end = (s.data_ptr() + s.nbytes() + PAGE - 1) & ~(PAGE - 1)
        if libc.madvise(start, end - start, MADV_POPULATE_WRITE) != 0:
            return False
    return True
