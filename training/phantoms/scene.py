"""What every painting step needs: the canvas, the patient, its organ layout and the texture generator.

Why one object: the steps in body.py and organs.py each paint one part of the anatomy; passing them
one Scene keeps their signatures short and makes the shared state (notably the texture generator,
whose draws must happen in a fixed order) explicit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .anatomy import BodyFrame, Organs, organ_layout
from .canvas import Canvas
from .params import Patient, Vec3


@dataclass
class Scene:
    """Canvas plus everything drawn for the patient; `organs` collects the ground truth for info["organs"]."""

    cv: Canvas
    patient: Patient
    tex_rng: np.random.Generator  # brown fat, bowel, ureters and the texture field, in that order
    frame: BodyFrame = field(init=False)
    org: Organs = field(init=False)
    organs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.frame = BodyFrame(self.patient)
        self.org = organ_layout(self.patient)

    def at(self, x: float, y: float, t: float) -> Vec3:
        """Physical LPS mm of a body-relative point."""
        return self.frame.p(x, y, t)

    def record(self, name: str, c_body, suv: float, hu: float, semi=None) -> None:
        """Note an organ's reference point and values so that tests can check the rendered voxels there."""
        self.organs[name] = {"centre_mm": [float(v) for v in self.at(*c_body)], "suv": float(suv), "hu": float(hu)}
        if semi is not None:
            self.organs[name]["semi_axes_mm"] = [float(v) for v in semi]
