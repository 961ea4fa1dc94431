"""The body crop: which part of the working volume the windows run over.

Two boxes per case. ``box`` lies on the input's RAS grid: the body (PET above 1 % of its
intensity range, or CT above -500 HU) grown by ``margin_mm``; scores are kept there and every
voxel outside it is background. ``work_box`` lies on the working grid and is what the sliding
window runs over. The crop modes differ only in ``work_box``:

- ``exact`` (the default): the union of the uncropped run's windows that touch the box. Every
  voxel of the box then gets the same windows, gaussian weights and sums as without the crop,
  so the scores inside the box are the uncropped ones to float precision. At overlap 0.75 the
  windows reach a whole window beyond the body, so this saves windows only where the field of
  view is much wider than the body.
- ``body`` (fast, approximate): the box grown by ``context_mm`` and snapped outward onto the
  uncropped run's window grid, so every window it computes is one of the uncropped run's;
  voxels near the box's edge lose the windows that straddle it. Its agreement with ``exact`` at
  the paper's settings is measured by ``benchmarks/crop_agreement.py`` (docs/performance.md).
- ``none``: the whole field of view, as the authors ran it.

The undo (scores back from the working grid to the box, the box back into the whole input grid) is
``PreparedVolume.undo`` in ``model/preprocessing.py``, beside the steps it reverses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .boxes import Box, grow_box, scale_box, whole
from .preprocessing import PreparedVolume
from .window_grid import window_starts, window_step

CROP_MODES = ("exact", "body", "none")
DEFAULT_CROP = "exact"
#: Margin (mm) around the body inside which scores are kept.
MARGIN_MM = 10.0
#: Extra context (mm) the fast ``body`` mode gives the windows beyond the body box.
FAST_CONTEXT_MM = 60.0


@dataclass(frozen=True)
class Region:
    """Where scores are kept (``box``, input RAS grid) and where windows run (``work_box``)."""

    box: Box
    work_box: Box
    mode: str




def body_box(mask: np.ndarray, margin: tuple[int, int, int], min_fraction: float = 0.01) -> Box | None:
    """Bounding box of the body in a boolean (x, y, z) mask, grown by ``margin`` voxels.

    An index along an axis counts as body when its slab holds at least ``min_fraction`` of the
    fullest slab's voxels, so stray noise voxels in the air do not stretch the box. None when
    the mask is empty.
    """
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        profile = mask.sum(axis=other)
        peak = profile.max()
        if peak == 0:
            return None
        keep = np.flatnonzero(profile >= max(1.0, min_fraction * peak))
        lo = max(0, int(keep[0]) - margin[axis])
        hi = min(mask.shape[axis], int(keep[-1]) + 1 + margin[axis])
        box.append(slice(lo, hi))
    return box[0], box[1], box[2]






def window_aligned_box(box: Box, shape: Sequence[int], roi: Sequence[int], overlap: float) -> Box:
    """Grow a box to the union of the whole-volume windows that touch it (the ``exact`` crop).

    Inside such a crop MONAI's sliding window visits exactly those windows, so every voxel of the
    box gets the same windows, weights and sum as without the crop.
    """
    out = []
    for sl, n, r in zip(box, shape, roi, strict=True):
        if n <= r:
            out.append(slice(0, n))
            continue
        touching = [s for s in window_starts(n, r, overlap) if s < sl.stop and s + r > sl.start]
        out.append(slice(touching[0], touching[-1] + r))
    return out[0], out[1], out[2]


def at_least_roi(box: Box, shape: Sequence[int], roi: Sequence[int]) -> Box:
    """Grow a box around its centre to one window where the volume allows, rather than pad with air."""
    out = []
    for sl, n, r in zip(box, shape, roi, strict=True):
        length = sl.stop - sl.start
        if length >= r or n <= r:
            out.append(sl if n > r else slice(0, n))
            continue
        start = min(max(0, sl.start - (r - length) // 2), n - r)
        out.append(slice(start, start + r))
    return out[0], out[1], out[2]


def grid_aligned_box(box: Box, shape: Sequence[int], roi: Sequence[int], overlap: float) -> Box:
    """Snap a box (at least one window long per axis) outward onto the whole volume's window grid.

    The start moves down to a whole-volume window start and the length up to one window plus
    whole steps (or to the volume's end), so every window MONAI visits inside the crop is a window
    of the uncropped run too, at the same place with the same gaussian (the ``body`` crop).
    """
    out = []
    for sl, n, r in zip(box, shape, roi, strict=True):
        if n <= r:
            out.append(slice(0, n))
            continue
        step = window_step(r, overlap)
        start = (sl.start // step) * step
        length = max(sl.stop - start, r)
        length = r + -(-(length - r) // step) * step
        out.append(slice(start, min(start + length, n)))
    return out[0], out[1], out[2]




def find_region(volume: PreparedVolume, mode: str, roi: Sequence[int], overlap: float,
                margin_mm: float = MARGIN_MM, context_mm: float = FAST_CONTEXT_MM) -> Region | None:
    """The boxes of one case in one crop mode (around ``volume.body``); None when there is no body (flat PET)."""
    if mode not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {mode!r}")
    body = volume.body
    if body is None:
        return None
    shape = volume.work.shape
    if mode == "none":
        return Region(whole(volume.ras.size), whole(shape), mode)
    box = body_box(body, tuple(int(np.ceil(margin_mm / s)) for s in volume.ras.spacing))
    if box is None:
        return None
    if mode == "exact":
        return Region(box, window_aligned_box(_on_work_grid(box, volume), shape, roi, overlap), mode)
    return fast_region(volume, Region(box, box, mode), roi, overlap, context_mm)


def fast_region(volume: PreparedVolume, region: Region, roi: Sequence[int], overlap: float,
                context_mm: float = FAST_CONTEXT_MM) -> Region:
    """The ``body`` crop of a region: its box grown by ``context_mm``, snapped onto the window grid.

    The kept box stays ``region.box``, so scores of both crops can be voted together.
    """
    shape = volume.work.shape
    context = grow_box(_on_work_grid(region.box, volume), shape,
                       [int(np.ceil(context_mm / s)) for s in volume.work_grid.spacing])
    return Region(region.box, grid_aligned_box(at_least_roi(context, shape, roi), shape, roi, overlap), "body")


def _on_work_grid(box: Box, volume: PreparedVolume) -> Box:
    return scale_box(box, volume.ras, volume.work_grid) if volume.resampled else box





