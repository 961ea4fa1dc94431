"""Keep large CPU tensors on glibc's heap instead of fresh memory maps.

glibc serves an allocation above its mmap threshold (which it raises to at most 32 MiB) with its own
``mmap`` and returns it with ``munmap`` when freed, so a loop that allocates the same large tensors
again and again (a training step's fp32 activations of two 64³ crops) faults every page in afresh.
Measured in demo training on two cores without native bf16: 280 000 page faults per second, 30 %
system time and 48-52 s epochs; with maps off and trimming raised, about 300 faults per second, 1 %
system time and 27-28 s epochs. ``process.py`` on the CPU is the same kind of loop (every batch of
windows allocates the same activations): on a held-out phantom with the shipped five-network
ensemble, 74-83 s and 12.5 M page faults per case became 51-55 s and 0.29 M, with 37-40 s of system
time down to 2 s and peak RSS 1.49 -> 1.51 GB, and identical masks. The environment variables
``MALLOC_MMAP_MAX_=0`` and ``MALLOC_TRIM_THRESHOLD_`` do the same, but only when set before the
process starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: freed memory at the heap's top is returned to the system only above this (mallopt takes a C int)
TRIM_THRESHOLD = 2**31 - 1


def keep_large_allocations_on_heap() -> bool:
    """Turn off glibc's per-allocation maps and heap trimming; True when it was applied.

    A no-op (False) off Linux or without glibc (e.g. musl). Memory freed by the process is kept for
    reuse rather than returned, so its resident size stays at its peak: meant for loops of
    same-sized work (training steps, batches of sliding windows), where the peak is reached anyway.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; both must hold, or a half-applied setting would mislead
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
