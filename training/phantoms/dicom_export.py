"""A phantom as a hospital would send it: a DICOM PET series in Bq/ml (and a CT series) with the
dose, half-life, injection, series and acquisition times and weight that SUV is computed from.

The inverse of ``runner.dicom``'s conversion, written the way scanners write: axial slices in LPS
(``ImageOrientationPatient`` 1\\0\\0\\0\\1\\0), 16-bit unsigned pixels with a per-slice
``RescaleSlope``, decay corrected to the scan start. Used by the tests and to try the DICOM path
without patient data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
F18_HALF_LIFE_S = 6586.2


@dataclass(frozen=True)
class Acquisition:
    """What SUV depends on: the patient's weight, the injection and the scan."""

    weight_kg: float = 75.0
    dose_bq: float = 3.2e8
    half_life_s: float = F18_HALF_LIFE_S
    injected: dt.datetime = dt.datetime(2026, 3, 4, 9, 0, 0)
    scan_start: dt.datetime = dt.datetime(2026, 3, 4, 10, 2, 30)
    units: str = "BQML"
    decay_correction: str = "START"
    extra: dict = field(default_factory=dict)

    def bqml_per_suv(self) -> float:
        elapsed = (self.scan_start - self.injected).total_seconds()
        return self.dose_bq * 2.0 ** (-elapsed / self.half_life_s) / (self.weight_kg * 1000.0)


def _base(image: sitk.Image, k: int, uids: dict, modality: str, storage: str, acq: Acquisition,
          patient: str) -> pydicom.Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = storage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.FrameOfReferenceUID = uids["study"], uids["frame"]
    ds.SeriesInstanceUID = uids[modality]
    ds.Modality, ds.PatientName, ds.PatientID = modality, f"Phantom^{patient}", patient
    ds.PatientBirthDate, ds.PatientSex, ds.PatientWeight = "19700101", "O", f"{acq.weight_kg:g}"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = acq.scan_start.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = acq.scan_start.strftime("%H%M%S")
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.SeriesNumber = 1 if modality == "PT" else 2
    ds.SeriesDescription = "PET WB phantom" if modality == "PT" else "CT WB phantom"
    ds.Manufacturer = "synthetic"
    ds.InstanceNumber = k + 1
    spacing, origin = image.GetSpacing(), np.asarray(image.GetOrigin())
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [float(v) for v in origin + np.array([0.0, 0.0, k * spacing[2]])]
    ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
    ds.SliceThickness = float(spacing[2])
    ds.Rows, ds.Columns = image.GetSize()[1], image.GetSize()[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    return ds


def write_dicom_study(pet_suv: sitk.Image, folder: Path, acq: Acquisition = Acquisition(),
                      ct: sitk.Image | None = None, patient: str = "PHANTOM") -> dict[str, str]:
    """Write ``pet_suv`` (SUV) as a PET series in Bq/ml under ``folder/PT`` (and ``ct`` under
    ``folder/CT``); returns the UIDs. The images are first brought to LPS, as axial scans are."""
    pet = sitk.DICOMOrient(pet_suv, "LPS")
    uids = {"study": generate_uid(), "frame": generate_uid(), "PT": generate_uid(), "CT": generate_uid()}
    bqml = sitk.GetArrayFromImage(pet).astype(np.float64) * acq.bqml_per_suv()
    (folder / "PT").mkdir(parents=True, exist_ok=True)
    for k, plane in enumerate(bqml):
        ds = _base(pet, k, uids, "PT", PET_STORAGE, acq, patient)
        slope = float(plane.max()) / 65535.0 if plane.max() > 0 else 1.0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", "0"
        slope = float(ds.RescaleSlope)
        ds.PixelRepresentation = 0
        ds.PixelData = np.clip(np.rint(plane / slope), 0, 65535).astype(np.uint16).tobytes()
        ds.Units, ds.DecayCorrection, ds.CorrectedImage = acq.units, acq.decay_correction, ["DECY", "ATTN"]
        drug = pydicom.Dataset()
        drug.Radiopharmaceutical = "Fluorodeoxyglucose"
        drug.RadionuclideTotalDose = f"{acq.dose_bq:.6g}"
        drug.RadionuclideHalfLife = f"{acq.half_life_s:g}"
        drug.RadiopharmaceuticalStartTime = acq.injected.strftime("%H%M%S")
        drug.RadiopharmaceuticalStartDateTime = acq.injected.strftime("%Y%m%d%H%M%S")
        ds.RadiopharmaceuticalInformationSequence = [drug]
        for keyword, value in acq.extra.items():  # a test's broken or removed tag
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.save_as(folder / "PT" / f"{k + 1:04d}.dcm", enforce_file_format=True)
    if ct is not None:
        ct = sitk.DICOMOrient(ct, "LPS")
        (folder / "CT").mkdir(parents=True, exist_ok=True)
        for k, plane in enumerate(sitk.GetArrayFromImage(ct)):
            ds = _base(ct, k, uids, "CT", CT_STORAGE, acq, patient)
            ds.RescaleSlope, ds.RescaleIntercept, ds.PixelRepresentation = "1", "-1024", 0
            ds.PixelData = np.clip(plane.astype(np.int32) + 1024, 0, 65535).astype(np.uint16).tobytes()
            ds.save_as(folder / "CT" / f"{k + 1:04d}.dcm", enforce_file_format=True)
    return uids
