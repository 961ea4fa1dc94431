"""The case record every front-end hands to every other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Case:
    """One study, wherever it comes from: its PET (SUV) and what else is known about it.

    The challenge folder gives a PET and maybe a CT; a training layout adds the label (ground
    truth) and the patient; evaluation pairs a label with a prediction. One type for all, so a
    case found by one front-end can be handed to any other.
    """

    case_id: str
    pet: Path | None
    ct: Path | None = None
    label: Path | None = None
    patient_id: str | None = None
    prediction: Path | None = None
    #: A reader's clicks for an interactive network (autoPET IV's lesion-clicks.json), where given.
    clicks: Path | None = None
    #: An organ map beside the label (the phantoms' ORGANS.nii.gz), for organ-supervised training.
    organs: Path | None = None
