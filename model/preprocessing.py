"""PET preprocessing as the paper's MONAI chain does it, with the undo steps beside each one.

Arrays here are in (x, y, z) index order, as MONAI's ITK reader gives them (SimpleITK's numpy view is
(z, y, x)). The network was trained on MONAI's RAS arrays, so the axis order matters: the
anisotropic last stride of the paper's network acts on z.

Pairs: ``Orientation.to_ras`` / ``Orientation.from_ras``, ``resample_to_spacing`` /
``resample_back``. ``prepare`` runs the forward steps once per case and keeps what the undo needs.

Non-finite voxels (NaN, Inf) are set to 0 before anything else, in training as in inference
(``read_array``, ``finite_or_zero``): one NaN must neither poison the percentiles nor blank the scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from common.geometry import Grid, Orientation
from common.images import finite_or_zero

SPACING_TOLERANCE_MM = 1e-3




def read_array(image: sitk.Image) -> tuple[np.ndarray, int]:
    """float32 (x, y, z) copy of a scalar 3D image, non-finite voxels set to 0 (and counted)."""
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False).transpose(2, 1, 0)
    return array, finite_or_zero(array)


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


def percentile_scale(array: np.ndarray, lower: float = 0.05, upper: float = 99.95) -> np.ndarray:
    """MONAI ScaleIntensityRangePercentiles(lower, upper, 0, 1, clip=True) on a whole volume."""
    out = np.array(array, dtype=np.float32, copy=True)
    a_min, a_max = percentiles(out, lower, upper)
    return scale_intensity(out, a_min, a_max)


@dataclass
class PreparedVolume:
    """A PET on the network's working grid, and what the undo steps need to get back.

    ``ras_array`` is the unscaled input in RAS order (the body crop is found on it, then it is
    dropped); ``work`` is the scaled volume on ``work_grid`` that the windows run over.
    """

    orientation: Orientation
    ras: Grid
    work_grid: Grid
    work: np.ndarray
    ras_array: np.ndarray | None
    intensity_range: tuple[float, float]
    resampled: bool
    nonfinite_voxels: int = 0

    @classmethod
    def working(cls, work: np.ndarray, spacing: tuple[float, float, float]) -> PreparedVolume:
        """An already preprocessed (RAS, working spacing, scaled) volume, as training caches it."""
        grid = Grid(tuple(int(n) for n in work.shape), tuple(float(s) for s in spacing), (0.0, 0.0, 0.0),
                    (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        return cls(Orientation((0, 1, 2), (False, False, False)), grid, grid, work, work, (0.0, 1.0), False)

    def restore(self, ras_mask: np.ndarray, like: sitk.Image) -> sitk.Image:
        """Undo the orientation of a mask on the RAS input grid: an image on ``like``'s grid."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.orientation.from_ras(ras_mask).transpose(2, 1, 0)))
        image.CopyInformation(like)
        return image


def prepare(pet: sitk.Image, spacing: tuple[float, float, float], lower: float, upper: float) -> PreparedVolume:
    """RAS, the working spacing (linear; skipped when already there), percentile scaling to [0, 1]."""
    grid = Grid.of(pet)
    orientation = Orientation.of(grid.direction)
    array, nonfinite = read_array(pet)
    ras_array = orientation.to_ras(array)
    ras = orientation.ras_grid(grid)
    resampled = needs_resampling(ras.spacing, spacing)
    if resampled:
        work_grid = target_grid(ras, spacing)
        work = resample_to_spacing(ras_array, ras, work_grid)
    else:
        work_grid = ras
        work = np.ascontiguousarray(ras_array)
        if np.shares_memory(work, ras_array):  # scaled in place below; the body is found on the unscaled
            work = work.copy()
    a_min, a_max = percentiles(work, lower, upper)
    work = scale_intensity(work, a_min, a_max)
    return PreparedVolume(orientation, ras, work_grid, work, ras_array, (a_min, a_max), resampled, nonfinite)
