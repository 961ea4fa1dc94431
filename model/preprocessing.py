"""PET preprocessing as the paper's MONAI chain does it, with the undo steps beside each one.

Arrays here are in (x, y, z) index order, as MONAI's ITK reader gives them (SimpleITK's numpy view is
(z, y, x)). The network was trained on MONAI's RAS arrays, so the axis order matters: the
anisotropic last stride of the paper's network acts on z.

Pairs: ``Orientation.to_ras`` / ``Orientation.from_ras``, ``resample_to_spacing`` /
``resample_back``, ``body_box`` + slicing / ``paste``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

#: LPS (ITK's world) to RAS (MONAI's world): flip the first two world axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
SPACING_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class Grid:
    """Geometry of a 3D voxel grid in ITK terms (LPS world, index order x, y, z)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # row-major 3x3, columns are the axes' directions

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                   tuple(image.GetDirection()))

    def image(self, array_xyz: np.ndarray) -> sitk.Image:
        """A SimpleITK image of an (x, y, z) array on this grid."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
        self.stamp(image)
        return image

    def stamp(self, image: sitk.Image) -> None:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)

    def reference(self) -> sitk.Image:
        """An empty image with this geometry, the target of a resampling."""
        ref = sitk.Image([int(s) for s in self.size], sitk.sitkUInt8)
        self.stamp(ref)
        return ref


@dataclass(frozen=True)
class Orientation:
    """The axis permutation and flips that bring an array to RAS (MONAI's Orientation('RAS')).

    ``ras = flip(transpose(array, perm), flips)``; RAS axis j comes from array axis ``perm[j]``.
    """

    perm: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @classmethod
    def of(cls, direction: tuple[float, ...]) -> Orientation:
        ras = _LPS_TO_RAS @ np.asarray(direction, dtype=float).reshape(3, 3)
        perm: list[int] = [-1, -1, -1]
        flips = [False, False, False]
        remaining = np.abs(ras.copy())
        # Greedy nearest-axis assignment, largest cosine first (what nibabel's io_orientation does
        # for grids that are not exactly axis-aligned).
        for _ in range(3):
            world, axis = np.unravel_index(np.argmax(remaining), remaining.shape)
            perm[world] = int(axis)
            flips[world] = bool(ras[world, axis] < 0)
            remaining[world, :] = -1.0
            remaining[:, axis] = -1.0
        return cls((perm[0], perm[1], perm[2]), (flips[0], flips[1], flips[2]))

    @property
    def is_identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flips)

    def to_ras(self, array: np.ndarray) -> np.ndarray:
        """(x, y, z) array -> RAS array (a view where possible)."""
        out = array.transpose(self.perm)
        return out[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]

    def from_ras(self, array: np.ndarray) -> np.ndarray:
        """Undo ``to_ras`` on a RAS array."""
        out = array[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]
        return out.transpose(np.argsort(self.perm))

    def ras_grid(self, grid: Grid) -> Grid:
        """Geometry of the reoriented array: same voxels, same physical places."""
        direction = np.asarray(grid.direction, dtype=float).reshape(3, 3)
        size = [grid.size[p] for p in self.perm]
        first = [0, 0, 0]  # index in the original grid of the RAS array's voxel (0, 0, 0)
        new_dir = np.zeros((3, 3))
        for j, (p, f) in enumerate(zip(self.perm, self.flips, strict=True)):
            first[p] = grid.size[p] - 1 if f else 0
            new_dir[:, j] = -direction[:, p] if f else direction[:, p]
        origin = np.asarray(grid.origin) + direction @ (np.asarray(first) * np.asarray(grid.spacing))
        return Grid((size[0], size[1], size[2]), tuple(float(grid.spacing[p]) for p in self.perm),
                    tuple(float(v) for v in origin), tuple(float(v) for v in new_dir.ravel()))


def read_array(image: sitk.Image) -> tuple[np.ndarray, int]:
    """float32 (x, y, z) copy of a scalar 3D image, non-finite voxels set to 0 (and counted)."""
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False).transpose(2, 1, 0)
    bad = ~np.isfinite(array)
    n_bad = int(bad.sum())
    if n_bad:
        array[bad] = 0.0
    return array, n_bad


def needs_resampling(spacing: tuple[float, ...], target: tuple[float, ...]) -> bool:
    return any(abs(a - b) > SPACING_TOLERANCE_MM for a, b in zip(spacing, target, strict=True))


def target_grid(ras: Grid, spacing: tuple[float, float, float]) -> Grid:
    """The grid MONAI's Spacing makes: first voxel centre kept, round(extent / spacing) + 1 voxels."""
    size = tuple(int(round((n - 1) * s / t)) + 1 for n, s, t in zip(ras.size, ras.spacing, spacing, strict=True))
    return Grid((size[0], size[1], size[2]), tuple(float(t) for t in spacing), ras.origin, ras.direction)


def _resample(image: sitk.Image, grid: Grid, interpolator: int, default: float) -> sitk.Image:
    return sitk.Resample(image, grid.reference(), sitk.Transform(), interpolator, default,
                         image.GetPixelID(), True)  # border values beyond the edge, as MONAI's Spacing


def resample_to_spacing(ras_array: np.ndarray, ras: Grid, target: Grid) -> np.ndarray:
    """Linear resampling of a RAS array onto the target grid."""
    moved = _resample(ras.image(ras_array.astype(np.float32, copy=False)), target, sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(moved).transpose(2, 1, 0)


def resample_back(scores: np.ndarray, source: Grid, destination: Grid, default: float) -> np.ndarray:
    """Linear resampling of a score array from the working grid back onto (part of) the input's grid."""
    moved = _resample(source.image(scores.astype(np.float32, copy=False)), destination, sitk.sitkLinear, default)
    return sitk.GetArrayFromImage(moved).transpose(2, 1, 0)


def percentiles(array: np.ndarray, lower: float, upper: float) -> tuple[float, float]:
    """np.percentile's linear interpolation, from one partition pass instead of a sort.

    torch.quantile refuses more than 2**24 elements; whole-body PETs have ~5e7.
    """
    flat = array.reshape(-1)
    n = flat.size
    ranks = [(n - 1) * q / 100.0 for q in (lower, upper)]
    kth = sorted({int(np.floor(r)) for r in ranks} | {min(int(np.floor(r)) + 1, n - 1) for r in ranks})
    part = np.partition(flat, kth)
    values = []
    for r in ranks:
        lo = int(np.floor(r))
        hi = min(lo + 1, n - 1)
        frac = r - lo
        values.append(float(part[lo]) + (float(part[hi]) - float(part[lo])) * frac)
    return values[0], values[1]


def scale_intensity(array: np.ndarray, a_min: float, a_max: float) -> np.ndarray:
    """MONAI ScaleIntensityRange(a_min, a_max, 0, 1, clip=True), in place on a float32 array.

    A flat volume (a_max == a_min) becomes ``array - a_min`` clipped, as MONAI does: an all-zero
    PET stays zero and never turns into NaN.
    """
    array -= np.float32(a_min)
    if a_max != a_min:
        array /= np.float32(a_max - a_min)
    np.clip(array, 0.0, 1.0, out=array)
    return array


def body_box(mask: np.ndarray, margin: tuple[int, int, int], min_fraction: float = 0.01
             ) -> tuple[slice, slice, slice] | None:
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


def scale_box(box: tuple[slice, slice, slice], source: Grid, target: Grid) -> tuple[slice, slice, slice]:
    """The same physical box on another grid that shares the origin and axes (floor/ceil outwards)."""
    out = []
    for ax, sl in enumerate(box):
        ratio = source.spacing[ax] / target.spacing[ax]
        lo = max(0, int(np.floor(sl.start * ratio)))
        hi = min(target.size[ax], int(np.ceil((sl.stop - 1) * ratio)) + 2)
        out.append(slice(lo, hi))
    return out[0], out[1], out[2]


def sub_grid(grid: Grid, box: tuple[slice, slice, slice]) -> Grid:
    """Geometry of ``array[box]``: the crop as a grid of its own (the undo-crop needs it)."""
    direction = np.asarray(grid.direction).reshape(3, 3)
    start = np.array([sl.start for sl in box], dtype=float)
    origin = np.asarray(grid.origin) + direction @ (start * np.asarray(grid.spacing))
    size = tuple(sl.stop - sl.start for sl in box)
    return Grid((size[0], size[1], size[2]), grid.spacing, tuple(float(v) for v in origin), grid.direction)


def paste(crop: np.ndarray, box: tuple[slice, slice, slice], shape: tuple[int, ...], fill: float | int = 0
          ) -> np.ndarray:
    """Undo a crop: put ``crop`` back at ``box`` inside a new array of ``shape``."""
    out = np.full(shape, fill, dtype=crop.dtype)
    out[box] = crop
    return out


def percentile_scale(array: np.ndarray, lower: float = 0.05, upper: float = 99.95) -> np.ndarray:
    """MONAI ScaleIntensityRangePercentiles(lower, upper, 0, 1, clip=True) on a whole volume."""
    out = np.array(array, dtype=np.float32, copy=True)
    a_min, a_max = percentiles(out, lower, upper)
    return scale_intensity(out, a_min, a_max)
