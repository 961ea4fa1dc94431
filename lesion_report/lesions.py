"""Per-lesion and per-case numbers from a mask and its PET in SUV: what a clinician or a trial reads.

A mask is where the challenge stops; a report on disease burden reads lesion count, total metabolic
tumour volume (TMTV), total lesion glycolysis (TLG), SUVmax, SUVpeak and the spread of disease
(Dmax). Lesions are the 18-connected components of the mask, as the challenge's metrics count them,
and everything is measured on the PET's own grid (the mask must lie on it), in physical millimetres
through the image's spacing, origin and direction, so a flipped or permuted grid gives the same
numbers. Non-finite PET voxels count as SUV 0, the rule inference applies too.

Lesions are numbered 1, 2, ... by decreasing volume, then decreasing SUVmax (ties beyond that: the
first in the image's memory order), so lesion 1 is the largest in the JSON, the CSV and the QA picture
alike, whatever the grid's direction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.distance import pdist

from common.geometry import grid_differences
from common.images import finite_or_zero

#: Face- and edge-neighbours, not corners: the official autoPET evaluation's lesions.
CONNECTIVITY = 18
#: SUVpeak's sphere: 1 cm^3 (PERCIST), so a radius of (3 / 4pi)^(1/3) cm = 6.2035 mm.
SUV_PEAK_RADIUS_MM = 10.0 * (3.0 / (4.0 * math.pi)) ** (1.0 / 3.0)


@dataclass(frozen=True)
class Lesion:
    """One connected component of the mask.

    ``suv_peak``: the highest mean SUV over a 1 cm^3 sphere centred on a voxel of the lesion (every
    PET voxel inside the image whose centre lies within 6.2 mm of that centre; the sphere may reach
    beyond the lesion, as PERCIST defines it). ``vote_share``: with an ensemble, the mean share of
    networks that voted lesion over the component's voxels (1.0 = unanimous); None without votes.
    Centroid and bounding box (the extent of the voxel centres) are physical coordinates in mm, in
    the image's world frame (LPS for DICOM- and ITK-written images).
    """

    id: int
    voxels: int
    volume_ml: float
    suv_max: float
    suv_mean: float
    suv_peak: float
    tlg: float
    centroid_mm: tuple[float, float, float]
    bbox_min_mm: tuple[float, float, float]
    bbox_max_mm: tuple[float, float, float]
    vote_share: float | None = None


@dataclass(frozen=True)
class CaseSummary:
    """Per-case burden. With no lesion: count 0, every volume and SUV 0, Dmax 0."""

    lesions: int
    tmtv_ml: float
    tlg: float
    suv_max: float
    dmax_mm: float
    largest_lesion_ml: float


@dataclass
class LesionReport:
    """The report of one case: its summary, its lesions, and what it was computed from."""

    case: str
    summary: CaseSummary
    lesions: list[Lesion] = field(default_factory=list)
    #: How many networks voted (the ``vote_share`` denominator); None when no votes were given.
    networks: int | None = None
    voxel_ml: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "networks": self.networks, "voxel_ml": self.voxel_ml,
                "summary": asdict(self.summary), "lesions": [asdict(lesion) for lesion in self.lesions],
                "units": {"volume": "ml", "suv": "g/ml (body weight)", "tlg": "SUV x ml", "coordinates": "mm"}}


def suv_peak_kernel(spacing: tuple[float, float, float], radius_mm: float = SUV_PEAK_RADIUS_MM) -> np.ndarray:
    """Boolean sphere on a grid of ``spacing`` (x, y, z), as an array indexed (z, y, x): the voxel
    offsets whose centres lie within ``radius_mm`` of the central voxel's centre."""
    half = [int(math.floor(radius_mm / s)) for s in spacing]
    axes = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    return np.ascontiguousarray((x * x + y * y + z * z <= radius_mm * radius_mm + 1e-9).transpose(2, 1, 0))


def _finite(values: np.ndarray) -> np.ndarray:
    """float64 copy with NaN and +-Inf as 0 (inference's rule for non-finite PET voxels)."""
    out = values.astype(np.float64)
    finite_or_zero(out)
    return out


def _peak(suv: np.ndarray, lesion: np.ndarray, box: tuple[slice, ...], kernel: np.ndarray) -> float:
    """Highest sphere mean centred on a voxel of ``lesion`` (a boolean array over ``box`` of ``suv``)."""
    half = [k // 2 for k in kernel.shape]
    outer = tuple(slice(max(0, b.start - h), min(n, b.stop + h)) for b, h, n in zip(box, half, suv.shape, strict=True))
    values = _finite(suv[outer])
    weights = kernel.astype(np.float64)
    sums = ndimage.correlate(values, weights, mode="constant", cval=0.0)
    counts = ndimage.correlate(np.ones_like(values), weights, mode="constant", cval=0.0)  # voxels inside the image
    inner = tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer, strict=True))
    return float((sums[inner] / counts[inner])[lesion].max())


def _physical(image: sitk.Image, index_xyz: Sequence[float]) -> tuple[float, float, float]:
    point = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index_xyz])
    return (float(point[0]), float(point[1]), float(point[2]))


def _components(mask: np.ndarray) -> tuple[np.ndarray, tuple[slice, ...]]:
    """18-connected labels of the mask's bounding box (labelling the whole body would cost ~0.5 GB)."""
    extent = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        extent.append(slice(int(hit[0]), int(hit[-1]) + 1) if hit.size else slice(0, 0))
    box = tuple(extent)
    return cc3d.connected_components(np.ascontiguousarray(mask[box]), connectivity=CONNECTIVITY), box


