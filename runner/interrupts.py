"""How a run meets its process: SIGTERM/SIGINT as an exception that leaves no partial file, caches in /tmp.

The platform stops a job with SIGTERM; the case in progress then leaves nothing half-written, the
finished masks stay, and a rerun goes on from there.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .folder import FolderRun


class Interrupted(BaseException):
    """SIGTERM or SIGINT: a BaseException, so that no per-case ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    def explain(self, run: FolderRun | None) -> str:
        """One line for the user: what was interrupted, what is kept, what to do."""
        where = f" while segmenting {run.current}" if run is not None and run.current else ""
        done = f"; {run.written} mask(s) written this run" if run is not None else ""
        return f"{self}{where}{done}; no partial mask left, rerun to go on"


def caches_in_tmp() -> None:
    """Point library caches at $TMPDIR (default /tmp): in the container the only writable place but /output."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    for var, sub in (("XDG_CACHE_HOME", "cache"), ("TORCH_HOME", "torch"), ("MPLCONFIGDIR", "matplotlib")):
        os.environ.setdefault(var, str(tmp / sub))


def _raise_interrupted(signum: int, frame: Any) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal kills at once
        signal.signal(sig, signal.SIG_DFL)
    raise Interrupted(signum)


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise ``Interrupted`` inside the block (the platform stops a job with
    SIGTERM): the case in progress leaves no partial file, finished masks stay, and a rerun goes on."""
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
