"""Rendering a patient onto a canvas: the order of the painting steps, texture, lesions.

Why a fixed list: shapes overwrite each other (organs inside the body wall, the bladder over the
bowel, lesions over everything), and three steps and the texture field draw from one texture
generator in turn, so the order below is part of what a seed means: moving a step, or adding one
that draws random numbers, changes existing phantoms (tests/test_phantoms.py pins a few).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import body, organs
from .canvas import Canvas, smooth_field
from .lesions import paint_lesion
from .params import Lesion, Patient
from .scene import Scene

#: anatomy painting steps, in painting order
STEPS: tuple[Callable[[Scene], None], ...] = (
    body.paint_couch,
    body.paint_head,
    body.paint_trunk,
    body.paint_limbs,
    body.paint_neck_glands,  # texture draws: brown fat
    organs.paint_lungs_and_heart,
    organs.paint_great_vessels,
    organs.paint_chest_bones,
    organs.paint_upper_abdomen,
    organs.paint_bowel,  # texture draws
    organs.paint_kidneys,  # texture draws: ureters
    organs.paint_spine,
    organs.paint_pelvis,
    organs.paint_bladder,
)

#: Steps that paint one class of the organ map throughout (the ureters count as kidney, the
#: intervertebral discs as marrow).
STEP_ORGANS: dict[Callable[[Scene], None], str] = {
    organs.paint_chest_bones: "marrow",
    organs.paint_bowel: "bowel",
    organs.paint_kidneys: "kidney",
    organs.paint_spine: "marrow",
    organs.paint_pelvis: "marrow",
    organs.paint_bladder: "bladder",
}


def apply_texture(s: Scene) -> None:
    """Physiological texture: a smooth multiplicative field (5-15%) anchored in physical space."""
    field = smooth_field(s.tex_rng, s.cv.xs, s.cv.ys, s.cv.zs)
    s.cv.act *= 1 + np.float32(s.patient.scanner.texture_amp) * field
    np.maximum(s.cv.act, 0, out=s.cv.act)


def render(cv: Canvas, patient: Patient, lesions: list[Lesion], tex_rng: np.random.Generator) -> dict[str, Any]:
    """Paint anatomy + lesions onto the canvas (activity pre-blur, HU, label). Returns organ info."""
    scene = Scene(cv, patient, tex_rng)
    for step in STEPS:
        if step in STEP_ORGANS:
            with cv.painting(STEP_ORGANS[step]):
                step(scene)
        else:  # the organ map's classes are set inside the step, where it paints several structures
            step(scene)
    apply_texture(scene)
    for les in lesions:  # after the texture: a lesion's uptake is its own
        paint_lesion(cv, scene.at(*les.centre_body), les)
    return scene.organs
