"""Reading the challenge's input folders and writing masks so that nothing half-written is left.

Every error here names the file and the problem in one line: the platform shows the last lines
of the log, and a user with a folder of scans needs to know which one is broken and why.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import SimpleITK as sitk

IMAGE_SUFFIXES = (".mha", ".mhd", ".nii.gz", ".nii", ".nrrd")
#: ITK reader/writer per suffix: chosen by name, so that "A.MHA" reads as ITK would read "a.mha".
IMAGE_IOS = {".mha": "MetaImageIO", ".mhd": "MetaImageIO", ".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO",
             ".nrrd": "NrrdImageIO"}
#: Data files beside a ``.mhd`` header: not cases of their own.
MHD_DATA_SUFFIXES = (".raw", ".zraw", ".img", ".dat")
#: Hidden temp entries this module leaves behind only when a run is killed hard (SIGKILL, power).
_TEMP_NAME = re.compile(r"^\..+\.tmp(\.[A-Za-z.]+)?$|^\.write-test\..+$")


class InputError(RuntimeError):
    """An input that stops one case (or the whole run, where it is a folder)."""


class OutputError(RuntimeError):
    """An output that could not be written whole (disk full, quota, I/O error): nothing partial is left,
    the case fails with this one line and the run goes on."""


def write_failure(path: Path, reason: str) -> OutputError:
    """The one line for a failed write: the file, why, and the free space where it was going."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2 ** 20:.0f} MB free on {path.parent}"
    except OSError:
        free = f"free space of {path.parent} unknown"
    return OutputError(f"{path}: not written ({reason}; {free})")


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def image_suffix(path: Path) -> str | None:
    """The image suffix of a file name, lower case ("A.NII.GZ" -> ".nii.gz"), or None."""
    name = path.name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s) and len(name) > len(s)), None)


def image_stem(path: Path) -> str:
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.stem


def is_dicom_folder(path: Path) -> bool:
    """A case folder of DICOM series: a folder not named like an image (``x.mha/`` is a broken PET)."""
    return path.is_dir() and image_suffix(path) is None


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


def _reader(path: Path) -> sitk.ImageFileReader:
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
    reader = _reader(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read {what} header ({_first_line(exc)})") from None
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
        raise InputError(f"{path}: cannot read {what} voxels, the file may be truncated ({_first_line(exc)})") from None
    spacing = np.asarray(image.GetSpacing())
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"{path}: {what} has an invalid voxel spacing {tuple(spacing)}")
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if not np.all(np.isfinite(direction)) or abs(abs(np.linalg.det(direction)) - 1) > 1e-3:
        raise InputError(f"{path}: {what} has an invalid direction matrix {tuple(direction.ravel())}")
    return image


def existing_mask_problem(mask_path: Path, pet_path: Path) -> str | None:
    """Why a mask left by an earlier run cannot be kept (None: it is a complete mask for this PET).

    A rerun skips finished cases; this makes sure that "finished" means a readable uint8 0/1 mask
    on the PET's grid, not a file cut short by a full disk or written for another scan.
    """
    try:
        mask = read_image(mask_path, "mask")
        pet = read_header(pet_path, "PET")
    except InputError as exc:
        return str(exc)
    if mask.GetPixelID() != sitk.sitkUInt8:
        return f"{mask_path}: mask is {mask.GetPixelIDTypeAsString()}, not 8-bit unsigned integer"
    if not same_geometry(pet, mask):
        return f"{mask_path}: mask is not on the PET's grid (size {mask.GetSize()} vs {pet.GetSize()})"
    if int(np.max(sitk.GetArrayViewFromImage(mask))) > 1:
        return f"{mask_path}: mask has values other than 0 and 1"
    return None


class HasGrid(Protocol):
    """Anything with an ITK grid: ``sitk.Image``, or ``sitk.ImageFileReader`` after ReadImageInformation."""

    def GetSize(self) -> Sequence[int]: ...
    def GetSpacing(self) -> Sequence[float]: ...
    def GetOrigin(self) -> Sequence[float]: ...
    def GetDirection(self) -> Sequence[float]: ...


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def grid_differences(a: HasGrid, b: HasGrid, tol: float = 1e-3, min_mm: float = 0.0) -> list[str]:
    """What differs between two grids, as readable phrases (empty when they match).

    Spacing and origin may differ by ``tol`` times the smallest spacing (the origin by ``min_mm``
    where that is larger: headers that store float32 geometry round it); direction cosines by
    ``tol``; sizes must match exactly.
    """
    diffs = []
    if tuple(a.GetSize()) != tuple(b.GetSize()):
        diffs.append(f"size {tuple(a.GetSize())} vs {tuple(b.GetSize())}")
    sa, sb = np.asarray(a.GetSpacing(), float), np.asarray(b.GetSpacing(), float)
    if sa.shape != sb.shape:
        diffs.append(f"dimension {sa.size} vs {sb.size}")
        return diffs
    mm_tol = tol * float(min(sa.min(), sb.min()))
    if not np.allclose(sa, sb, rtol=0, atol=mm_tol):
        diffs.append(f"spacing {_fmt(sa)} vs {_fmt(sb)}")
    oa, ob = np.asarray(a.GetOrigin(), float), np.asarray(b.GetOrigin(), float)
    if not np.allclose(oa, ob, rtol=0, atol=max(mm_tol, min_mm)):
        diffs.append(f"origin {_fmt(oa)} vs {_fmt(ob)}")
    da, db = np.asarray(a.GetDirection(), float), np.asarray(b.GetDirection(), float)
    if not np.allclose(da, db, rtol=0, atol=tol):
        diffs.append(f"direction {_fmt(da)} vs {_fmt(db)}")
    return diffs


