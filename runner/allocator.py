"""Keep large CPU tensors on glibc's heap instead of fresh memory maps.

glibc serves an allocation above its mmap threshold (which it raises to at most 32 MiB) with its own
``mmap`` and returns it with ``munmap`` when freed, so a loop that allocates the same large tensors
again and again (a training step's fp32 activations of two 64³ crops) faults every page in afresh,
and the system time of those faults slows the steps. ``process.py`` on the CPU is the same kind of
loop (every batch of windows allocates the same activations). With maps off and trimming raised the
faults and most of the system time go, and the masks are identical; ``process.py``'s measured
figures (wall and system time, page faults) are in docs/performance.md. The environment variables
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
