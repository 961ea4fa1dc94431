"""Reading the challenge's input folders and writing masks so that nothing half-written is left.

Every error here names the file and the problem in one line: the platform shows the last lines
of the log, and a user with a folder of scans needs to know which one is broken and why.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

IMAGE_SUFFIXES = (".mha", ".mhd", ".nii.gz", ".nii", ".nrrd")


class InputError(RuntimeError):
    """An input that stops one case (or the whole run, where it is a folder)."""


def image_stem(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted by name (hidden and temp files left out)."""
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


@dataclass(frozen=True)
class Case:
    pet: Path
    ct: Path | None


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
        cases.append(Case(pet, ct))
    unpaired = len(cts) - sum(c.ct is not None for c in cases)
    if cts and unpaired:
        warnings.append(f"{unpaired} CT file(s) in {ct_folder} could not be paired with a PET by name; "
                        "the model uses the PET only")
    return cases, warnings


def read_header(path: Path, what: str) -> sitk.ImageFileReader:
    """Read only the header: geometry checks cost nothing, the voxels are read once later."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read {what} header ({_first_line(exc)})") from None
    return reader


def read_image(path: Path, what: str) -> sitk.Image:
    """Read a 3D scalar image, or raise InputError naming the file and the problem."""
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    reader = read_header(path, what)
    dim = reader.GetDimension()
    comps = reader.GetNumberOfComponents()
    size = reader.GetSize()
    if dim != 3:
        raise InputError(f"{path}: {what} must be a 3D image, this one is {dim}D (size {size})")
    if comps != 1:
        raise InputError(f"{path}: {what} must have one value per voxel, this one has {comps}")
    if min(size) < 1:
        raise InputError(f"{path}: {what} is empty (size {size})")
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read {what} voxels, the file may be truncated ({_first_line(exc)})") from None
    spacing = np.asarray(image.GetSpacing())
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"{path}: {what} has an invalid voxel spacing {tuple(spacing)}")
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if not np.all(np.isfinite(direction)) or abs(abs(np.linalg.det(direction)) - 1) > 1e-3:
        raise InputError(f"{path}: {what} has an invalid direction matrix {tuple(direction.ravel())}")
    return image


def same_geometry(reader: sitk.ImageFileReader, image: sitk.Image, tol: float = 1e-3) -> bool:
    return (tuple(reader.GetSize()) == tuple(image.GetSize())
            and np.allclose(reader.GetSpacing(), image.GetSpacing(), atol=tol)
            and np.allclose(reader.GetOrigin(), image.GetOrigin(), atol=max(tol, 1e-2))
            and np.allclose(reader.GetDirection(), image.GetDirection(), atol=tol))


def check_writable(folder: Path) -> None:
    """Fail before any compute when the output folder cannot take files."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{folder}: output folder is not writable ({exc.strerror or exc})") from None


def write_image_atomic(image: sitk.Image, path: Path, compress: bool = True) -> None:
    """Write to a temp file in the same folder, then rename: a killed run leaves no partial mask."""
    suffix = next((s for s in IMAGE_SUFFIXES if path.name.endswith(s)), path.suffix)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, compress)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # ITK puts the useful words on the last line of a multi-line message
    return lines[-1] if lines else type(exc).__name__


def write_text_atomic(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)

