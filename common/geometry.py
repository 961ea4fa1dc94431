"""Voxel grids: their geometry, the orientation that brings an array to RAS, and comparing two grids.

Arrays in this project are in (x, y, z) index order, as MONAI's ITK reader gives them (SimpleITK's
numpy view is (z, y, x)); grids are in ITK terms (LPS world).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import SimpleITK as sitk

#: LPS (ITK's world) to RAS (MONAI's world): flip the first two world axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

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


class HasGrid(Protocol):
    """Anything with an ITK grid: ``sitk.Image``, or ``sitk.ImageFileReader`` after ReadImageInformation."""

    def GetSize(self) -> Sequence[int]: ...
    def GetSpacing(self) -> Sequence[float]: ...
    def GetOrigin(self) -> Sequence[float]: ...
    def GetDirection(self) -> Sequence[float]: ...

def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"

def grid_differences(a: HasGrid, b: HasGrid, tol: float = 1e-3, min_mm: float = 0.0) -> list[str]:
    """What differs between two grids, as readable phrases (empty when they match).

    Spacing and origin may differ by ``tol`` times the smallest spacing (the origin by ``min_mm``
    where that is larger: headers that store float32 geometry round it); direction cosines by
    ``tol``; sizes must match exactly.
    """
    diffs = []
    if tuple(a.GetSize()) != tuple(b.GetSize()):
        diffs.append(f"size {tuple(a.GetSize())} vs {tuple(b.GetSize())}")
    sa, sb = np.asarray(a.GetSpacing(), float), np.asarray(b.GetSpacing(), float)
    if sa.shape != sb.shape:
        diffs.append(f"dimension {sa.size} vs {sb.size}")
        return diffs
    mm_tol = tol * float(min(sa.min(), sb.min()))
    if not np.allclose(sa, sb, rtol=0, atol=mm_tol):
        diffs.append(f"spacing {_fmt(sa)} vs {_fmt(sb)}")
    oa, ob = np.asarray(a.GetOrigin(), float), np.asarray(b.GetOrigin(), float)
    if not np.allclose(oa, ob, rtol=0, atol=max(mm_tol, min_mm)):
        diffs.append(f"origin {_fmt(oa)} vs {_fmt(ob)}")
    da, db = np.asarray(a.GetDirection(), float), np.asarray(b.GetDirection(), float)
    if not np.allclose(da, db, rtol=0, atol=tol):
        diffs.append(f"direction {_fmt(da)} vs {_fmt(db)}")
    return diffs

#: Origin/spacing slack (mm) when pairing images of one study (CT, label and PET written by other tools).
STUDY_GRID_MM = 1e-2

def same_geometry(a: HasGrid, b: HasGrid, tol: float = 1e-3) -> bool:
    """Two images of one study on one voxel grid, up to header rounding."""
    return not grid_differences(a, b, tol, STUDY_GRID_MM)
