"""keep_large_allocations_on_heap: large allocations come from the heap and stay there for reuse.

The effect on training speed is recorded in docs/training.md (round 10); here the mechanism is
checked through glibc's own accounting (mallinfo2), in a fresh process each time, because the
setting lasts for the life of the process.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.test_training import REPO

#: glibc's allocator statistics in a probe process (mallinfo2: hblkhd = bytes in per-allocation maps)
MALLINFO = """
import ctypes, ctypes.util, sys
import numpy as np

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
"""

PROBE = MALLINFO + """
from runner.allocator import keep_large_allocations_on_heap
applied = keep_large_allocations_on_heap() if sys.argv[1] == "heap" else False
before = libc.mallinfo2()
x = np.ones(16 * 2**20, dtype=np.float32)  # 64 MiB, above glibc's largest mmap threshold (32 MiB)
during = libc.mallinfo2()
del x
after = libc.mallinfo2()
mib = 2**20
print(applied, (during.hblkhd - before.hblkhd) // mib, (during.arena - before.arena) // mib,
      (after.arena - before.arena) // mib)
"""


def _probe(mode: str) -> list[str]:
    run = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60,
                         cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and mallinfo2")
def test_large_arrays_come_from_the_heap_and_stay_for_reuse() -> None:
    applied, mapped, heap_growth, kept = _probe("default")
    assert applied == "False" and int(mapped) >= 64 and int(heap_growth) == 0  # glibc's own map, unmapped on free
    applied, mapped, heap_growth, kept = _probe("heap")
    assert applied == "True" and int(mapped) == 0 and int(heap_growth) >= 60  # from the heap instead
    assert int(kept) >= 60  # not trimmed away on free: the next step reuses those pages without faults


PROCESS_PROBE = MALLINFO + """
import process
rc = process.main(sys.argv[1:])
before = libc.mallinfo2()
x = np.ones(16 * 2**20, dtype=np.float32)
during = libc.mallinfo2()
print(rc, (during.hblkhd - before.hblkhd) // 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and mallinfo2")
def test_process_on_cpu_keeps_large_allocations_on_the_heap(tmp_path) -> None:
    """A CPU run of process.py leaves the setting on for its windows (a 64 MiB array is not mapped)."""
    from tests.conftest import HOTSPOT_WEIGHTS
    from tests.test_process import make_input

    make_input(tmp_path / "input")
    argv = ["--input", str(tmp_path / "input"), "--output", str(tmp_path / "output"), "--weights",
            str(HOTSPOT_WEIGHTS), "--device", "cpu"]
    run = subprocess.run([sys.executable, "-c", PROCESS_PROBE, *argv], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    rc, mapped = run.stdout.split()[-2:]
    assert rc == "0" and int(mapped) == 0
    assert (tmp_path / "output/images/automated-petct-lesion-segmentation/case_a.mha").is_file()
