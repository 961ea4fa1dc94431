"""Small pieces of 3-D geometry shared by sampling, rendering and grid handling.

Kept apart so that the random rotation drawn for a lesion and the fixed rotations of organs go
through one function: its number of random draws is part of every phantom's identity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def rotation(rng: np.random.Generator | None = None, angles: Sequence[float] | None = None) -> np.ndarray:
    """Rotation matrix from three angles (radians) or, with rng, a uniformly random one (4 normal draws)."""
    if angles is None:
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        return np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def direction_matrix(direction: Sequence[float] | None) -> np.ndarray:
    """3x3 direction cosines (columns = image axes) from ITK's row-major 9-tuple; refuses non-orthonormal ones."""
    if direction is None:
        return np.eye(3)
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        raise ValueError(f"direction is not orthonormal: {list(direction)}")
    return d


def signed_permutation(d: np.ndarray) -> tuple[list[int], list[int]] | None:
    """(physical axis, sign) per image axis if `d` only flips/permutes axes, else None (oblique)."""
    axes, signs = [], []
    for c in range(3):
        k = int(np.argmax(np.abs(d[:, c])))
        if abs(abs(d[k, c]) - 1.0) > 1e-6:
            return None
        axes.append(k)
        signs.append(1 if d[k, c] > 0 else -1)
    return axes, signs


def centred_origin(
    centre_mm: Sequence[float],
    shape: Sequence[int],
    spacing: Sequence[float],
    direction: Sequence[float] | None = None,
) -> tuple[float, float, float]:
    """Origin that puts the centre of a grid (x, y, z sizes) at `centre_mm`, for any direction.

    Useful to aim a small test grid at a known lesion (info["lesions"][i]["centre_mm"]).
    """
    d = direction_matrix(direction)
    half = np.asarray(spacing, float) * (np.asarray(shape, float) - 1) / 2
    return tuple(float(v) for v in np.asarray(centre_mm, float) - d @ half)
