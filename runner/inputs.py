"""Which files make a case: a PET image file or a folder of DICOM series, paired with its CT."""

from __future__ import annotations

from pathlib import Path

from common.cases import Case
from common.images import image_stem, image_suffix, list_images


def is_dicom_folder(path: Path) -> bool:
    """A case folder of DICOM series: a folder not named like an image (``x.mha/`` is a broken PET)."""
    return path.is_dir() and image_suffix(path) is None

def pair_cases(pet_files: list[Path], ct_folder: Path | None) -> tuple[list[Case], list[str]]:
    """Pair each PET with its CT: by file name, or the single CT beside a single PET.

    The challenge gives PET and CT different uuids, so name matching alone would miss them.
    Returns the cases and warnings (a CT is optional: the model reads the PET only).
    """
    warnings: list[str] = []
    cts = list_images(ct_folder) if ct_folder is not None and ct_folder.is_dir() else []
    by_stem = {image_stem(p): p for p in cts}
    cases = []
    for pet in pet_files:
        ct = by_stem.get(image_stem(pet))
        if ct is None and len(pet_files) == 1 and len(cts) == 1:
            ct = cts[0]
        cases.append(Case(image_stem(pet), pet, ct))
    unpaired = len(cts) - sum(c.ct is not None for c in cases)
    if cts and unpaired:
        warnings.append(f"{unpaired} CT file(s) in {ct_folder} could not be paired with a PET by name; "
                        "the model uses the PET only")
    return cases, warnings
