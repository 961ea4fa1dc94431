"""The body crop and its undo: which part of the working volume the windows run over.

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

``crop_scores`` / ``uncrop`` are the undo: scores back from the working grid to the box on the
input's grid, then pasted into the whole grid with background outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from common.geometry import Grid

from .preprocessing import PreparedVolume, resample_back
from .window_grid import window_starts, window_step

Box = tuple[slice, slice, slice]

CROP_MODES = ("exact", "body", "none")
DEFAULT_CROP = "exact"
#: Body = voxels above this fraction of the intensity range (scale-free: SUV or Bq/ml alike).
BODY_LEVEL = 0.01
#: CT voxels above this (HU) are body too, when a CT on the PET's grid is given.
BODY_HU = -500.0
#: Margin (mm) around the body inside which scores are kept.
MARGIN_MM = 10.0
#: Extra context (mm) the fast ``body`` mode gives the windows beyond the body box.
FAST_CONTEXT_MM = 60.0
#: Score given to voxels outside the box: background for every network, finite (no NaN).
BACKGROUND_SCORE = -1.0e4


@dataclass(frozen=True)
class Region:
    """Where scores are kept (``box``, input RAS grid) and where windows run (``work_box``)."""

    box: Box
    work_box: Box
    mode: str


def body_mask(volume: PreparedVolume, ct: sitk.Image | None = None) -> np.ndarray | None:
    """Body voxels on the input's RAS grid; None for a flat PET (nothing can be a lesion)."""
    a_min, a_max = volume.intensity_range
    if not a_max > a_min or volume.ras_array is None:
        return None
    body = volume.ras_array > a_min + BODY_LEVEL * (a_max - a_min)
    if ct is not None:
        ct_array = sitk.GetArrayViewFromImage(ct).transpose(2, 1, 0)
        body |= volume.orientation.to_ras(ct_array) > BODY_HU
    return body


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


def whole(shape: Sequence[int]) -> Box:
    return slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2])


def find_region(volume: PreparedVolume, body: np.ndarray | None, mode: str, roi: Sequence[int], overlap: float,
                margin_mm: float = MARGIN_MM, context_mm: float = FAST_CONTEXT_MM) -> Region | None:
    """The boxes of one case in one crop mode; None when there is no body (flat PET)."""
    if mode not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {mode!r}")
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


def sub_grid(grid: Grid, box: Box) -> Grid:
    """Geometry of ``array[box]``: the crop as a grid of its own (the undo-crop needs it)."""
    direction = np.asarray(grid.direction).reshape(3, 3)
    start = np.array([sl.start for sl in box], dtype=float)
    origin = np.asarray(grid.origin) + direction @ (start * np.asarray(grid.spacing))
    size = tuple(sl.stop - sl.start for sl in box)
    return Grid((size[0], size[1], size[2]), grid.spacing, tuple(float(v) for v in origin), grid.direction)


def crop_scores(scores: np.ndarray, volume: PreparedVolume, region: Region) -> list[np.ndarray]:
    """Undo the spacing and the window crop: each network's scores over ``region.box`` of the input grid."""
    out = []
    inner = tuple(slice(b.start - w.start, b.stop - w.start) for b, w in zip(region.box, region.work_box, strict=True))
    for s in scores:
        if volume.resampled:
            s = resample_back(s, sub_grid(volume.work_grid, region.work_box), sub_grid(volume.ras, region.box),
                              BACKGROUND_SCORE)
        else:
            s = np.ascontiguousarray(s[inner])
        out.append(s)
    return out


def paste(crop: np.ndarray, box: Box, shape: tuple[int, ...], fill: float | int = 0) -> np.ndarray:
    """Undo a crop: put ``crop`` back at ``box`` inside a new array of ``shape``."""
    out = np.full(shape, fill, dtype=crop.dtype)
    out[box] = crop
    return out