#: Origin/spacing slack (mm) when pairing images of one study (CT, label and PET written by other tools).
STUDY_GRID_MM = 1e-2


def same_geometry(a: HasGrid, b: HasGrid, tol: float = 1e-3) -> bool:
    """Two images of one study on one voxel grid, up to header rounding."""
    return not grid_differences(a, b, tol, STUDY_GRID_MM)


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
    """Write into a hidden temp folder beside ``path``, then rename: a killed run leaves no partial mask.

    The temp name has a lower-case suffix so that ITK picks the writer "A.MHA" asks for; a .mhd
    header's data file is moved in before the header, so a header never names a missing file.
    """
    suffix = image_suffix(path) or path.suffix.lower()
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise write_failure(path, _os_reason(exc)) from None
    try:
        tmp = tmp_dir / f"{image_stem(path)}{suffix}"
        writer = sitk.ImageFileWriter()
        writer.SetFileName(str(tmp))
        if suffix in IMAGE_IOS:
            writer.SetImageIO(IMAGE_IOS[suffix])
        writer.SetUseCompression(compress)
        try:
            writer.Execute(image)
        except RuntimeError as exc:
            reason = "no space left on device" if "No space left" in str(exc) else _first_line(exc)
            raise write_failure(path, reason) from None
        _check_written(tmp, image, path)
        for extra in sorted(tmp_dir.iterdir()):
            if extra != tmp:
                os.chmod(extra, 0o644)
                os.replace(extra, path.parent / extra.name)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise write_failure(path, _os_reason(exc)) from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _check_written(tmp: Path, image: sitk.Image, path: Path) -> None:
    """Read the written file back: ITK's NIfTI writer reports a full disk only on stderr and leaves an
    empty or cut file, which must never be renamed into place as a finished output."""
    try:
        back = _reader(tmp).Execute()  # the format's own ImageIO: no factory probing
    except RuntimeError:
        back = None
    if back is None or back.GetSize() != image.GetSize() or back.GetPixelID() != image.GetPixelID():
        raise write_failure(path, "the written file does not read back whole; the disk may be full")


def remove_stale_temps(folder: Path, name: str = "") -> list[str]:
    """Remove the hidden temp files and folders a killed run left in ``folder``; return their names.

    ``name``: only the temp files of this file (``results.json`` in an output root that may hold
    other things); all of this module's temp names where empty (the mask folder, ours alone).
    """
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if not _TEMP_NAME.match(p.name) or not p.name.startswith(f".{name}"):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError:
            continue
        removed.append(p.name)
    return sorted(removed)


def _first_line(exc: BaseException) -> str:
    """ITK's message in a few words: its ERROR line without the class, pointer and errno noise."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # ITK appends "Reason: <errno text>" of an unrelated call ("Success", "No such file or directory")
    useful = [line for line in lines if not line.startswith(("Reason:", "Exception thrown in SimpleITK"))]
    text = (useful or lines or [type(exc).__name__])[-1]
    text = re.sub(r"^(sitk::ERROR:|ITK ERROR:)\s*", "", text)
    text = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", text)
    return re.sub(r"File cannot be read: .* for reading\.?", "not a readable image of this format", text)


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a hidden temp file beside ``path``, then rename it into place.

    A killed run leaves the old file or the new one, never a partial one (the temp file's name is
    one that ``remove_stale_temps`` clears).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_failure(path, _os_reason(exc)) from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_failure(path, _os_reason(exc)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(text: str, path: Path) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars and arrays -> Python ones, tuples -> lists: strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def dumps_json(value: Any) -> str:
    """Strict JSON text (no NaN tokens, which many parsers reject), indented, newline-terminated."""
    return json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n"


def write_json_atomic(value: Any, path: Path) -> None:
    write_text_atomic(dumps_json(value), path)

