"""Synthetic phantoms: determinism, variety, tissue values, label/PET agreement and grid geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from training.phantoms import centred_origin, make_phantom

SMALL = {"shape": (96, 96, 120), "spacing": (4.0, 4.0, 4.0)}
TINY = {"shape": (8, 8, 8), "spacing": (40.0, 40.0, 40.0)}  # parameters only, rendering is negligible


def _arr(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img)


def _phys_points(img: sitk.Image, zyx: np.ndarray) -> np.ndarray:
    """Physical (x, y, z) mm of array indices (N, 3) given as (z, y, x)."""
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    ijk = zyx[:, ::-1].astype(float) * np.asarray(img.GetSpacing())
    return np.asarray(img.GetOrigin()) + ijk @ d.T


def _value_near(img: sitk.Image, point_mm, radius: int = 1) -> float:
    idx = img.TransformPhysicalPointToIndex(tuple(point_mm))
    arr = _arr(img).astype(float)
    x, y, z = idx
    return float(
        arr[
            max(z - radius, 0) : z + radius + 1,
            max(y - radius, 0) : y + radius + 1,
            max(x - radius, 0) : x + radius + 1,
        ].mean()
    )


@pytest.fixture(scope="module")
def small_cases() -> list:
    return [make_phantom(s, lesions=True, **SMALL) for s in (0, 1, 2)]


def test_deterministic_per_seed() -> None:
    a, b = make_phantom(11, **SMALL), make_phantom(11, **SMALL)
    for key in ("pet", "ct", "label"):
        assert np.array_equal(_arr(getattr(a, key)), _arr(getattr(b, key)))
    a.info.pop("generation_s"), b.info.pop("generation_s")
    assert a.info == b.info


def test_types_grid_and_ranges(small_cases: list) -> None:
    ph = small_cases[0]
    assert ph.pet.GetPixelID() == sitk.sitkFloat32
    assert ph.ct.GetPixelID() in (sitk.sitkInt16, sitk.sitkFloat32)
    assert ph.label.GetPixelID() == sitk.sitkUInt8
    for img in (ph.pet, ph.ct, ph.label):
        assert img.GetSize() == SMALL["shape"] and img.GetSpacing() == SMALL["spacing"]
        assert img.GetOrigin() == ph.pet.GetOrigin() and img.GetDirection() == ph.pet.GetDirection()
    pet, ct, lab = _arr(ph.pet), _arr(ph.ct), _arr(ph.label)
    assert pet.min() >= 0 and 5 < pet.max() < 60
    assert ct.min() >= -1024 and ct.max() <= 3071 and (ct == -1000).mean() > 0.2  # air around the body
    assert set(np.unique(lab)) <= {0, 1}


def test_variety_across_seeds() -> None:
    infos = [make_phantom(s, **TINY).info for s in range(40)]
    for key in ("half_width_mm", "suv_liver", "suv_myocardium", "suv_bladder", "psf_fwhm_mm", "noise_level"):
        vals = [i["body"][key] for i in infos]
        assert np.std(vals) / np.mean(vals) > 0.08, key
    n_les = [len(i["lesions"]) for i in infos]
    assert 10 <= sum(n == 0 for n in n_les) <= 30  # about half lesion-free, like autoPET
    assert max(n_les) >= 3 and max(n_les) <= 10
    sites = {le["site"] for i in infos for le in i["lesions"]}
    assert len(sites) >= 8
    assert len({i["body"]["fov_t_mm"] for i in infos}) == 40
    assert all(len(make_phantom(s, lesions=True, **TINY).info["lesions"]) >= 1 for s in range(10))
    assert all(len(make_phantom(s, lesions=False, **TINY).info["lesions"]) == 0 for s in range(10))


def test_declared_physiology_ranges() -> None:
    ranges = {
        "suv_brain": (6, 12),
        "suv_myocardium": (1.5, 10),
        "suv_bladder": (5, 40),
        "suv_kidney": (2, 7),
        "suv_liver": (1.5, 3),
        "suv_spleen": (1.5, 2.5),
        "suv_blood": (1.3, 2.2),
        "suv_muscle": (0.4, 1.0),
        "suv_lung": (0.2, 0.6),
        "suv_marrow": (1, 2),
        "hu_lung": (-900, -700),
        "hu_fat": (-120, -80),
        "psf_fwhm_mm": (5, 8),
    }
    for s in range(30):
        info = make_phantom(s, **TINY).info
        for key, (lo, hi) in ranges.items():
            assert lo <= info["body"][key] <= hi, (s, key)
        for le in info["lesions"]:
            assert 4 <= le["diameter_mm"] <= 60 and 2.5 <= le["suv_max"] <= 25


def test_measured_tissue_values(small_cases: list) -> None:
    for ph in small_cases:
        org = ph.info["organs"]
        for name, rel in (("liver", 0.35), ("spleen", 0.4), ("lung", 0.6)):
            got = _value_near(ph.pet, org[name]["centre_mm"])
            assert abs(got - org[name]["suv"]) <= rel * org[name]["suv"] + 0.1, (name, got, org[name]["suv"])
        assert -950 <= _value_near(ph.ct, org["lung"]["centre_mm"]) <= -650
        assert 20 <= _value_near(ph.ct, org["liver"]["centre_mm"]) <= 100
        assert _value_near(ph.ct, org["spine"]["centre_mm"], radius=0) >= 200
        bladder = org["bladder"]["centre_mm"]
        idx = np.asarray(ph.pet.TransformPhysicalPointToContinuousIndex(bladder))
        if np.all(idx > 2) and np.all(idx < np.asarray(ph.pet.GetSize()) - 3):
            assert _value_near(ph.pet, bladder) >= 0.5 * org["bladder"]["suv"]


def test_label_matches_hot_pet(small_cases: list) -> None:
    found = 0
    for ph in small_cases:
        lab = _arr(ph.label).astype(bool)
        if not lab.any():
            continue
        found += 1
        pet = _arr(ph.pet)
        from scipy import ndimage

        shell = ndimage.binary_dilation(lab, iterations=3) & ~ndimage.binary_dilation(lab, iterations=1)
        assert pet[lab].mean() > 1.3 * pet[shell].mean()
        # lesions sit where uptake is elevated over the local body background
        assert np.median(pet[lab]) > ph.info["body"]["suv_muscle"]
    assert found >= 2


def _label_centroid(ph, centre, radius: float) -> np.ndarray:
    zyx = np.argwhere(_arr(ph.label) > 0)
    pts = _phys_points(ph.label, zyx)
    near = np.linalg.norm(pts - np.asarray(centre), axis=1) < radius
    assert near.sum() > 0
    return pts[near].mean(axis=0)


def _big_lesion() -> tuple[int, dict]:
    for s in range(50):
        for le in make_phantom(s, lesions=True, **TINY).info["lesions"]:
            if 18 <= le["diameter_mm"] <= 40:
                return s, le
    raise AssertionError("no suitable lesion in 50 seeds")


def test_same_physical_place_whatever_the_grid() -> None:
    seed, le = _big_lesion()
    c = le["centre_mm"]
    rot = math.radians(25)
    grids = {
        "identity": ((48, 48, 40), (3.0, 3.0, 3.0), None),
        "flipped": ((48, 48, 40), (3.0, 3.0, 3.0), (-1, 0, 0, 0, 1, 0, 0, 0, -1)),
        "permuted": ((40, 48, 48), (3.0, 3.0, 3.0), (0, 1, 0, 0, 0, -1, 1, 0, 0)),
        "anisotropic": ((70, 48, 36), (2.0, 3.0, 4.0), (1, 0, 0, 0, -1, 0, 0, 0, 1)),
        "oblique": (
            (48, 48, 40),
            (3.0, 3.0, 3.0),
            (math.cos(rot), -math.sin(rot), 0, math.sin(rot), math.cos(rot), 0, 0, 0, 1),
        ),
    }
    centroids, spine_hu = {}, {}
    for name, (shape, spacing, direction) in grids.items():
        ph = make_phantom(
            seed,
            shape=shape,
            spacing=spacing,
            direction=direction,
            lesions=True,
            origin=centred_origin(c, shape, spacing, direction),
        )
        assert ph.pet.GetDirection() == tuple(float(v) for v in (direction or (1, 0, 0, 0, 1, 0, 0, 0, 1)))
        centroids[name] = _label_centroid(ph, c, le["diameter_mm"])
        # the lesion's PET hot spot is at the same place too
        pet_pt = np.asarray(
            ph.pet.TransformIndexToPhysicalPoint(
                [int(v) for v in np.unravel_index(np.argmax(_arr(ph.pet)), _arr(ph.pet).shape)[::-1]]
            )
        )
        spine_hu[name] = pet_pt
    ref = centroids["identity"]
    assert np.linalg.norm(ref - np.asarray(c)) < le["diameter_mm"] / 2
    for name, got in centroids.items():
        assert np.linalg.norm(got - ref) < 2.5, (name, got, ref)


def test_default_grid_is_autopet_like() -> None:
    ph = make_phantom(0, lesions=True)
    x, y, z = ph.pet.GetSize()
    assert (x, y) == (400, 400) and 200 <= z <= 677
    assert np.allclose(ph.pet.GetSpacing(), (2.0364, 2.0364, 3.0))
    assert ph.info["generation_s"] < 30  # ~3-5 s on one free core; generous for a shared machine
    assert _arr(ph.label).sum() > 0