def measure_lesions(pet: sitk.Image, mask: sitk.Image, votes: sitk.Image | None = None,
                    networks: int | None = None, case: str = "") -> LesionReport:
    """The lesion report of ``mask`` (non-zero = lesion) over ``pet`` (SUV), both on one grid.

    ``votes``: per-voxel count of networks that voted lesion (0 ... ``networks``) on the same grid.
    """
    differences = grid_differences(mask, pet)
    if differences:
        raise ValueError(f"mask is not on the PET's grid ({'; '.join(differences)})")
    if votes is not None:
        if networks is None or networks < 1:
            raise ValueError("votes need the number of networks that voted")
        if grid_differences(votes, pet):
            raise ValueError("votes are not on the PET's grid")
    spacing = tuple(float(s) for s in pet.GetSpacing())
    voxel_ml = float(np.prod(spacing)) / 1000.0
    voted = networks if votes is not None else None
    suv = sitk.GetArrayViewFromImage(pet)  # (z, y, x), read only
    labels, crop = _components(sitk.GetArrayViewFromImage(mask) != 0)
    if labels.size == 0 or labels.max() == 0:
        return LesionReport(case, CaseSummary(0, 0.0, 0.0, 0.0, 0.0, 0.0), [], voted, voxel_ml)
    vote_array = sitk.GetArrayViewFromImage(votes) if votes is not None else None
    kernel = suv_peak_kernel(spacing)

    found = []
    for i, local in enumerate(ndimage.find_objects(labels), start=1):
        if local is None:
            continue
        inside = labels[local] == i
        box = tuple(slice(c.start + s.start, c.start + s.stop) for c, s in zip(crop, local, strict=True))
        zyx = np.nonzero(inside)
        values = _finite(suv[box][inside])
        first = np.ravel_multi_index(tuple(z + b.start for z, b in zip(zyx, box, strict=True)), suv.shape)[0]
        found.append((-int(inside.sum()), -float(values.max()), int(first), box, inside, zyx, values))
    found.sort(key=lambda f: f[:3])

    lesions = []
    for new_id, (minus_size, _, _, box, inside, zyx, values) in enumerate(found, start=1):
        size = -minus_size
        corners = [(x, y, z) for z in (box[0].start, box[0].stop - 1) for y in (box[1].start, box[1].stop - 1)
                   for x in (box[2].start, box[2].stop - 1)]
        points = np.array([_physical(pet, c) for c in corners])
        centre = [float(np.mean(zyx[a]) + box[a].start) for a in (2, 1, 0)]
        volume, mean = size * voxel_ml, float(values.sum() / size)
        share = None
        if vote_array is not None:
            share = float(vote_array[box][inside].astype(np.float64).sum() / size / networks)
        lesions.append(Lesion(
            id=new_id, voxels=size, volume_ml=volume, suv_max=float(values.max()), suv_mean=mean,
            suv_peak=_peak(suv, inside, box, kernel), tlg=mean * volume, centroid_mm=_physical(pet, centre),
            bbox_min_mm=tuple(float(v) for v in points.min(axis=0)),
            bbox_max_mm=tuple(float(v) for v in points.max(axis=0)), vote_share=share))

    centroids = np.array([lesion.centroid_mm for lesion in lesions])
    summary = CaseSummary(
        lesions=len(lesions), tmtv_ml=sum(lesion.volume_ml for lesion in lesions),
        tlg=sum(lesion.tlg for lesion in lesions), suv_max=max(lesion.suv_max for lesion in lesions),
        dmax_mm=float(pdist(centroids).max()) if len(lesions) > 1 else 0.0, largest_lesion_ml=lesions[0].volume_ml)
    return LesionReport(case, summary, lesions, voted, voxel_ml)


#: Columns of the run's CSV files (one row per lesion; one row per case).
LESION_COLUMNS = ("case", "id", "voxels", "volume_ml", "suv_max", "suv_mean", "suv_peak", "tlg",
                  "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "bbox_min_x_mm", "bbox_min_y_mm",
                  "bbox_min_z_mm", "bbox_max_x_mm", "bbox_max_y_mm", "bbox_max_z_mm", "vote_share")
CASE_COLUMNS = ("case", "lesions", "tmtv_ml", "tlg", "suv_max", "dmax_mm", "largest_lesion_ml", "networks")


def lesion_rows(report: dict[str, Any]) -> list[list[Any]]:
    """CSV rows (``LESION_COLUMNS``) of one report as ``LesionReport.to_dict`` wrote it."""
    rows = []
    for lesion in report["lesions"]:
        rows.append([report["case"], lesion["id"], lesion["voxels"], lesion["volume_ml"], lesion["suv_max"],
                     lesion["suv_mean"], lesion["suv_peak"], lesion["tlg"], *lesion["centroid_mm"],
                     *lesion["bbox_min_mm"], *lesion["bbox_max_mm"],
                     "" if lesion["vote_share"] is None else lesion["vote_share"]])
    return rows


def case_row(report: dict[str, Any]) -> list[Any]:
    """The CSV row (``CASE_COLUMNS``) of one report's summary."""
    s = report["summary"]
    return [report["case"], s["lesions"], s["tmtv_ml"], s["tlg"], s["suv_max"], s["dmax_mm"], s["largest_lesion_ml"],
            "" if report["networks"] is None else report["networks"]]
