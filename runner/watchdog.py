"""``--case-timeout``: a case that hangs (a dead network mount, a stuck loader) is given up, the run goes on.

A thread blocked in C cannot be stopped, so such a case is left behind as a daemon thread that
writes nothing; ``exit_with`` then ends the process with ``os._exit``, because a thread still inside
ITK makes the C++ runtime abort at a normal exit.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


#: Worker threads of cases given up by ``within``; a process that has any ends with ``os._exit``
#: (process.py), since a thread still inside ITK makes the C++ runtime abort at a normal exit.
ABANDONED: list[threading.Thread] = []


class CaseTimeout(RuntimeError):
    """A case that gave no result within ``--case-timeout`` seconds (a stuck read, a hung loader)."""


def within(seconds: float | None, work: Callable[[threading.Event], T], what: str) -> T:
    """``work(cancelled)`` in a worker thread, given up after ``seconds`` (None: run it here, no limit).

    A thread blocked in C (ITK waiting on a dead network mount) cannot be stopped; it is left behind
    as a daemon with ``cancelled`` set, and ``segment_file`` checks that before it writes anything,
    so an abandoned case never writes later. The predictor runs one prediction at a time, so a case
    hung inside the network step makes the next ones time out too, each named.
    """
    cancelled = threading.Event()
    if not seconds:
        return work(cancelled)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = work(cancelled)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"case {what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        cancelled.set()
        ABANDONED.append(thread)
        raise CaseTimeout(f"{what}: no result after {seconds:g} s (--case-timeout); abandoned, the run goes on")
    if "error" in box:
        raise box["error"]
    return box["value"]


def exit_with(code: int) -> None:
    """``sys.exit``, or ``os._exit`` when a case given up by ``--case-timeout`` is still stuck in ITK:
    a normal exit would run C++ destructors under it and abort (exit 134) instead of giving ``code``."""
    if any(thread.is_alive() for thread in ABANDONED):
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)
