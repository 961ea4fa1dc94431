"""Hospital data: a DICOM PET series in (body-weight SUV from its headers), a DICOM-SEG out.

Outside the challenge, scans arrive as DICOM series in Bq/ml, not as SUV ``.mha`` files, and the
conversion is where mistakes are made (decay correction, units, weight in g or kg). Here it is done
from the headers with every input checked; a missing or implausible tag is a one-line error naming
the series and the tag, never a silent default:

    SUV = activity concentration (Bq/ml) x body weight (g) / decay-corrected injected dose (Bq)

* ``Units`` BQML (Bq/ml); CNTS only with Philips' activity concentration scale factor
  (7053,1009); GML is already SUV. Anything else is refused.
* ``DecayCorrection`` START: the images are decay corrected to the scan start, so the dose is
  decayed from injection to then; ADMIN: corrected to the injection, the dose is used as is.
* The scan start is SeriesDate/SeriesTime, or the earliest AcquisitionDate/Time when that is
  earlier (a series re-created after the scan carries a later series time).
* Each slice's RescaleSlope and RescaleIntercept are applied to its own pixels.

The series must be one regular volume: one orientation, equal slice spacing (within 1 %), no gantry
tilt. The volume is built on the slices' own positions, so the mask lies exactly on the PET's frames
and the DICOM-SEG (highdicom) references each of them.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.multival import MultiValue

from common.errors import InputError

from .suv import WEIGHT_KG, SuvFactors

log = logging.getLogger(__name__)

PET_MODALITY = "PT"
#: Philips private tag: multiply CNTS pixel values by it to get Bq/ml.
PHILIPS_ACTIVITY_SCALE = (0x7053, 0x1009)


@dataclass(frozen=True)
class Series:
    """One DICOM series: its UID, modality, and its files."""

    uid: str
    modality: str
    files: tuple[Path, ...]
    description: str = ""
    #: The first file's ImageType and CorrectedImage values (upper case): what kind of PET series it is.
    image_type: tuple[str, ...] = ()
    corrected: tuple[str, ...] = ()

    def name(self) -> str:
        return f"series {self.uid}" + (f" ({self.description})" if self.description else "")


@dataclass
class PetVolume:
    """The PET as SUV on the slices' grid, and the slice datasets in the volume's z order."""

    image: sitk.Image
    slices: list[pydicom.Dataset]
    series: Series
    #: Why the values are not SUV (the stored values were kept), or None when they are SUV.
    suv_missing: str | None = None
    #: A multi-frame (enhanced) PET: the one dataset, and the frame index (0-based) of each of ``slices``.
    multiframe: pydicom.Dataset | None = None
    frame_of_slice: tuple[int, ...] = ()


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: "DICM" after the 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """Every DICOM file below ``folder`` (nested folders allowed), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and is_dicom_file(p))


def find_series(folder: Path) -> list[Series]:
    """The series below ``folder``, grouped by SeriesInstanceUID (headers only are read)."""
    groups: dict[str, list[Path]] = defaultdict(list)
    info: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {}
    for path in dicom_files(folder):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001 - a broken file is named, not a traceback
            raise InputError(f"{path}: not a readable DICOM file ({exc})") from None
        uid = str(ds.get("SeriesInstanceUID", ""))
        if not uid:
            raise InputError(f"{path}: no SeriesInstanceUID")
        groups[uid].append(path)
        info.setdefault(uid, (str(ds.get("Modality", "")), str(ds.get("SeriesDescription", "")),
                              _values(ds.get("ImageType")), _values(ds.get("CorrectedImage"))))
    return [Series(uid, info[uid][0], tuple(files), *info[uid][1:]) for uid, files in sorted(groups.items())]


def _values(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple | MultiValue) else [value]
    return tuple(str(v).strip().upper() for v in items)


