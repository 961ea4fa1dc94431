"""The lesion report against straightforward computations: scipy's labelling, per-voxel physical
points from SimpleITK, a brute-force sphere search for SUVpeak, every pair for Dmax."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from lesion_report.lesions import SUV_PEAK_RADIUS_MM, measure_lesions
from tests.conftest import GRIDS


def image(array_zyx: np.ndarray, spacing=(1.0, 1.0, 1.0), direction=None, origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    out = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
    out.SetSpacing(tuple(float(s) for s in spacing))
    out.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        out.SetDirection(tuple(float(v) for v in direction))
    return out


def reference_report(pet: sitk.Image, mask: sitk.Image, votes: sitk.Image | None = None, networks: int = 1):
    """Every quantity the slow, obvious way: components by scipy (18-connectivity), physical points
    voxel by voxel through SimpleITK, SUVpeak by testing every voxel against every sphere centre."""
    suv = np.nan_to_num(sitk.GetArrayFromImage(pet).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    labels, n = ndimage.label(sitk.GetArrayFromImage(mask) > 0, structure=ndimage.generate_binary_structure(3, 2))
    all_idx = list(itertools.product(*(range(s) for s in suv.shape)))  # (z, y, x)
    phys = np.array([pet.TransformIndexToPhysicalPoint((x, y, z)) for z, y, x in all_idx])
    flat_suv = np.array([suv[i] for i in all_idx])
    voxel_ml = float(np.prod(pet.GetSpacing())) / 1000
    vote_array = sitk.GetArrayFromImage(votes) if votes is not None else None
    lesions = []
    for k in range(1, n + 1):
        member = np.array([labels[i] == k for i in all_idx])
        pts, values = phys[member], flat_suv[member]
        peak = max(flat_suv[np.linalg.norm(phys - c, axis=1) <= SUV_PEAK_RADIUS_MM].mean() for c in pts)
        lesion = dict(voxels=int(member.sum()), volume_ml=member.sum() * voxel_ml, suv_max=values.max(),
                      suv_mean=values.mean(), suv_peak=peak, tlg=values.mean() * member.sum() * voxel_ml,
                      centroid_mm=pts.mean(axis=0), bbox_min_mm=pts.min(axis=0), bbox_max_mm=pts.max(axis=0))
        if vote_array is not None:
            lesion["vote_share"] = vote_array[labels == k].mean() / networks
        lesions.append(lesion)
    lesions.sort(key=lambda lesion: (-lesion["voxels"], -lesion["suv_max"]))
    centroids = [lesion["centroid_mm"] for lesion in lesions]
    dmax = max((np.linalg.norm(a - b) for a, b in itertools.combinations(centroids, 2)), default=0.0)
    return lesions, dmax


def scene(shape=(9, 10, 11), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Random SUV and three lesions: one at a corner of the image, one joined only through an edge,
    and one pair of voxels that touch only at a corner (two lesions under 18-connectivity)."""
    rng = np.random.default_rng(seed)
    suv = rng.uniform(0.5, 3.0, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[0:3, 0:2, 0:3] = 1                 # touches three borders
    mask[5:7, 5:7, 6:8] = 1                 # a block ...
    mask[7, 7, 6] = 1                       # ... and a voxel joined to it through an edge
    mask[2, 7, 8] = mask[3, 8, 9] = 1       # corner neighbours: two lesions of one voxel
    suv[mask > 0] += rng.uniform(2.0, 8.0, int(mask.sum())).astype(np.float32)
    return suv, mask


@pytest.mark.parametrize("grid", ["identity", "flipped", "permuted-anisotropic"])
def test_every_quantity_matches_the_brute_force_reference(grid):
    suv, mask = scene()
    spacing = GRIDS[grid]["spacing"] if grid != "identity" else (2.0, 2.5, 3.0)
    pet = image(suv, spacing, GRIDS[grid]["direction"], origin=(-12.0, 30.5, 7.0))
    seg = image(mask, spacing, GRIDS[grid]["direction"], origin=(-12.0, 30.5, 7.0))
    votes = image(np.where(mask > 0, np.random.default_rng(1).integers(1, 6, mask.shape), 0).astype(np.uint8),
                  spacing, GRIDS[grid]["direction"], origin=(-12.0, 30.5, 7.0))

    report = measure_lesions(pet, seg, votes, networks=5)
    expected, dmax = reference_report(pet, seg, votes, networks=5)

    assert [lesion.voxels for lesion in report.lesions] == [e["voxels"] for e in expected]
    assert [lesion.id for lesion in report.lesions] == list(range(1, len(expected) + 1))
    assert len(expected) == 4  # the corner-touching pair counts twice, the edge-joined voxel once
    for got, want in zip(report.lesions, expected, strict=True):
        for key in ("volume_ml", "suv_max", "suv_mean", "suv_peak", "tlg", "vote_share"):
            assert getattr(got, key) == pytest.approx(want[key], rel=1e-6), key
        for key in ("centroid_mm", "bbox_min_mm", "bbox_max_mm"):
            np.testing.assert_allclose(getattr(got, key), want[key], atol=1e-6, err_msg=key)
    s = report.summary
    assert s.lesions == 4
    assert s.tmtv_ml == pytest.approx(sum(e["volume_ml"] for e in expected))
    assert s.tlg == pytest.approx(sum(e["tlg"] for e in expected))
    assert s.suv_max == pytest.approx(max(e["suv_max"] for e in expected))
    assert s.dmax_mm == pytest.approx(dmax)
    assert s.largest_lesion_ml == pytest.approx(expected[0]["volume_ml"])


def test_a_uniform_lesion_of_known_size_and_uptake():
    """A 11^3-voxel cube of SUV 6 in SUV 1 at 2 mm: 10.648 ml, SUVmax = mean = peak = 6 (the 1 ml sphere
    fits inside the cube around its centre), TLG 63.888."""
    suv = np.ones((21, 21, 21), np.float32)
    mask = np.zeros(suv.shape, np.uint8)
    mask[5:16, 5:16, 5:16] = 1
    suv[mask > 0] = 6.0
    report = measure_lesions(image(suv, (2.0, 2.0, 2.0)), image(mask, (2.0, 2.0, 2.0)))
    (lesion,) = report.lesions
    assert lesion.volume_ml == pytest.approx(11 ** 3 * 0.008)
    assert (lesion.suv_max, lesion.suv_mean, lesion.suv_peak) == pytest.approx((6.0, 6.0, 6.0))
    assert lesion.tlg == pytest.approx(63.888)
    np.testing.assert_allclose(lesion.centroid_mm, (20.0, 20.0, 20.0))
    assert report.summary.dmax_mm == 0.0  # a single lesion
    assert lesion.vote_share is None and report.networks is None


def test_suv_peak_sphere_is_one_millilitre():
    """At fine isotropic spacing the sampled sphere holds ~1 ml of voxel centres."""
    from lesion_report.lesions import suv_peak_kernel

    kernel = suv_peak_kernel((0.25, 0.25, 0.25))
    assert kernel.sum() * 0.25 ** 3 / 1000 == pytest.approx(1.0, rel=0.01)
    assert SUV_PEAK_RADIUS_MM == pytest.approx(10 * (3 / (4 * math.pi)) ** (1 / 3))


def test_empty_mask_and_non_finite_pet():
    suv = np.full((6, 7, 8), np.nan, np.float32)
    report = measure_lesions(image(suv), image(np.zeros(suv.shape, np.uint8)))
    assert report.lesions == [] and report.summary.lesions == 0
    assert (report.summary.tmtv_ml, report.summary.tlg, report.summary.dmax_mm, report.summary.suv_max) == (0, 0, 0, 0)

    suv = np.ones((6, 7, 8), np.float32)
    suv[2, 3, 4], suv[2, 3, 5] = np.nan, np.inf
    mask = np.zeros(suv.shape, np.uint8)
    mask[2, 3, 3:6] = 1
    (lesion,) = measure_lesions(image(suv), image(mask)).lesions
    assert lesion.suv_mean == pytest.approx(1 / 3)  # NaN and Inf count as 0, as in inference
    assert lesion.suv_max == 1.0


def test_same_scene_on_a_flipped_grid_gives_the_same_numbers():
    suv, mask = scene(seed=3)
    a = measure_lesions(image(suv, (2.0, 3.0, 4.0)), image(mask, (2.0, 3.0, 4.0)))
    # the same physical voxels stored with x and z reversed
    origin = (2.0 * (suv.shape[2] - 1), 0.0, 4.0 * (suv.shape[0] - 1))
    flip = (-1, 0, 0, 0, 1, 0, 0, 0, -1)
    b = measure_lesions(image(suv[::-1, :, ::-1], (2.0, 3.0, 4.0), flip, origin),
                        image(mask[::-1, :, ::-1], (2.0, 3.0, 4.0), flip, origin))
    assert a.summary.lesions == b.summary.lesions == 4
    assert (a.summary.tmtv_ml, a.summary.suv_max) == (b.summary.tmtv_ml, b.summary.suv_max)
    assert a.summary.tlg == pytest.approx(b.summary.tlg)
    for x, y in zip(a.lesions, b.lesions, strict=True):
        assert (x.voxels, x.suv_max, x.suv_peak) == (y.voxels, y.suv_max, pytest.approx(y.suv_peak))
        np.testing.assert_allclose(x.centroid_mm, y.centroid_mm, atol=1e-9)
        np.testing.assert_allclose(x.bbox_min_mm, y.bbox_min_mm, atol=1e-9)
    assert a.summary.dmax_mm == pytest.approx(b.summary.dmax_mm)


def test_mask_off_the_pet_grid_is_refused():
    suv = np.ones((4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="not on the PET's grid"):
        measure_lesions(image(suv), image(np.zeros((4, 4, 4), np.uint8), (2.0, 1.0, 1.0)))
