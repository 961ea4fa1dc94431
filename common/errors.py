"""The two errors that end one case (or a run) with one line naming the file and the problem."""

from __future__ import annotations


class InputError(RuntimeError):
    """An input that stops one case (or the whole run, where it is a folder)."""

class OutputError(RuntimeError):
    """An output that could not be written whole (disk full, quota, I/O error): nothing partial is left,
    the case fails with this one line and the run goes on."""
