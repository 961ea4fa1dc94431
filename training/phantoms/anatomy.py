"""Where a patient's organs are: body-relative layout scaled to the patient, and the body-to-physical frame.

Why body-relative: organ positions are written once as fractions of the torso size and mm below the
vertex, so a tall, wide or obese patient moves every organ consistently, and lesion sites can be
placed relative to the same organs before any image grid exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .params import Patient, Vec3


class BodyFrame:
    """Body-relative (x, y, t) to physical LPS mm: shifted by the body's centre, t grows downwards (-z)."""

    def __init__(self, patient: Patient) -> None:
        self.x0, self.y0 = patient.build.centre_xy_mm

    def p(self, x: float, y: float, t: float) -> Vec3:
        return (self.x0 + x, self.y0 + y, -t)


@dataclass(frozen=True)
class Organ:
    """An ellipsoidal organ: body-relative centre and semi-axes (mm)."""

    centre: Vec3
    semi: Vec3


@dataclass(frozen=True)
class Organs:
    """The organs that lesion sites and the renderer both refer to, plus the depth of the spine."""

    lung_r: Organ
    lung_l: Organ
    heart: Organ
    liver: Organ
    spleen: Organ
    kidney_r: Organ
    kidney_l: Organ
    stomach: Organ
    bladder: Organ
    brain: Organ
    spine_y: float  # body-relative y of the vertebral bodies' centre

    def get(self, name: str) -> Organ:
        organ = getattr(self, name)
        if not isinstance(organ, Organ):
            raise KeyError(name)
        return organ


def organ_layout(patient: Patient) -> Organs:
    """Body-relative organ geometry (x, y, t), scaled to this patient and jittered a little."""
    b = patient.build
    A, B, h, j = b.half_width_mm, b.half_depth_mm, b.height_scale, patient.jitter
    sA = A / 165.0
    return Organs(
        lung_r=Organ((-0.47 * A, 0.05 * B, 420 * h + 5 * j[0]), (0.36 * A, 0.7 * B, 125 * h)),
        lung_l=Organ((0.5 * A, 0.05 * B, 425 * h + 5 * j[1]), (0.32 * A, 0.68 * B, 120 * h)),
        heart=Organ((28 * sA + 5 * j[2], -0.38 * B, 470 * h), (58 * sA, 48, 58)),
        liver=Organ(
            (-0.36 * A + 6 * j[3], -0.1 * B, 575 * h + 8 * j[4]),
            (0.44 * A * (1 + 0.08 * j[5]), 0.72 * B, 88 * h),
        ),
        spleen=Organ(
            (0.58 * A, 0.42 * B, 575 * h + 8 * j[6]),
            (0.15 * A, 0.28 * B, 55 * h * (1 + 0.1 * j[7])),
        ),
        kidney_r=Organ((-70 * sA, 0.5 * B, 665 * h + 8 * j[8]), (28, 24, 55 * h)),
        kidney_l=Organ((70 * sA, 0.5 * B, 650 * h + 8 * j[9]), (28, 24, 55 * h)),
        stomach=Organ((0.32 * A, -0.4 * B, 545 * h), (45 * sA, 32, 48)),
        bladder=Organ((0.0, -0.3 * B, 865 * h), patient.variants.bladder_semi_mm),
        brain=Organ((0.0, 8.0, 88 * h), tuple(v * b.head_scale for v in (62, 82, 62))),
        spine_y=B - b.fat_mm - 45,
    )


def trunk_profile(patient: Patient) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Control points (t, half width, half depth, centre y) of neck + torso, body-relative."""
    b = patient.build
    A, B, h = b.half_width_mm, b.half_depth_mm, b.height_scale
    belly, hips = b.belly, b.hips
    rows = [
        (150, 45, 48, 12),
        (250, 55, 56, 12),
        (268, 0.6 * A, 0.65 * B, None),
        (300, 0.98 * A, 0.9 * B, None),
        (420, A, B, None),
        (560, 0.92 * A * (0.5 + 0.5 * belly), 0.96 * B * belly, None),
        (700, 0.95 * A * (0.4 + 0.6 * belly), B * belly, None),
        (830, A * hips, 0.92 * B * (0.5 + 0.5 * belly), None),
        (915, 0.92 * A * hips, 0.8 * B, None),
        (940, 0.6 * A * hips, 0.6 * B, None),
    ]
    t = np.array([r[0] * (h if r[0] > 200 else 1.0) for r in rows])
    a = np.array([r[1] for r in rows])
    bb = np.array([r[2] for r in rows])
    cy = np.array([r[3] if r[3] is not None else B - r[2] for r in rows])
    return t, a, bb, cy
