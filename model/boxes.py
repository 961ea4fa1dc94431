"""Boxes of voxels: a crop as slices per axis, its own grid, and putting it back (the uncrop).

The crop (``model/cropping.py``) and the undo (``PreparedVolume.undo``) both work in these terms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.geometry import Grid, Orientation

Box = tuple[slice, slice, slice]


def whole(shape: Sequence[int]) -> Box:
    return slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2])


def grow_box(box: Box, shape: Sequence[int], by: Sequence[int]) -> Box:
    """``box`` grown by ``by`` voxels per side, within the volume."""
    out = [slice(max(0, sl.start - b), min(n, sl.stop + b)) for sl, n, b in zip(box, shape, by, strict=True)]
    return out[0], out[1], out[2]


def scale_box(box: Box, source: Grid, target: Grid) -> Box:
    """The same physical box on another grid that shares the origin and axes (floor/ceil outwards)."""
    out = []
    for ax, sl in enumerate(box):
        ratio = source.spacing[ax] / target.spacing[ax]
        lo = max(0, int(np.floor(sl.start * ratio)))
        hi = min(target.size[ax], int(np.ceil((sl.stop - 1) * ratio)) + 2)
        out.append(slice(lo, hi))
    return out[0], out[1], out[2]


def sub_grid(grid: Grid, box: Box) -> Grid:
    """Geometry of ``array[box]``: the crop as a grid of its own (resampling back needs it)."""
    direction = np.asarray(grid.direction).reshape(3, 3)
    start = np.array([sl.start for sl in box], dtype=float)
    origin = np.asarray(grid.origin) + direction @ (start * np.asarray(grid.spacing))
    size = tuple(sl.stop - sl.start for sl in box)
    return Grid((size[0], size[1], size[2]), grid.spacing, tuple(float(v) for v in origin), grid.direction)


def ras_box_on_input(box: Box, orientation: Orientation, input_size: Sequence[int]) -> Box:
    """The box of the input's own index grid that holds ``box`` of its RAS array.

    RAS axis j is input axis ``perm[j]``, read backwards where ``flips[j]``; so
    ``orientation.from_ras(ras_array[box])`` equals ``input_array[ras_box_on_input(box, ...)]``.
    """
    out: list[slice] = [slice(0, 0)] * 3
    for j, (p, flip) in enumerate(zip(orientation.perm, orientation.flips, strict=True)):
        sl, n = box[j], input_size[p]
        out[p] = slice(n - sl.stop, n - sl.start) if flip else sl
    return out[0], out[1], out[2]


def paste(crop: np.ndarray, box: Box, shape: Sequence[int], fill: float | int = 0) -> np.ndarray:
    """Undo a crop: put ``crop`` back at ``box`` inside a new array of ``shape``."""
    out = np.full(tuple(shape), fill, dtype=crop.dtype)
    out[box] = crop
    return out
