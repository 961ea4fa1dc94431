"""Where MONAI's sliding window puts its windows (its scan interval), without running it.

The crop stage uses this to choose crops whose windows are windows of the uncropped run, and
the predictor to count windows for logs and the time budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def window_step(roi: int, overlap: float) -> int:
    """Distance between window starts along an axis longer than the ROI (MONAI's scan interval)."""
    return max(int(roi * (1 - overlap)), 1)


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Where MONAI's sliding window puts its windows along one axis (after padding to the ROI)."""
    if size <= roi:
        return [0]
    step = window_step(roi, overlap)
    starts = []
    k = 0
    while True:
        start = min(k * step, size - roi)
        starts.append(start)
        if start + roi >= size:
            return starts
        k += 1


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of windows MONAI's sliding window visits for a volume."""
    return int(np.prod([len(window_starts(n, r, overlap)) for n, r in zip(shape, roi, strict=True)]))
