"""Pairing ground-truth, prediction and PET files by name; reading them with errors as ``CaseError``.

The names differ from ``common.images``'s on purpose: these return other types (files grouped by
stem) or raise ``CaseError``, which the evaluation CLI collects over a whole folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import SimpleITK as sitk

from common import images
from common.cases import Case
from common.errors import InputError
from common.images import IMAGE_SUFFIXES
from evaluation.metrics import check_same_grid


class CaseError(ValueError):
    """A case cannot be evaluated (missing or ambiguous file, grid mismatch); the message names files."""


def images_by_stem(folder: Path, what: str = "image") -> dict[str, list[Path]]:
    """Image files of a folder grouped by stem (a stem may exist as both .mha and .nii.gz)."""
    if not folder.is_dir():
        raise CaseError(f"{what} folder is not a folder: {folder}")
    found: dict[str, list[Path]] = {}
    for path in images.list_images(folder):
        if path.is_file():
            found.setdefault(images.image_stem(path), []).append(path)
    return found


def _match(stem: str, wanted_name: str, candidates: dict[str, list[Path]], what: str, folder: Path) -> Path:
    """The file for ``stem``: the same name if present, else the only file with that stem."""
    options = candidates.get(stem, [])
    same = [p for p in options if p.name == wanted_name]
    if same:
        return same[0]
    if len(options) == 1:
        return options[0]
    if not options:
        tried = ", ".join(stem + ext for ext in IMAGE_SUFFIXES)
        raise CaseError(f"{what} missing for {wanted_name}: none of {tried} in {folder}")
    names = ", ".join(p.name for p in options)
    raise CaseError(f"{what} for {wanted_name} is ambiguous in {folder}: {names}")


def pair_cases(
    gt_dir: Path, pred_dir: Path, pet_dir: Path | None = None, pet_suffix: str = ""
) -> tuple[list[Case], list[str]]:
    """Pair every ground-truth image with its prediction (and PET), by file stem.

    All problems are collected before raising, so one run names every missing file. Returns the
    pairs and the names of predictions that have no ground truth (worth a warning, not an error).
    """
    gts = images_by_stem(gt_dir, "ground-truth")
    preds = images_by_stem(pred_dir, "prediction")
    pets = images_by_stem(pet_dir, "PET") if pet_dir is not None else {}
    if not gts:
        raise CaseError(f"no ground-truth images ({', '.join(IMAGE_SUFFIXES)}) in {gt_dir}")
    pairs, problems = [], []
    for stem, gt_paths in gts.items():
        for gt_path in gt_paths:
            try:
                pred = _match(stem, gt_path.name, preds, "prediction", pred_dir)
                pet = None
                if pet_dir is not None:
                    pet_stem = stem + pet_suffix
                    pet = _match(pet_stem, pet_stem + images.image_suffix(gt_path), pets, "PET", pet_dir)
                pairs.append(Case(gt_path.name, pet, label=gt_path, prediction=pred))
            except CaseError as err:
                problems.append(str(err))
    if problems:
        raise CaseError("\n".join(problems))
    extra = sorted(p.name for stem, paths in preds.items() if stem not in gts for p in paths)
    return pairs, extra


def read_mask_header(path: Path) -> sitk.ImageFileReader:
    """Reader holding only the header, so grids of a whole folder are checked in seconds."""
    try:
        return images.read_header(path, "mask", dims=3)
    except InputError as err:
        raise CaseError(str(err)) from None


def check_grids(pairs: Sequence[Case], tol: float = 1e-3) -> None:
    """Check every prediction against its ground truth before any voxel is read."""
    problems = []
    for case in pairs:
        try:
            check_same_grid(read_mask_header(case.label), read_mask_header(case.prediction),
                            f"{case.label} and {case.prediction}", tol)
        except ValueError as err:  # CaseError or GridMismatchError
            problems.append(str(err))
    if problems:
        raise CaseError("\n".join(problems))


def read_case_image(path: Path, what: str = "image") -> sitk.Image:
    """Read an image; a broken one is a CaseError in one line that names the file."""
    try:
        return images.read_image(path, what)
    except InputError as err:
        raise CaseError(str(err)) from None
