"""make_phantom: seed and grid in, PET/CT/label images and their ground truth out.

Five generators are derived from the seed, one per purpose ([seed, 0] patient, [seed, 1] lesions,
[seed, 2] texture, [seed, 3] scanner noise, [seed, 4] SUV calibration), so that asking for lesions
or not, or a different grid, does not change the patient that the seed describes. The ranges the
values come from are a profile of ranges.py (``standard`` by default: the historical phantoms).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from .anatomy import BodyFrame
from .canvas import Canvas
from .geometry import centred_origin, direction_matrix, signed_permutation
from .grid import AUTOPET_SPACING, ImageGrid, RenderGrid, body_window, default_shape, plan_render_grid, to_images
from .params import Lesion, Patient
from .ranges import PhantomRanges, phantom_ranges
from .render import render
from .sampling import sample_calibration, sample_lesions, sample_patient
from .scanner import apply_scanner


@dataclass
class Phantom:
    """One synthetic study: PET (SUV), CT (HU) and lesion label on one grid, plus ground-truth info.

    ``organs`` is the organ map on the same grid (classes ``canvas.ORGAN_CLASSES``: the structures
    with physiological uptake, and the lesions), for organ-supervised training."""

    pet: sitk.Image
    ct: sitk.Image
    label: sitk.Image
    info: dict
    organs: sitk.Image | None = None


def _image_grid(
    patient: Patient,
    shape: Sequence[int] | None,
    spacing: Sequence[float],
    direction: Sequence[float] | None,
    origin: Sequence[float] | None,
) -> ImageGrid:
    """The requested grid with its defaults filled in: autoPET's matrix, centred on the scan range."""
    spacing = tuple(float(s) for s in spacing)
    d = direction_matrix(direction)
    if shape is None:
        shape = default_shape(patient, spacing, d)
    shape = tuple(int(v) for v in shape)
    if origin is None:
        t_start, t_end = patient.fov_t_mm
        fov_centre = np.array([0.0, 0.0, -(t_start + t_end) / 2])
        origin = centred_origin(fov_centre, shape, spacing, d.ravel())
    return ImageGrid(shape, spacing, np.asarray(origin, float), d)


def _render_arrays(
    seed: int, patient: Patient, lesions: list[Lesion], rg: RenderGrid, suv_calibration: float = 1.0
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], dict[str, Any]]:
    """Render and blur the block that can hold the body; everything outside is air. Returns arrays + organ info.

    ``suv_calibration`` scales the finished PET, as a wrong weight, dose or uptake time scales a
    real study's SUV (the label and the CT are unchanged)."""
    cidx = body_window(rg, patient)
    cv = Canvas(*(rg.coords[i][cidx[i][0] : cidx[i][1]] for i in range(3)))
    tex_rng = np.random.default_rng([int(seed), 2])
    if min(cv.act.shape) > 0:
        organs = render(cv, patient, lesions, tex_rng)
        apply_scanner(cv, patient.scanner, np.random.default_rng([int(seed), 3]), rg.spacing[::-1])
        if suv_calibration != 1.0:
            cv.act *= np.float32(suv_calibration)
    else:
        organs = {}
    sl = tuple(slice(int(cidx[i][0]), int(cidx[i][1])) for i in (2, 1, 0))
    pet = np.zeros(rg.shape_zyx, np.float32)
    ct = np.full(rg.shape_zyx, -1000, np.int16)
    lab = np.zeros(rg.shape_zyx, np.uint8)
    org = np.zeros(rg.shape_zyx, np.uint8)
    pet[sl] = cv.act
    ct[sl] = np.clip(np.rint(cv.hu), -1024, 3071).astype(np.int16)
    lab[sl] = cv.lab
    org[sl] = cv.org
    return (pet, ct, lab, org), organs


def _lesion_info(patient: Patient, lesions: list[Lesion], grid: ImageGrid) -> list[dict[str, Any]]:
    """Ground truth per lesion in physical mm, and whether its centre falls inside the image grid."""
    frame = BodyFrame(patient)
    inv = np.linalg.inv(grid.direction)
    out = []
    for le in lesions:
        c = frame.p(*le.centre_body)
        idx = inv @ (np.asarray(c) - grid.origin) / np.asarray(grid.spacing)
        out.append(
            {
                "centre_mm": [float(v) for v in c],
                "diameter_mm": le.diameter_mm,
                "suv_max": le.contrast.suv_max,
                "site": le.site,
                "necrotic": le.contrast.necrotic,
                "centre_in_grid": bool(np.all(idx > -0.5) and np.all(idx < np.asarray(grid.shape) - 0.5)),
            }
        )
    return out


def make_phantom(
    seed: int,
    shape: tuple[int, int, int] | None = None,
    spacing: Sequence[float] = AUTOPET_SPACING,
    direction: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    lesions: bool | None = None,
    lesion_count: int | None = None,
    ranges: str | PhantomRanges = "standard",
) -> Phantom:
    """Make one deterministic phantom.

    shape is (x, y, z) as Image.GetSize(); None gives autoPET's 400x400 in-plane matrix and as many
    slices as this body's field of view needs. origin None centres the grid on the field of view.
    lesions None: about half of the seeds are lesion-free; True: >= 1 lesion; False: none.
    lesion_count: exactly this many lesions drawn (some may overlap into one, or fall outside the grid).
    ranges: the profile the values are drawn from (``standard``, ``wide``, ``shifted``; ranges.py).
    """
    t0 = time.perf_counter()
    r = phantom_ranges(ranges)
    patient = sample_patient(np.random.default_rng([int(seed), 0]), r)
    les = sample_lesions(np.random.default_rng([int(seed), 1]), patient, lesions, lesion_count, r)
    calibration = sample_calibration(np.random.default_rng([int(seed), 4]), r)
    grid = _image_grid(patient, shape, spacing, direction, origin)
    rg = plan_render_grid(grid, signed_permutation(grid.direction))
    arrays, organs = _render_arrays(seed, patient, les, rg, calibration)
    pet_img, ct_img, lab_img, org_img = to_images(arrays, rg, grid)
    del arrays
    info = {
        "seed": int(seed),
        "ranges": r.name,
        "suv_calibration": calibration,  # the PET is this times the true SUV (lesion suv_max are true SUV)
        "lesions": _lesion_info(patient, les, grid),
        "body": patient.info(),
        "organs": organs,
        "shape": list(grid.shape),
        "spacing": list(grid.spacing),
        "generation_s": round(time.perf_counter() - t0, 3),
    }
    return Phantom(pet=pet_img, ct=ct_img, label=lab_img, info=info, organs=org_img)
