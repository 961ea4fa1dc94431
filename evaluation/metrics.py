"""autoPET II metrics per case and over a test set.

Definitions follow the challenge: Dice, false-positive volume (predicted connected components that
share no voxel with the ground truth) and false-negative volume (ground-truth components that share
no voxel with the prediction), components formed with 18-connectivity, volumes in ml.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cc3d
import numpy as np
import SimpleITK as sitk

from common.geometry import HasGrid, grid_differences
from common.masks import dice

#: Neighbourhood used to form lesions: faces and edges, not corners (as the official evaluation).
CONNECTIVITY = 18


class GridMismatchError(ValueError):
    """Two images that should share a voxel grid do not; the message names what differs."""


@dataclass(frozen=True)
class CaseMetrics:
    """Metrics of one case. ``dice`` is NaN when ground truth and prediction are both empty."""

    dice: float
    fpv_ml: float
    fnv_ml: float
    gt_ml: float
    pred_ml: float
    has_lesion: bool
    n_gt_components: int = 0
    n_pred_components: int = 0
    n_fp_components: int = 0
    n_fn_components: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (NaN stays NaN; the JSON writer turns it into null)."""
        return asdict(self)


@dataclass(frozen=True)
class Aggregate:
    """Test-set summary. Means over an empty set are NaN."""

    n_cases: int
    n_with_lesion: int
    n_without_lesion: int
    #: Mean Dice over cases whose ground truth has a lesion (the usual reading of "Dice").
    mean_dice: float
    #: Mean Dice over all cases with lesion-free cases counted as 0, as the leaderboard computes it.
    leaderboard_dice: float
    #: Mean false-positive volume over all cases.
    mean_fpv_ml: float
    #: Mean false-negative volume over cases with a lesion (lesion-free cases cannot miss anything).
    mean_fnv_ml: float
    #: Lesion-free cases where the prediction is empty as well.
    n_true_negative: int

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values for JSON."""
        return asdict(self)


def voxel_volume_ml(spacing: Sequence[float]) -> float:
    """Volume of one voxel in ml from its three spacings in mm (1 ml = 1000 mm^3)."""
    if len(spacing) != 3:
        raise ValueError(f"need three spacings, got {tuple(spacing)}")
    return float(np.prod(np.asarray(spacing, dtype=np.float64))) / 1000.0


def _unmatched_voxels(mask: np.ndarray, other: np.ndarray) -> tuple[int, int, int]:
    """Voxels in components of ``mask`` that share no voxel with ``other``.

    Returns (unmatched voxels, number of components, number of unmatched components).
    """
    labels, n = cc3d.connected_components(mask.view(np.uint8), connectivity=CONNECTIVITY, return_N=True)
    if n == 0:
        return 0, 0, 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    touched = np.bincount(labels[other], minlength=n + 1)[1:] > 0
    return int(sizes[~touched].sum()), int(n), int((~touched).sum())


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Smallest slices holding every non-zero voxel of a non-empty mask."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def case_metrics(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> CaseMetrics:
    """Metrics of one case from two masks on the same grid (non-zero = lesion).

    ``spacing`` only enters through the voxel volume, so its axis order does not matter.
    """
    if gt.shape != pred.shape:
        raise GridMismatchError(f"mask shapes differ: ground truth {gt.shape}, prediction {pred.shape}")
    if gt.ndim != 3:
        raise ValueError(f"expected 3-D masks, got shape {gt.shape}")
    g = np.ascontiguousarray(gt > 0)
    p = np.ascontiguousarray(pred > 0)
    vox_ml = voxel_volume_ml(spacing)

    n_gt = int(np.count_nonzero(g))
    n_pred = int(np.count_nonzero(p))
    overlap = dice(g, p)

    if n_gt + n_pred > 0:  # components lie inside the foreground's bounding box: label only that
        box = _bounding_box(g | p)
        g, p = np.ascontiguousarray(g[box]), np.ascontiguousarray(p[box])
    fp_vox, n_pred_cc, n_fp_cc = _unmatched_voxels(p, g)
    fn_vox, n_gt_cc, n_fn_cc = _unmatched_voxels(g, p)
    return CaseMetrics(
        dice=overlap,
        fpv_ml=fp_vox * vox_ml,
        fnv_ml=fn_vox * vox_ml,
        gt_ml=n_gt * vox_ml,
        pred_ml=n_pred * vox_ml,
        has_lesion=n_gt > 0,
        n_gt_components=n_gt_cc,
        n_pred_components=n_pred_cc,
        n_fp_components=n_fp_cc,
        n_fn_components=n_fn_cc,
    )


def check_same_grid(a: HasGrid, b: HasGrid, what: str = "images", tol: float = 1e-3) -> None:
    """Raise GridMismatchError naming every difference; a metric on two grids would be meaningless."""
    diffs = grid_differences(a, b, tol)
    if diffs:
        raise GridMismatchError(f"{what} are not on the same grid: " + "; ".join(diffs))


def evaluate_images(gt: sitk.Image, pred: sitk.Image, tol: float = 1e-3) -> CaseMetrics:
    """Metrics of one case from two SimpleITK label images, after checking they share a grid."""
    check_same_grid(gt, pred, "ground truth and prediction", tol)
    return case_metrics(sitk.GetArrayViewFromImage(gt), sitk.GetArrayViewFromImage(pred), gt.GetSpacing())


def _mean(values: Iterable[float]) -> float:
    arr = np.asarray(list(values), dtype=np.float64)
    return float(arr.mean()) if arr.size else math.nan


def aggregate(cases: Iterable[CaseMetrics]) -> Aggregate:
    """Test-set summary, as the challenge ranks it (see the field comments of Aggregate)."""
    cases = list(cases)
    positive = [c for c in cases if c.has_lesion]
    return Aggregate(
        n_cases=len(cases),
        n_with_lesion=len(positive),
        n_without_lesion=len(cases) - len(positive),
        mean_dice=_mean(c.dice for c in positive),
        leaderboard_dice=_mean(0.0 if math.isnan(c.dice) else c.dice for c in cases),
        mean_fpv_ml=_mean(c.fpv_ml for c in cases),
        mean_fnv_ml=_mean(c.fnv_ml for c in positive),
        n_true_negative=sum(1 for c in cases if not c.has_lesion and c.pred_ml == 0),
    )
