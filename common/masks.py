"""Mask arithmetic shared by evaluation, scripts, benchmarks and tests (numpy only, in the image too)."""

from __future__ import annotations

import math

import numpy as np


def dice(a: np.ndarray, b: np.ndarray, both_empty: float = math.nan) -> float:
    """2|A & B| / (|A| + |B|) of two masks (non-zero = in); ``both_empty`` when neither has a voxel.

    The challenge's definition leaves two empty masks undefined (NaN, the default); a check of
    whether two masks agree passes ``both_empty=1.0``.
    """
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 2.0 * int(np.count_nonzero(a & b)) / total if total else both_empty
