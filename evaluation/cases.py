"""Pairing ground-truth, prediction and PET files by name, and writing results as strict JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from evaluation.metrics import check_same_grid
from model import io as model_io

#: File types read as images; longest first so "abc.nii.gz" is not taken for "abc.nii" + ".gz".
IMAGE_EXTENSIONS = (".nii.gz", ".mha", ".nii")


class CaseError(ValueError):
    """A case cannot be evaluated (missing or ambiguous file, grid mismatch); the message names files."""


@dataclass(frozen=True)
class CasePaths:
    """The files of one case; ``name`` is the ground-truth file name, used as the case key."""

    name: str
    gt: Path
    pred: Path
    pet: Path | None = None


def split_name(path: Path | str) -> tuple[str, str] | None:
    """(stem, extension) of an image file name, or None for other files."""
    name = Path(path).name
    for ext in IMAGE_EXTENSIONS:
        if name.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], ext
    return None


def list_images(folder: Path, what: str = "image") -> dict[str, list[Path]]:
    """Image files of a folder grouped by stem (a stem may exist as both .mha and .nii.gz)."""
    if not folder.is_dir():
        raise CaseError(f"{what} folder is not a folder: {folder}")
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        parts = split_name(path)
        if parts is not None and path.is_file():
            found.setdefault(parts[0], []).append(path)
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
        tried = ", ".join(stem + ext for ext in IMAGE_EXTENSIONS)
        raise CaseError(f"{what} missing for {wanted_name}: none of {tried} in {folder}")
    names = ", ".join(p.name for p in options)
    raise CaseError(f"{what} for {wanted_name} is ambiguous in {folder}: {names}")


def pair_cases(
    gt_dir: Path, pred_dir: Path, pet_dir: Path | None = None, pet_suffix: str = ""
) -> tuple[list[CasePaths], list[str]]:
    """Pair every ground-truth image with its prediction (and PET), by file stem.

    All problems are collected before raising, so one run names every missing file. Returns the
    pairs and the names of predictions that have no ground truth (worth a warning, not an error).
    """
    gts = list_images(gt_dir, "ground-truth")
    preds = list_images(pred_dir, "prediction")
    pets = list_images(pet_dir, "PET") if pet_dir is not None else {}
    if not gts:
        raise CaseError(f"no ground-truth images ({', '.join(IMAGE_EXTENSIONS)}) in {gt_dir}")
    pairs, problems = [], []
    for stem, gt_paths in gts.items():
        for gt_path in gt_paths:
            try:
                pred = _match(stem, gt_path.name, preds, "prediction", pred_dir)
                pet = None
                if pet_dir is not None:
                    pet_stem = stem + pet_suffix
                    pet = _match(pet_stem, pet_stem + split_name(gt_path)[1], pets, "PET", pet_dir)
                pairs.append(CasePaths(gt_path.name, gt_path, pred, pet))
            except CaseError as err:
                problems.append(str(err))
    if problems:
        raise CaseError("\n".join(problems))
    extra = sorted(p.name for stem, paths in preds.items() if stem not in gts for p in paths)
    return pairs, extra


def read_header(path: Path) -> sitk.ImageFileReader:
    """Reader holding only the header, so grids of a whole folder are checked in seconds."""
    try:
        return model_io.read_header(path, "mask", dims=3)
    except model_io.InputError as err:
        raise CaseError(str(err)) from None


def check_grids(pairs: Sequence[CasePaths], tol: float = 1e-3) -> None:
    """Check every prediction against its ground truth before any voxel is read."""
    problems = []
    for case in pairs:
        try:
            check_same_grid(read_header(case.gt), read_header(case.pred), f"{case.gt} and {case.pred}", tol)
        except ValueError as err:  # CaseError or GridMismatchError
            problems.append(str(err))
    if problems:
        raise CaseError("\n".join(problems))


def read_image(path: Path) -> sitk.Image:
    """Read an image, turning ITK's long messages into one line that names the file."""
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise CaseError(f"cannot read {path}: {str(err).strip().splitlines()[-1]}") from err


def json_safe(value: Any) -> Any:
    """Replace NaN/inf with None and numpy scalars with Python ones, so json output is strict."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any) -> str:
    """Strict JSON (no NaN tokens, which many parsers reject)."""
    return json.dumps(json_safe(value), indent=2, allow_nan=False)
