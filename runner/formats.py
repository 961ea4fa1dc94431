"""The mask formats a run writes, one registry entry each: adding a format is one ``register`` call.

An entry says everything the runner needs to know of a format, so no other module looks at a
suffix: the file suffixes it owns (the first is written when the format is asked for by name),
evalutils' ``results.json`` type, how to write a mask, why a file left by an earlier run cannot be
kept (a rerun skips finished cases only when the file reads back whole), how to read a mask back
for a lesion report made from files, and whether it needs a DICOM PET series to refer to.

    default output  an image PET: its own file name and format (the challenge's rule);
                    a DICOM case: a DICOM-SEG (``DICOM_DEFAULT``)
    --output-format one of ``FORMATS``, by name
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from common.atomic import write_image_atomic
from common.cases import Case
from common.errors import InputError
from common.geometry import same_geometry
from common.images import image_stem, read_header, read_image

from .inputs import is_dicom_folder

if TYPE_CHECKING:
    from .dicom import PetVolume


@dataclass(frozen=True)
class PetInput:
    """The PET a mask is written for: its image and, when it was read from DICOM, its series."""

    image: sitk.Image
    series: PetVolume | None = None
    #: Where the SUV came from ("DICOM headers", "--suv-factors", "sidecar x.json"); None: values as given.
    suv_origin: str | None = None
    #: Why an image file's values could not be made SUV (its sidecar or --suv-factors fell short).
    suv_missing: str | None = None


@dataclass(frozen=True)
class MaskFormat:
    """One output format of the mask."""

    name: str
    suffixes: tuple[str, ...]
    results_type: str
    write: Callable[[sitk.Image, PetInput, Path], None]
    #: Why an existing file of this format cannot be kept for ``case`` (None: it can).
    problem: Callable[[Path, Case], str | None]
    #: Read a mask of this format back as an image; None where a report cannot be made from the file.
    read: Callable[[Path], sitk.Image] | None = None
    needs_dicom: bool = False

    @property
    def suffix(self) -> str:
        return self.suffixes[0]


#: Every format a run can write, by name (``--output-format`` offers them in this order).
FORMATS: dict[str, MaskFormat] = {}
#: What a case read from DICOM series gets when no format is asked for.
DICOM_DEFAULT = "dicom-seg"


def register(fmt: MaskFormat) -> MaskFormat:
    """Add a format; its suffixes must not belong to another one (a file has one format)."""
    taken = {s: f.name for f in FORMATS.values() if f.name != fmt.name for s in f.suffixes}
    clash = [s for s in fmt.suffixes if s in taken]
    if clash:
        raise ValueError(f"format {fmt.name!r}: suffix {clash[0]} belongs to {taken[clash[0]]!r}")
    FORMATS[fmt.name] = fmt
    return fmt


def format_of(path: Path) -> MaskFormat:
    """The registered format a file name belongs to (longest matching suffix, any case)."""
    name = path.name.lower()
    owners = [(len(s), f) for f in FORMATS.values() for s in f.suffixes if name.endswith(s) and len(name) > len(s)]
    if not owners:
        raise InputError(f"{path}: no mask format writes this suffix (formats: {', '.join(FORMATS)})")
    return max(owners, key=lambda pair: pair[0])[1]


def is_dicom_case(case: Case) -> bool:
    """A case read from a folder of DICOM series rather than an image file."""
    return case.pet is not None and is_dicom_folder(case.pet)


def mask_name(case: Case, output_format: str | None = None) -> str:
    """The output file's name: the PET's own name by default (the challenge's rule), the case's name
    with the asked format's suffix otherwise; a DICOM case gets a DICOM-SEG by default."""
    dicom = is_dicom_case(case)
    if output_format is None:
        return f"{case.case_id}{FORMATS[DICOM_DEFAULT].suffix}" if dicom else case.pet.name
    return f"{case.case_id if dicom else image_stem(case.pet)}{FORMATS[output_format].suffix}"


# -- ITK image files ------------------------------------------------------------------------------

def write_image_mask(mask: sitk.Image, pet: PetInput, path: Path) -> None:
    write_image_atomic(mask, path)


def _mask_problem(mask_path: Path, pet_path: Path) -> str | None:
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


def image_mask_problem(target: Path, case: Case) -> str | None:
    """A complete uint8 0/1 mask on the PET's grid; for a DICOM case (no PET file to compare grids
    with) a readable 8-bit unsigned image will do."""
    if not is_dicom_case(case):
        return _mask_problem(target, case.pet)
    try:
        image = read_header(target, "mask")
    except InputError as exc:
        return str(exc)
    return None if image.GetPixelID() == sitk.sitkUInt8 else f"{target}: not an 8-bit unsigned mask"


def read_image_mask(path: Path) -> sitk.Image:
    return read_image(path, "mask")


def itk_format(name: str, suffixes: tuple[str, ...]) -> MaskFormat:
    """An image format SimpleITK writes by suffix (evalutils files every image output as ``metaio_image``)."""
    return MaskFormat(name, suffixes, "metaio_image", write_image_mask, image_mask_problem, read_image_mask)


# -- DICOM-SEG --------------------------------------------------------------------------------------

def write_dicom_seg(mask: sitk.Image, pet: PetInput, path: Path) -> None:
    if pet.series is None:
        raise InputError(f"{path}: a DICOM-SEG needs a DICOM PET series to refer to")
    from .dicom import write_seg

    write_seg(mask, pet.series, path)


def dicom_seg_problem(target: Path, case: Case) -> str | None:
    from .dicom import seg_problem

    return seg_problem(target)


register(itk_format("mha", (".mha", ".mhd")))
register(itk_format("nifti", (".nii.gz", ".nii")))
register(itk_format("nrrd", (".nrrd",)))
register(MaskFormat("dicom-seg", (".dcm",), "dicom_seg", write_dicom_seg, dicom_seg_problem, needs_dicom=True))

#: Where a mask goes when its DICOM-SEG cannot be written: beside it, as MetaImage.
FALLBACK = "mha"


def fallback_path(path: Path) -> Path:
    """Where ``write_mask`` puts a mask whose DICOM-SEG could not be written: ``<name>.mha`` beside it."""
    return path.with_suffix(FORMATS[FALLBACK].suffix)


def earlier_mask(fmt: MaskFormat, path: Path) -> Path | None:
    """The mask an earlier run left for ``path``: the file itself, or the SEG's fallback ``.mha``
    (the headers that failed the SEG fail it again: recomputing would give the same ``.mha``)."""
    if path.exists() or path.is_symlink():
        return path
    fallback = fallback_path(path)
    return fallback if fmt.needs_dicom and fallback.is_file() else None


def write_mask(fmt: MaskFormat, mask: sitk.Image, pet: PetInput, path: Path) -> tuple[Path, str | None]:
    """Write ``mask`` in ``fmt``; returns the file written and, where the DICOM-SEG could not be made
    from the source's headers, the one-line reason. A computed mask is never lost to its wrapper: the
    SEG's failure sends it to ``<name>.mha`` beside the SEG's path (for a reader to load or convert)."""
    try:
        fmt.write(mask, pet, path)
        return path, None
    except Exception as exc:  # noqa: BLE001 - whatever the source's headers make highdicom raise
        if not fmt.needs_dicom:
            raise
        reason = " ".join(str(exc).split()) or type(exc).__name__
        fallback = fallback_path(path)
        FORMATS[FALLBACK].write(mask, pet, fallback)
        return fallback, (f"{path}: DICOM-SEG not written ({type(exc).__name__}: {reason}); "
                          f"the mask is in {fallback.name}")

