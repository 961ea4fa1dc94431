"""Shared fixtures: small synthetic PETs and the tiny hot-spot network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from common.cases import Case

ROOT = Path(__file__).resolve().parents[1]

HOTSPOT_WEIGHTS = ROOT / "tests" / "data" / "tiny_hotspot.pt"

GRIDS = {
    "identity": dict(direction=None, spacing=(4.0, 4.0, 4.0)),
    "flipped": dict(direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1), spacing=(4.0, 4.0, 4.0)),
    "permuted-anisotropic": dict(direction=(0, 1, 0, 0, 0, -1, -1, 0, 0), spacing=(3.0, 4.5, 5.0)),
    "ras-like-fine": dict(direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1), spacing=(2.0364, 2.0364, 3.0)),
}


def as_xyz(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def same_grid_exactly(a: sitk.Image, b: sitk.Image) -> bool:
    """Bit-for-bit the same geometry (a mask written on the PET's grid must be exactly on it)."""
    return (a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing()
            and a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection())


def body_with_lesion(size=(48, 44, 56), spacing=(4.0, 4.0, 4.0), direction=None,
                     centre_mm=(10.0, -20.0, 30.0), lesion_offset_mm=(15.0, 10.0, -20.0),
                     lesion_radius_mm=14.0, seed=0) -> tuple[sitk.Image, np.ndarray]:
    """A warm ellipsoid body and one hot ball, both placed in physical (LPS mm) space.

    The grid is centred on ``centre_mm`` whatever its size, spacing and direction, so every
    variant shows the same anatomy at the same physical place. Returns the PET and the ball's
    physical centre. The default ball is large enough (>0.05 % of these small volumes) to lie above
    the 99.95th percentile, as brain and bladder do in a real whole-body PET.
    """
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    size_a, spacing_a, centre = np.asarray(size), np.asarray(spacing, dtype=float), np.asarray(centre_mm)
    origin = centre - direction @ ((size_a - 1) / 2.0 * spacing_a)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"), axis=-1).reshape(-1, 3)
    phys = (idx * spacing_a) @ direction.T + origin
    lesion = centre + np.asarray(lesion_offset_mm)
    rng = np.random.default_rng(seed)
    body = (((phys - centre) / np.array([70.0, 60.0, 85.0])) ** 2).sum(1) <= 1
    ball = ((phys - lesion) ** 2).sum(1) <= lesion_radius_mm ** 2
    values = np.where(body, 1.0, 0.0) + np.where(ball, 6.0, 0.0) + rng.normal(0, 0.05, len(phys)) * body
    arr = values.reshape(tuple(size)).astype(np.float32).transpose(2, 1, 0)
    out = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    out.SetSpacing(tuple(float(s) for s in spacing_a))
    out.SetOrigin(tuple(float(o) for o in origin))
    out.SetDirection(tuple(float(v) for v in direction.ravel()))
    return out, lesion


def centroid_mm(mask: sitk.Image) -> np.ndarray:
    """Physical centre of the mask's voxels."""
    idx = np.argwhere(sitk.GetArrayFromImage(mask).transpose(2, 1, 0) > 0)
    d = np.asarray(mask.GetDirection()).reshape(3, 3)
    return (idx.mean(0) * np.asarray(mask.GetSpacing())) @ d.T + np.asarray(mask.GetOrigin())


@pytest.fixture(scope="session")
def hotspot_predictor():
    from model import Predictor

    return Predictor.from_weights(HOTSPOT_WEIGHTS, device="cpu")


# -- training on small TCIA-layout phantoms ------------------------------------------------------

SHAPE, SPACING = (64, 64, 80), (4.0, 4.0, 4.0)


def write_tcia_phantoms(root: Path, seeds: list[int]) -> list[Case]:
    """Small phantoms (64x64x80 at 4 mm) in the TCIA layout; even seeds aimed at a lesion."""
    from training.phantoms import centred_origin, make_phantom

    sources = []
    for seed in seeds:
        with_lesion = seed % 2 == 0
        origin = None
        if with_lesion:
            info = make_phantom(seed, shape=SHAPE, spacing=SPACING, lesions=True).info
            origin = centred_origin(info["lesions"][0]["centre_mm"], SHAPE, SPACING)
        ph = make_phantom(seed, shape=SHAPE, spacing=SPACING, origin=origin, lesions=with_lesion)
        folder = root / f"PETCT_{seed:04d}" / "study0"
        folder.mkdir(parents=True, exist_ok=True)
        for name, image in (("SUV", ph.pet), ("SEG", ph.label), ("CTres", ph.ct), ("ORGANS", ph.organs)):
            sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
        sources.append(Case(f"PETCT_{seed:04d}_study0", folder / "SUV.nii.gz", label=folder / "SEG.nii.gz",
                            organs=folder / "ORGANS.nii.gz"))
    return sources


@pytest.fixture
def one_thread():
    """Tiny networks gain nothing from two threads, and spinning OpenMP threads stall on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    return write_tcia_phantoms(tmp_path_factory.mktemp("tcia"), [0, 1, 2, 3, 4, 5])


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")
