"""PET preprocessing as the paper's MONAI chain does it, and its undo in one place.

Arrays here are in (x, y, z) index order, as MONAI's ITK reader gives them (SimpleITK's numpy view is
(z, y, x)). The network was trained on MONAI's RAS arrays, so the axis order matters: the
anisotropic last stride of the paper's network acts on z.

    prepare                          PreparedVolume.undo (reverse order)
    1. orientation to RAS            3. orientation back (a view)
    2. resampling to the spacing     1. resampling back onto the crop's box of the RAS grid
       (the crop: model/cropping)    2. the box back inside the whole grid (``OnInput.image``)
    3. percentile scaling to [0, 1]     (nothing to undo: the scores are not intensities)

The same chain exists twice more, and the three must change together: training's MONAI transforms
(``training/recipe.py`` ``deterministic_transforms``) and the MONAI reference the tests and
benchmarks compare against (``benchmarks/monai_reference.py``); ``tests/test_preprocessing.py``
checks that this module and training's chain give the same working volume.

Non-finite voxels (NaN, Inf) are set to 0 before anything else, in training as in inference
(``read_array``, ``finite_or_zero``): one NaN must neither poison the percentiles nor blank the scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from common.geometry import Grid, Orientation
from common.images import finite_or_zero

from .boxes import Box, paste, ras_box_on_input, sub_grid

if TYPE_CHECKING:
    from .cropping import Region

SPACING_TOLERANCE_MM = 1e-3
#: Body = voxels above this fraction of the intensity range (scale-free: SUV or Bq/ml alike).
BODY_LEVEL = 0.01
#: CT voxels above this (HU) are body too, when a CT on the PET's grid is given.
BODY_HU = -500.0
#: Score given to voxels outside the kept box: background for every network, finite (no NaN).
BACKGROUND_SCORE = -1.0e4




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
class OnInput:
    """Per-network scores back on the input's own grid, kept inside ``box`` (background outside).

    ``box`` is on the input's (x, y, z) index grid; each score array has its shape. The vote runs on
    these box arrays (it is per voxel, so it commutes with the uncrop), and ``image``/``full`` put a
    result into the whole grid: the last step of the undo.
    """

    grid: Grid
    box: Box
    scores: list[np.ndarray]

    def full(self, values: np.ndarray, fill: float | int = 0) -> np.ndarray:
        """``values`` (the box's shape) inside the whole input grid, ``fill`` outside; (x, y, z)."""
        return paste(values, self.box, self.grid.size, fill)

    def image(self, values: np.ndarray, fill: float | int = 0) -> sitk.Image:
        """``values`` as an image with exactly the input's size, spacing, origin and direction."""
        return self.grid.image(self.full(values, fill))


@dataclass
class PreparedVolume:
    """A PET on the network's working grid, and what the undo needs to get back to the input.

    ``work`` is the scaled volume on ``work_grid`` that the windows run over; ``body`` marks the body
    on the input's RAS grid (None for a flat PET, where nothing can be a lesion).
    """

    grid: Grid
    orientation: Orientation
    ras: Grid
    work_grid: Grid
    work: np.ndarray
    body: np.ndarray | None
    resampled: bool
    nonfinite_voxels: int = 0

    @classmethod
    def working(cls, work: np.ndarray, spacing: tuple[float, float, float]) -> PreparedVolume:
        """An already preprocessed (RAS, working spacing, scaled) volume, as training caches it."""
        grid = Grid(tuple(int(n) for n in work.shape), tuple(float(s) for s in spacing), (0.0, 0.0, 0.0),
                    (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        body = body_mask(work, (0.0, 1.0))
        return cls(grid, Orientation((0, 1, 2), (False, False, False)), grid, grid, work, body, False)

    def undo(self, parts: Sequence[tuple[Region, np.ndarray]]) -> OnInput:
        """Scores of the windows' crops back to the input: ``prepare`` in reverse order.

        ``parts``: (region, scores) per group of networks, scores (M, ...) on ``region.work_box`` of
        the working grid; every region keeps the same ``box``. Resampled back onto that box of the
        RAS grid (or cut to it where the spacing was kept), then oriented back, as views.
        """
        box = parts[0][0].box
        if any(region.box != box for region, _ in parts):
            raise ValueError(f"the parts of one prediction must keep one box, got {[r.box for r, _ in parts]}")
        scores = []
        for region, part in parts:
            inner = tuple(slice(b.start - w.start, b.stop - w.start) for b, w in zip(box, region.work_box, strict=True))
            for s in part:
                if self.resampled:
                    s = resample_back(s, sub_grid(self.work_grid, region.work_box), sub_grid(self.ras, box),
                                      BACKGROUND_SCORE)
                else:
                    s = np.ascontiguousarray(s[inner])
                scores.append(self.orientation.from_ras(s))
        return OnInput(self.grid, ras_box_on_input(box, self.orientation, self.grid.size), scores)

    def nothing(self) -> OnInput:
        """The undo of a prediction that scored nothing (a flat PET): an empty box."""
        return OnInput(self.grid, (slice(0, 0), slice(0, 0), slice(0, 0)), [])


def body_mask(ras_array: np.ndarray, intensity_range: tuple[float, float], ct_ras: np.ndarray | None = None
              ) -> np.ndarray | None:
    """Body voxels: above ``BODY_LEVEL`` of the intensity range (or CT above ``BODY_HU``); None when flat."""
    a_min, a_max = intensity_range
    if not a_max > a_min:
        return None
    body = ras_array > a_min + BODY_LEVEL * (a_max - a_min)
    if ct_ras is not None:
        body |= ct_ras > BODY_HU
    return body


def prepare(pet: sitk.Image, spacing: tuple[float, float, float], lower: float, upper: float,
            ct: sitk.Image | None = None) -> PreparedVolume:
    """RAS, the working spacing (linear; skipped when already there), percentile scaling to [0, 1].

    The body is found on the unscaled RAS array before it is scaled (in place where the spacing was
    kept); ``ct``, on the PET's grid, marks body too.
    """
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
    a_min, a_max = percentiles(work, lower, upper)
    ct_ras = None if ct is None else orientation.to_ras(sitk.GetArrayViewFromImage(ct).transpose(2, 1, 0))
    body = body_mask(ras_array, (a_min, a_max), ct_ras)
    del array, ras_array
    work = scale_intensity(work, a_min, a_max)
    return PreparedVolume(grid, orientation, ras, work_grid, work, body, resampled, nonfinite)