def set_aside(series: Series) -> str | None:
    """Why a PT series is not the PET to segment (None: it may be): a projection (MIP) or a
    reconstruction without attenuation correction (NAC), by ImageType, CorrectedImage or its description."""
    words = set(series.description.upper().replace("-", " ").replace("_", " ").split())
    if {"MIP", "PROJECTION", "REPROJECTION"} & (set(series.image_type) | words):
        return "a maximum-intensity projection (MIP)"
    if (series.corrected and "ATTN" not in series.corrected) or {"NAC", "NOAC", "NONAC"} & words:
        return "not attenuation corrected (NAC)"
    return None


def pet_series(folder: Path) -> Series:
    """The one PET series of a case folder; a clear error for none or several."""
    series = find_series(folder)
    pets = [s for s in series if s.modality == PET_MODALITY]
    if not pets:
        found = ", ".join(sorted({s.modality or "?" for s in series})) or "no DICOM files"
        raise InputError(f"{folder}: no PET (modality PT) series ({found})")
    if len(pets) > 1:  # an exported study: the attenuation-corrected PET beside its NAC and MIP series
        reasons = {s.uid: set_aside(s) for s in pets}
        kept = [s for s in pets if reasons[s.uid] is None]
        if len(kept) == 1:
            for s in pets:
                if reasons[s.uid]:
                    log.info("%s: %s set aside: %s", folder, s.name(), reasons[s.uid])
            return kept[0]
        raise InputError(f"{folder}: {len(kept) or len(pets)} PET series and no way to tell which to segment, one "
                         "expected per case folder: " + "; ".join(f"{s.name()}" + (f" ({reasons[s.uid]})"
                                                                                  if reasons[s.uid] else "")
                                                                  for s in pets))
    return pets[0]


def _tag(ds: pydicom.Dataset, keyword: str, series: Series, where: str = "") -> object:
    value = ds.get(keyword)
    if value is None or value == "":
        raise InputError(f"{series.name()}: missing {keyword}{where}")
    return value


def _datetime(date: str, time: str) -> dt.datetime:
    time = time.split(".")[0].ljust(6, "0")
    return dt.datetime.strptime(f"{date}{time}", "%Y%m%d%H%M%S")


