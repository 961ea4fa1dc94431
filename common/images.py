"""Image files by name and reading them: every error names the file and the problem in one line.

The platform shows the last lines of the log, and a user with a folder of scans needs to know which
one is broken and why.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

IMAGE_SUFFIXES = (".mha", ".mhd", ".nii.gz", ".nii", ".nrrd")

#: ITK reader/writer per suffix: chosen by name, so that "A.MHA" reads as ITK would read "a.mha".
IMAGE_IOS = {".mha": "MetaImageIO", ".mhd": "MetaImageIO", ".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO",
             ".nrrd": "NrrdImageIO"}

#: Data files beside a ``.mhd`` header: not cases of their own.
MHD_DATA_SUFFIXES = (".raw", ".zraw", ".img", ".dat")

def image_suffix(path: Path) -> str | None:
    """The image suffix of a file name, lower case ("A.NII.GZ" -> ".nii.gz"), or None."""
    name = path.name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s) and len(name) > len(s)), None)

def image_stem(path: Path) -> str:
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.stem

def is_image_name(path: Path) -> bool:
    """Named like an image and not hidden (temp files, editors' and OSes' droppings)."""
    return image_suffix(path) is not None and not path.name.startswith(".")

def is_image_file(path: Path) -> bool:
    return is_image_name(path) and path.is_file()

def list_images(folder: Path) -> list[Path]:
    """Entries of a folder named like images, sorted by name; hidden and temp files left out.

    Not only regular files: a folder or a broken link named ``x.mha`` is listed too, so that it
    fails as a case with an error naming it instead of vanishing without a mask.
    """
    return sorted((p for p in folder.iterdir() if is_image_name(p)), key=lambda p: p.name)

def ignored_entries(folder: Path) -> list[Path]:
    """Visible entries of a folder that are neither images nor the data files of its .mhd headers."""
    stems = {image_stem(p) for p in list_images(folder) if image_suffix(p) == ".mhd"}
    out = []
    for p in sorted(folder.iterdir(), key=lambda p: p.name):
        if p.name.startswith(".") or is_image_name(p):
            continue
        if p.suffix.lower() in MHD_DATA_SUFFIXES and p.name[: -len(p.suffix)] in stems:
            continue
        out.append(p)
    return out

def image_reader(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    suffix = image_suffix(path)
    if suffix is not None:
        reader.SetImageIO(IMAGE_IOS[suffix])
    return reader

def check_file(path: Path, what: str) -> None:
    """A readable, non-empty regular file (and, for a .mhd header, its data file), or InputError."""
    try:
        if path.is_symlink() and not path.exists():
            raise InputError(f"{path}: {what} file is a broken symbolic link (to {os.readlink(path)})")
        if path.is_dir():
            raise InputError(f"{path}: {what} is a folder, not an image file")
        if not path.exists():
            raise InputError(f"{path}: {what} file not found")
        if not path.is_file():
            raise InputError(f"{path}: {what} is not a regular file")
        os.close(os.open(path, os.O_RDONLY))
        if path.stat().st_size == 0:
            raise InputError(f"{path}: {what} file is empty (0 bytes)")
    except OSError as exc:
        raise InputError(f"{path}: cannot open {what} file ({exc.strerror or exc})") from None
    if image_suffix(path) == ".mhd":
        data = _mhd_data_file(path)
        if data is not None and not data.is_file():
            raise InputError(f"{path}: data file {data.name} named in the {what} header is missing")

def _mhd_data_file(header: Path) -> Path | None:
    """The single data file a .mhd header names (None for LOCAL, LIST or a file pattern)."""
    try:
        with open(header, "rb") as fh:
            text = fh.read(65536).decode("latin-1")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ElementDataFile":
            value = value.strip()
            if not value or value.upper() in ("LOCAL", "LIST") or " " in value or "%" in value:
                return None
            return header.parent / value
    return None

def read_header(path: Path, what: str, dims: int | None = None) -> sitk.ImageFileReader:
    """Read only the header: geometry checks cost nothing, the voxels are read once later.

    ``dims``: the dimension the image must have (checked from the header), or None for any.
    """
    check_file(path, what)
    reader = image_reader(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read {what} header ({itk_message(exc)})") from None
    dim = reader.GetDimension()
    if dims is not None and dim != dims:
        raise InputError(f"{path}: {what} must be a {dims}D image, this one is {dim}D (size {reader.GetSize()})")
    return reader

def read_image(path: Path, what: str) -> sitk.Image:
    """Read a 3D scalar image, or raise InputError naming the file and the problem."""
    reader = read_header(path, what, dims=3)
    comps = reader.GetNumberOfComponents()
    size = reader.GetSize()
    if comps != 1:
        raise InputError(f"{path}: {what} must have one value per voxel, this one has {comps}")
    if min(size) < 1:
        raise InputError(f"{path}: {what} is empty (size {size})")
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read {what} voxels, the file may be truncated ({itk_message(exc)})") from None
    spacing = np.asarray(image.GetSpacing())
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"{path}: {what} has an invalid voxel spacing {tuple(spacing)}")
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if not np.all(np.isfinite(direction)) or abs(abs(np.linalg.det(direction)) - 1) > 1e-3:
        raise InputError(f"{path}: {what} has an invalid direction matrix {tuple(direction.ravel())}")
    return image

def itk_message(exc: BaseException) -> str:
    """ITK's message in a few words: its ERROR line without the class, pointer and errno noise."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # ITK appends "Reason: <errno text>" of an unrelated call ("Success", "No such file or directory")
    useful = [line for line in lines if not line.startswith(("Reason:", "Exception thrown in SimpleITK"))]
    text = (useful or lines or [type(exc).__name__])[-1]
    text = re.sub(r"^(sitk::ERROR:|ITK ERROR:)\s*", "", text)
    text = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", text)
    return re.sub(r"File cannot be read: .* for reading\.?", "not a readable image of this format", text)


def finite_or_zero(array: np.ndarray) -> int:
    """Set NaN and +-Inf voxels of a float array to 0 in place; return how many there were."""
    bad = ~np.isfinite(array)
    n_bad = int(bad.sum())
    if n_bad:
        array[bad] = 0.0
    return n_bad
