"""From the requested image grid to an axis-aligned render grid and back.

Why two grids: anatomy is painted on an axis-aligned LPS grid (cheap bounding boxes, no rotation
per voxel). A grid that only flips or permutes axes is the same set of voxel centres, so the result
is re-indexed exactly; an oblique grid is rendered over its bounding box and resampled (linear for
PET/CT, nearest for the label). Either way a seed puts every structure at the same physical place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .params import Patient

#: autoPET's typical PET voxel size (mm) and in-plane matrix.
AUTOPET_SPACING = (2.0364, 2.0364, 3.0)
AUTOPET_INPLANE = 400


@dataclass(frozen=True)
class ImageGrid:
    """The grid the caller asked for: size (x, y, z), spacing, origin and direction (3x3, columns = axes)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: np.ndarray
    direction: np.ndarray

    def apply_to(self, img: sitk.Image) -> sitk.Image:
        img.SetSpacing(self.spacing)
        img.SetOrigin(tuple(self.origin))
        img.SetDirection(tuple(self.direction.ravel()))
        return img


@dataclass(frozen=True)
class RenderGrid:
    """Axis-aligned grid that is painted: sorted physical coordinates and spacing per axis (x, y, z).

    perm is (physical axis, sign) per image axis when the image grid only flips/permutes axes, None when
    it is oblique.
    """

    coords: tuple[np.ndarray, np.ndarray, np.ndarray]
    spacing: tuple[float, float, float]
    perm: tuple[list[int], list[int]] | None

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return (len(self.coords[2]), len(self.coords[1]), len(self.coords[0]))


def default_shape(patient: Patient, spacing: Sequence[float], d: np.ndarray) -> tuple[int, int, int]:
    """autoPET's 400x400 in-plane matrix and as many slices as this body's field of view needs."""
    t_start, t_end = patient.fov_t_mm
    phys = np.array([AUTOPET_INPLANE * AUTOPET_SPACING[0], AUTOPET_INPLANE * AUTOPET_SPACING[1], t_end - t_start])
    k = np.argmax(np.abs(d), axis=0)
    return tuple(max(1, int(round(phys[k[c]] / spacing[c]))) for c in range(3))


def plan_render_grid(grid: ImageGrid, perm: tuple[list[int], list[int]] | None) -> RenderGrid:
    """The axis-aligned grid covering the image grid: the same voxel centres, or the oblique grid's box."""
    shape, spacing, origin, d = grid.shape, grid.spacing, grid.origin, grid.direction
    if perm is not None:
        axes, signs = perm
        coords = [None, None, None]
        rspacing = [0.0, 0.0, 0.0]
        for c in range(3):
            k = axes[c]
            steps = origin[k] + signs[c] * spacing[c] * np.arange(shape[c])
            coords[k] = np.sort(steps)
            rspacing[k] = spacing[c]
        return RenderGrid(tuple(coords), tuple(rspacing), perm)
    corners = np.array(
        [[i, jj, kk] for i in (0, shape[0] - 1) for jj in (0, shape[1] - 1) for kk in (0, shape[2] - 1)],
        float,
    )
    pts = origin[None, :] + (corners * np.asarray(spacing)) @ d.T
    lo, hi = pts.min(0), pts.max(0)
    k = np.argmax(np.abs(d), axis=1)
    rspacing = [spacing[k[i]] for i in range(3)]
    coords = [
        lo[i] + rspacing[i] * np.arange(int(math.ceil((hi[i] - lo[i]) / rspacing[i])) + 2) - rspacing[i]
        for i in range(3)
    ]
    return RenderGrid(tuple(coords), tuple(rspacing), None)


def body_window(rg: RenderGrid, patient: Patient) -> list[np.ndarray]:
    """Index range per axis (x, y, z) of the render grid that can contain the body (+ PSF margin)."""
    b = patient.build
    A, B = b.half_width_mm, b.half_depth_mm
    x0, y0 = b.centre_xy_mm
    half_w = max(A * 1.02 + (2 * 48 + 5 if b.arms == "down" else 0), 255) + 25
    lo = np.array([x0 - half_w, y0 - B * 1.4 - 25, -1900.0])
    hi = np.array([x0 + half_w, y0 + B + 70, 420.0])
    return [np.searchsorted(rg.coords[i], [lo[i], hi[i]]) for i in range(3)]


def _orient(arr: np.ndarray, perm: tuple[list[int], list[int]]) -> np.ndarray:
    """Re-index a render-grid array [z, y, x] onto the flipped/permuted image grid (exact)."""
    axes, signs = perm
    flips = tuple(2 - axes[c] for c in range(3) if signs[c] < 0)
    order = [2 - axes[2 - a] for a in range(3)]
    if flips:
        arr = np.flip(arr, axis=flips)
    if order != [0, 1, 2]:
        arr = np.transpose(arr, order)
    return np.ascontiguousarray(arr)


def to_images(arrays: Sequence[np.ndarray], rg: RenderGrid, grid: ImageGrid) -> list[sitk.Image]:
    """PET, CT, label and organ-map arrays on the render grid as images on the requested grid."""
    if rg.perm is not None:
        return [grid.apply_to(sitk.GetImageFromArray(_orient(arr, rg.perm))) for arr in arrays]
    ref = grid.apply_to(sitk.Image(list(grid.shape), sitk.sitkUInt8))
    images = []
    resampling = ((sitk.sitkLinear, 0.0), (sitk.sitkLinear, -1000.0), (sitk.sitkNearestNeighbor, 0.0),
                  (sitk.sitkNearestNeighbor, 0.0))
    for arr, (interp, fill) in zip(arrays, resampling, strict=True):
        src = sitk.GetImageFromArray(arr)
        src.SetSpacing(tuple(rg.spacing))
        src.SetOrigin(tuple(float(c[0]) for c in rg.coords))
        images.append(sitk.Resample(src, ref, sitk.Transform(), interp, fill, src.GetPixelID()))
    return images