def _geometry(slices: list[pydicom.Dataset], series: Series) -> tuple[list[pydicom.Dataset], np.ndarray, tuple]:
    """Slices sorted along the normal; direction (3x3, columns = axes), spacing (x, y, z), origin."""
    orientations = {tuple(round(float(v), 4) for v in _tag(ds, "ImageOrientationPatient", series)) for ds in slices}
    if len(orientations) != 1:
        raise InputError(f"{series.name()}: slices with {len(orientations)} orientations (a mixed series)")
    iop = np.array(next(iter(orientations)), dtype=float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    positions = np.array([[float(v) for v in _tag(ds, "ImagePositionPatient", series)] for ds in slices])
    order = np.argsort(positions @ normal)
    slices, positions = [slices[i] for i in order], positions[order]
    sizes = {(int(_tag(ds, "Rows", series)), int(_tag(ds, "Columns", series))) for ds in slices}
    spacings = {tuple(round(float(v), 5) for v in _tag(ds, "PixelSpacing", series)) for ds in slices}
    if len(sizes) != 1 or len(spacings) != 1:
        raise InputError(f"{series.name()}: slices of different sizes or pixel spacings (a mixed series)")
    if len(slices) < 2:
        raise InputError(f"{series.name()}: one slice, not a volume")
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    if np.any(along <= 1e-6):
        raise InputError(f"{series.name()}: two slices at one position (a mixed series or duplicates)")
    off_axis = np.linalg.norm(steps - np.outer(along, normal), axis=1)
    tilt = float(ds_tilt) if (ds_tilt := slices[0].get("GantryDetectorTilt")) not in (None, "") else 0.0
    if abs(tilt) > 1e-3 or np.any(off_axis > 0.01 * np.maximum(along, 1e-6) + 1e-3):
        raise InputError(f"{series.name()}: gantry tilt (slices not stacked along their normal); resample it first")
    if along.max() - along.min() > 0.01 * along.mean():
        raise InputError(f"{series.name()}: unequal slice spacing ({along.min():.3f} to {along.max():.3f} mm)")
    pixel = next(iter(spacings))  # (row spacing, column spacing) = (y, x)
    direction = np.stack([row, col, normal], axis=1)
    return slices, direction, ((float(pixel[1]), float(pixel[0]), float(along.mean())), tuple(positions[0]))


def _units(first: pydicom.Dataset, series: Series, default: str | None = None) -> str:
    """BQML, CNTS or GML; a missing Units is ``default`` where given (the user's factors say what the values are)."""
    units = str(first.get("Units") or default or _tag(first, "Units", series)).upper()
    if units not in ("BQML", "CNTS", "GML"):
        raise InputError(f"{series.name()}: Units {units}; only BQML (or CNTS with a scale factor, or GML) is read")
    return units


def _value_scale(first: pydicom.Dataset, units: str, series: Series) -> float:
    """Stored value -> Bq/ml: Philips' activity concentration scale factor for CNTS, 1 otherwise."""
    if units != "CNTS":
        return 1.0
    if PHILIPS_ACTIVITY_SCALE not in first:
        raise InputError(f"{series.name()}: Units CNTS without Philips' activity concentration scale factor "
                         "(7053,1009)")
    return float(first[PHILIPS_ACTIVITY_SCALE].value)


def _weight(first: pydicom.Dataset, series: Series) -> float:
    weight = float(_tag(first, "PatientWeight", series))
    if not WEIGHT_KG[0] <= weight <= WEIGHT_KG[1]:
        raise InputError(f"{series.name()}: implausible PatientWeight {weight:g} kg (expected "
                         f"{WEIGHT_KG[0]:g}-{WEIGHT_KG[1]:g}; grams given as kg?)")
    return weight


def _drug(first: pydicom.Dataset, series: Series) -> pydicom.Dataset:
    info = _tag(first, "RadiopharmaceuticalInformationSequence", series)
    if not len(info):  # type: ignore[arg-type]
        raise InputError(f"{series.name()}: missing RadiopharmaceuticalInformationSequence")
    return info[0]  # type: ignore[index]


def _positive(drug: pydicom.Dataset, keyword: str, unit: str, series: Series) -> float:
    value = float(_tag(drug, keyword, series, " (in RadiopharmaceuticalInformationSequence)"))
    if value <= 0:
        raise InputError(f"{series.name()}: {keyword} {value:g} {unit} must be positive")
    return value


def _correction(first: pydicom.Dataset, series: Series, default: str | None = None) -> str:
    correction = str(first.get("DecayCorrection") or default or _tag(first, "DecayCorrection", series)).upper()
    if correction not in ("START", "ADMIN"):
        raise InputError(f"{series.name()}: DecayCorrection {correction}; only START and ADMIN are read")
    return correction


def _times(first: pydicom.Dataset, drug: pydicom.Dataset, slices: Sequence[pydicom.Dataset], series: Series,
           correction: str) -> tuple[float | str, float | str]:
    """Injection and the decay-correction reference as ``SuvFactors`` takes them: ISO date-times for
    START; 0 and 0 for ADMIN (values corrected to the injection: no decay to apply)."""
    if correction == "ADMIN":
        return 0.0, 0.0
    injected, start = _injection(first, drug, series), _scan_start(first, slices, series)
    if start < injected:
        raise InputError(f"{series.name()}: injection ({injected:%Y-%m-%d %H:%M:%S}) after the scan start "
                         f"({start:%Y-%m-%d %H:%M:%S})")
    return injected.isoformat(), start.isoformat()


def suv_factor(first: pydicom.Dataset, slices: Sequence[pydicom.Dataset], series: Series) -> float:
    """Bq/ml -> SUVbw, from the headers (see the module's docstring); the first missing or unreadable
    header is an InputError naming its keyword. The formula is ``SuvFactors.factor``'s."""
    units = _units(first, series)
    if units == "GML":
        return 1.0
    weight = _weight(first, series)
    drug = _drug(first, series)
    dose = _positive(drug, "RadionuclideTotalDose", "Bq", series)
    half_life = _positive(drug, "RadionuclideHalfLife", "s", series)
    correction = _correction(first, series)
    value_scale = _value_scale(first, units, series)
    injection, scan = _times(first, drug, slices, series, correction)
    return SuvFactors(weight_kg=weight, dose_bq=dose, injection=injection, scan=scan, half_life_s=half_life,
                      value_scale=value_scale, origin=series.name()).factor()


def _injection(first: pydicom.Dataset, drug: pydicom.Dataset, series: Series) -> dt.datetime:
    if drug.get("RadiopharmaceuticalStartDateTime"):
        text = str(drug.RadiopharmaceuticalStartDateTime)
        return _datetime(text[:8], text[8:] or "000000")
    return _datetime(str(_tag(first, "SeriesDate", series)),
                     str(_tag(drug, "RadiopharmaceuticalStartTime", series,
                              " (in RadiopharmaceuticalInformationSequence)")))


def _scan_start(first: pydicom.Dataset, slices: Sequence[pydicom.Dataset], series: Series) -> dt.datetime:
    """SeriesDate/SeriesTime, or the earliest acquisition when earlier (a series re-created later)."""
    start = _datetime(str(_tag(first, "SeriesDate", series)), str(_tag(first, "SeriesTime", series)))
    acquired = [_datetime(str(ds.get("AcquisitionDate") or first.SeriesDate), str(ds.AcquisitionTime))
                for ds in slices if ds.get("AcquisitionTime")]
    return min([start, *acquired])


def header_suv_factors(first: pydicom.Dataset, slices: Sequence[pydicom.Dataset], series: Series) -> SuvFactors:
    """What the headers still give of the SUV (``--suv-factors`` fills in the rest), read by the same
    readers as ``suv_factor``: weight, dose, half-life, injection and scan start as
    ``runner.suv.SuvFactors``; ADMIN decay correction as no decay; Philips CNTS with its scale. A
    missing Units is taken as Bq/ml and a missing DecayCorrection as START (the user's factors say so)."""
    def value(read):  # one missing or malformed ingredient leaves the others
        try:
            return read()
        except (InputError, ValueError, TypeError, AttributeError, IndexError):
            return None

    origin = "DICOM headers"
    try:
        units = _units(first, series, default="BQML")
        if units == "GML":
            return SuvFactors(scale=1.0, origin=origin)
        value_scale = _value_scale(first, units, series)
        correction = _correction(first, series, default="START")
    except InputError as exc:  # values that no added ingredient makes SUV
        return SuvFactors(origin=origin, unusable=str(exc).removeprefix(f"{series.name()}: "))
    drug = value(lambda: _drug(first, series))
    injection, scan = (0.0, 0.0) if correction == "ADMIN" else (  # as in _times, each read on its own
        value(lambda: _injection(first, drug, series).isoformat()) if drug is not None else None,
        value(lambda: _scan_start(first, slices, series).isoformat()))
    return SuvFactors(weight_kg=value(lambda: float(first.PatientWeight)),
                      dose_bq=value(lambda: _positive(drug, "RadionuclideTotalDose", "Bq", series)),
                      half_life_s=value(lambda: _positive(drug, "RadionuclideHalfLife", "s", series)),
                      injection=injection, scan=scan, value_scale=value_scale, origin=origin)


def read_pet_series(series: Series) -> PetVolume:
    """The series as an SUV image (float32) on its own grid, with its slices in z order.

    Where the SUV cannot be computed (an anonymiser removed the weight, the dose or the times; units
    that are not read) the stored values are kept and ``suv_missing`` says why: the mask does not need
    SUV (the percentile scaling maps any linear scale to the same network input), only the report's
    SUV quantities do. A series that is not one regular volume is still refused.
    """
    try:
        slices = [pydicom.dcmread(p) for p in series.files]
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{series.name()}: a file could not be read ({exc})") from None
    multiframe = None
    if any(int(ds.get("NumberOfFrames") or 1) > 1 for ds in slices):
        if len(slices) != 1:
            raise InputError(f"{series.name()}: {len(slices)} multi-frame files in one series; one expected")
        multiframe = slices[0]
        slices = frames_as_slices(multiframe, series)
    slices, direction, (spacing, origin) = _geometry(slices, series)
    try:
        factor, missing = suv_factor(slices[0], slices, series), None
    except InputError as exc:
        factor, missing = 1.0, str(exc).removeprefix(f"{series.name()}: ")
    try:
        planes = [ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1.0))
                  + float(ds.get("RescaleIntercept", 0.0)) for ds in slices]
    except Exception as exc:  # noqa: BLE001 - e.g. a compressed transfer syntax without its decoder
        raise InputError(f"{series.name()}: pixel data could not be decoded ({exc})") from None
    image = sitk.GetImageFromArray((np.stack(planes) * factor).astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    frame_of_slice = tuple(int(ds.frame_index) for ds in slices) if multiframe is not None else ()
    return PetVolume(image, slices, series, missing, multiframe, frame_of_slice)


#: Attributes a frame of an enhanced PET takes from the functional groups (per frame first, then shared).
_FRAME_GROUPS = (("PlanePositionSequence", ("ImagePositionPatient",)),
                 ("PlaneOrientationSequence", ("ImageOrientationPatient",)),
                 ("PixelMeasuresSequence", ("PixelSpacing", "SliceThickness")),
                 ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
                 ("UnassignedSharedConvertedAttributesSequence", None),
                 ("UnassignedPerFrameConvertedAttributesSequence", None))


def frames_as_slices(ds: pydicom.Dataset, series: Series) -> list[pydicom.Dataset]:
    """An Enhanced or Legacy Converted Enhanced PET as one single-frame dataset per frame, so that the
    single-frame rules (geometry, SUV, refusals) apply unchanged.

    Each frame gets the file's top-level attributes, then the shared functional groups', then its own
    (position, orientation, pixel spacing, rescale, and a legacy conversion's unassigned attributes:
    Units, DecayCorrection, the radiopharmaceutical, times), its decoded pixels, and ``frame_index``
    (0-based) so that a SEG can refer back to the frame.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    try:
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - e.g. a compressed transfer syntax without its decoder
        raise InputError(f"{series.name()}: pixel data could not be decoded ({exc})") from None
    shared = (ds.get("SharedFunctionalGroupsSequence") or [pydicom.Dataset()])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", [])
    if len(per_frame) != len(pixels):
        raise InputError(f"{series.name()}: {len(pixels)} frames but {len(per_frame)} per-frame functional groups")
    top = pydicom.Dataset()
    for element in ds:
        if element.keyword not in ("PixelData", "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
                                   "NumberOfFrames"):
            top.add(element)
    out = []
    for index, (frame, groups) in enumerate(zip(pixels, per_frame, strict=True)):
        item = copy.deepcopy(top)
        for source in (shared, groups):
            for sequence, keywords in _FRAME_GROUPS:
                if sequence not in source or not len(source[sequence].value):
                    continue
                inner = source[sequence].value[0]
                for element in inner:
                    if keywords is None or element.keyword in keywords:
                        item.add(copy.deepcopy(element))
        item.file_meta = FileMetaDataset()
        item.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        item.PixelData = np.ascontiguousarray(frame).tobytes()
        item.frame_index = index  # a Python attribute, not a DICOM element
        out.append(item)
    return out


def algorithm_version() -> str:
    """The package's version for the SEG's algorithm identification ("unknown" where not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("autopet-sw-unet")
    except PackageNotFoundError:
        return "unknown"


def has_dicom(folder: Path) -> bool:
    """Whether any DICOM file lies below ``folder`` (stops at the first)."""
    return any(p.is_file() and is_dicom_file(p) for p in folder.rglob("*"))


def seg_problem(path: Path) -> str | None:
    """Why a SEG left by an earlier run cannot be kept (None: a readable DICOM-SEG)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001
        return f"{path}: not a readable DICOM file ({exc})"
    if ds.get("Modality") != "SEG" or not ds.get("NumberOfFrames"):
        return f"{path}: not a DICOM segmentation"
    return None


#: Type 2 attributes of the patient and study modules that a SEG copies from its source images: an
#: anonymiser often drops them, and DICOM lets them be present but empty.
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _fill_type2_attributes(pet: PetVolume) -> None:
    """Give the PET's slices (in memory only) the empty Type 2 attributes an anonymiser removed.

    The mask needs none of them, and without them highdicom stops on the first missing one, after the
    case was computed. ``StudyInstanceUID`` (Type 1) cannot be made up: a SEG must name its study.
    """
    for ds in _seg_sources(pet):
        if not ds.get("StudyInstanceUID"):
            raise InputError(f"{pet.series.name()}: missing StudyInstanceUID, which a DICOM-SEG must refer to")
        for keyword in TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")


def write_seg(mask: sitk.Image, pet: PetVolume, path: Path, version: str | None = None,
              algorithm: str = "autopet-sw-unet", description: str | None = None) -> None:
    """A binary DICOM-SEG with one segment "lesion", referencing every PET slice, written atomically."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from common.atomic import write_atomic

    version = version or algorithm_version()
    _fill_type2_attributes(pet)
    frames = sitk.GetArrayFromImage(mask).astype(np.uint8)  # (z, y, x): frame k lies on pet.slices[k]
    if frames.shape != (len(pet.slices), int(pet.slices[0].Rows), int(pet.slices[0].Columns)):
        raise ValueError(f"mask of shape {frames.shape} is not on the PET series' frames")
    if pet.multiframe is not None:  # the SEG's frames in the source file's frame order
        order = np.empty(len(pet.frame_of_slice), dtype=int)
        order[list(pet.frame_of_slice)] = np.arange(len(pet.frame_of_slice))
        frames = frames[order]
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm, family=codes.cid7162.ArtificialIntelligence, version=version))
    seg = hd.seg.Segmentation(
        source_images=_seg_sources(pet), pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=hd.UID(), series_number=9901,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="autopet-sw-unet",
        manufacturer_model_name=algorithm, software_versions=version, device_serial_number="0",
        content_description=(description or "FDG-avid lesions, automatic")[:64], omit_empty_frames=False)
    write_atomic(path, lambda tmp: seg.save_as(tmp))


def _seg_sources(pet: PetVolume) -> list[pydicom.Dataset]:
    """The datasets a SEG refers to: the slices, or the one multi-frame file."""
    return [pet.multiframe] if pet.multiframe is not None else pet.slices


def read_seg_mask(path: Path, pet: PetVolume) -> np.ndarray:
    """The SEG's lesion frames as a (z, y, x) uint8 array in ``pet``'s slice order (for checks and tests)."""
    import highdicom as hd

    seg = hd.seg.segread(path)
    if pet.multiframe is not None:
        frames = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=pet.multiframe.SOPInstanceUID,
            source_frame_numbers=[k + 1 for k in pet.frame_of_slice], segment_numbers=[1],
            assert_missing_frames_are_empty=True)
        return np.ascontiguousarray(frames[..., 0]).astype(np.uint8)
    uids = [ds.SOPInstanceUID for ds in pet.slices]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1],
                                               assert_missing_frames_are_empty=True)
    return np.ascontiguousarray(frames[..., 0]).astype(np.uint8)
