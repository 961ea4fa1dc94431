"""DICOM in (SUV from the headers), DICOM-SEG out, NIfTI in and out: with series the project writes
from phantoms of known SUV (training/phantoms/dicom_export.py)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import process
from common.errors import InputError
from runner.dicom import pet_series, read_pet_series, read_seg_mask, write_seg
from tests.conftest import HOTSPOT_WEIGHTS, body_with_lesion
from training.phantoms.dicom_export import Acquisition, write_dicom_study

OUT_SUB = Path("images/automated-petct-lesion-segmentation")


@pytest.fixture(scope="module")
def phantom() -> sitk.Image:
    pet, _ = body_with_lesion(size=(40, 36, 30), direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1))
    return pet


def suv_back(folder: Path) -> sitk.Image:
    return read_pet_series(pet_series(folder)).image


@pytest.mark.parametrize("acq", [
    Acquisition(),
    Acquisition(weight_kg=52.5, dose_bq=2.1e8, scan_start=dt.datetime(2026, 3, 4, 11, 15, 0)),
    Acquisition(decay_correction="ADMIN"),
], ids=["start", "another-patient", "admin"])
def test_suv_from_the_headers_matches_the_phantom(tmp_path, phantom, acq):
    if acq.decay_correction == "ADMIN":  # corrected to the injection: the dose is not decayed
        acq = Acquisition(decay_correction="ADMIN", scan_start=acq.injected)
    write_dicom_study(phantom, tmp_path / "case", acq)
    back = suv_back(tmp_path / "case")
    expected = sitk.DICOMOrient(phantom, "LPS")
    assert back.GetSize() == expected.GetSize() and back.GetSpacing() == expected.GetSpacing()
    np.testing.assert_allclose(back.GetOrigin(), expected.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(back.GetDirection(), expected.GetDirection(), atol=1e-9)
    a, b = sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(expected)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.max()))


def test_cnts_with_the_philips_scale_factor(tmp_path, phantom):
    """CNTS pixels times (7053,1009) are Bq/ml: the writer stores Bq/ml / 2 and a factor 2."""
    acq = Acquisition(units="CNTS")
    write_dicom_study(phantom, tmp_path / "case", acq)
    for path in (tmp_path / "case/PT").iterdir():
        ds = pydicom.dcmread(path)
        ds.RescaleSlope = f"{float(ds.RescaleSlope) / 2:.10g}"
        ds.add_new((0x7053, 0x1009), "DS", "2")
        ds.save_as(path)
    b = sitk.GetArrayFromImage(sitk.DICOMOrient(phantom, "LPS"))
    np.testing.assert_allclose(sitk.GetArrayFromImage(suv_back(tmp_path / "case")), b, rtol=1e-4,
                               atol=1e-4 * float(b.max()))


def _edit(folder: Path, change) -> None:
    for path in sorted((folder / "PT").iterdir()):
        ds = pydicom.dcmread(path)
        change(ds, int(ds.InstanceNumber) - 1)
        ds.save_as(path)


@pytest.mark.parametrize("name, change, message", [
    ("units", lambda ds, k: setattr(ds, "Units", "PROPCPS"), "Units PROPCPS; only BQML"),
    ("cnts", lambda ds, k: setattr(ds, "Units", "CNTS"), "Units CNTS without Philips' activity concentration"),
    ("weight", lambda ds, k: delattr(ds, "PatientWeight"), "missing PatientWeight"),
    ("grams", lambda ds, k: setattr(ds, "PatientWeight", "75000"), "implausible PatientWeight 75000 kg"),
    ("dose", lambda ds, k: delattr(ds.RadiopharmaceuticalInformationSequence[0], "RadionuclideTotalDose"),
     "missing RadionuclideTotalDose (in RadiopharmaceuticalInformationSequence)"),
    ("injected-late", lambda ds, k: setattr(ds.RadiopharmaceuticalInformationSequence[0],
                                            "RadiopharmaceuticalStartDateTime", "20260304120000"),
     "injection (2026-03-04 12:00:00) after the scan start (2026-03-04 10:02:30)"),
    ("decay", lambda ds, k: setattr(ds, "DecayCorrection", "NONE"), "DecayCorrection NONE; only START and ADMIN"),
    ("tilt", lambda ds, k: setattr(ds, "ImagePositionPatient",
                                   [float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1]) + 0.5 * k,
                                    float(ds.ImagePositionPatient[2])]), "gantry tilt"),
    ("spacing", lambda ds, k: setattr(ds, "ImagePositionPatient",
                                      [*map(float, ds.ImagePositionPatient[:2]),
                                       float(ds.ImagePositionPatient[2]) + (1.0 if k > 10 else 0.0)]),
     "unequal slice spacing"),
])
def test_bad_headers_give_one_clear_error(tmp_path, phantom, name, change, message):
    """A series that is not one regular volume is refused in one line; headers that only stop the SUV
    leave the stored values (Bq/ml after the rescale) and say in one line why they are not SUV."""
    write_dicom_study(phantom, tmp_path / "case")
    _edit(tmp_path / "case", change)
    if name in ("tilt", "spacing"):
        with pytest.raises(InputError) as err:
            suv_back(tmp_path / "case")
        text = str(err.value)
        assert message in text and text.startswith("series ") and "\n" not in text
        return
    volume = read_pet_series(pet_series(tmp_path / "case"))
    assert message in volume.suv_missing and "\n" not in volume.suv_missing
    stored = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.get("RescaleIntercept", 0.0))
                       for ds in volume.slices])  # pydicom's own values, in the volume's slice order
    np.testing.assert_allclose(sitk.GetArrayFromImage(volume.image), stored, rtol=1e-6)


def test_two_pet_series_in_one_case_folder(tmp_path, phantom):
    write_dicom_study(phantom, tmp_path / "case" / "first")
    write_dicom_study(phantom, tmp_path / "case" / "second")
    with pytest.raises(InputError, match="2 PET series and no way to tell which to segment, one expected per case"):
        pet_series(tmp_path / "case")


def test_the_attenuation_corrected_pet_is_chosen_beside_its_nac_and_mip_series(tmp_path, phantom):
    """An exported study: the PET, a non-attenuation-corrected reconstruction and a MIP series, all PT.
    The one to segment is the attenuation-corrected, non-projection series; the others are set aside."""
    uids = write_dicom_study(phantom, tmp_path / "case" / "ac")
    write_dicom_study(phantom, tmp_path / "case" / "nac")
    _edit(tmp_path / "case" / "nac", lambda ds, k: (setattr(ds, "CorrectedImage", ["DECY"]),
                                                    setattr(ds, "SeriesDescription", "PET WB NAC")))
    write_dicom_study(phantom, tmp_path / "case" / "mip")
    _edit(tmp_path / "case" / "mip", lambda ds, k: setattr(ds, "ImageType", ["DERIVED", "SECONDARY", "MIP"]))
    assert pet_series(tmp_path / "case").uid == uids["PT"]
    _edit(tmp_path / "case" / "nac", lambda ds, k: setattr(ds, "CorrectedImage", ["DECY", "ATTN"]))
    _edit(tmp_path / "case" / "nac", lambda ds, k: setattr(ds, "SeriesDescription", "PET WB 2"))
    with pytest.raises(InputError, match=r"no way to tell which to segment.*\(a maximum-intensity projection"):
        pet_series(tmp_path / "case")


def test_dicom_seg_round_trip(tmp_path, phantom):
    uids = write_dicom_study(phantom, tmp_path / "case")
    pet = read_pet_series(pet_series(tmp_path / "case"))
    mask = sitk.Cast(pet.image > 3.0, sitk.sitkUInt8)
    assert sitk.GetArrayViewFromImage(mask).any()
    write_seg(mask, pet, tmp_path / "seg.dcm", version="test")
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uids["PT"]
    assert seg.SegmentSequence[0].SegmentLabel == "lesion"
    assert seg.SegmentSequence[0].SegmentAlgorithmName == "autopet-sw-unet"
    np.testing.assert_array_equal(read_seg_mask(tmp_path / "seg.dcm", pet), sitk.GetArrayFromImage(mask))
    # geometry: each frame's position is its PET slice's
    positions = [tuple(float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient)
                 for f in seg.PerFrameFunctionalGroupsSequence]
    assert sorted(positions) == sorted(tuple(float(v) for v in ds.ImagePositionPatient) for ds in pet.slices)


def test_process_on_three_dicom_studies_one_broken(tmp_path, phantom, caplog):
    root = tmp_path / "input"
    for name in ("study_a", "study_b"):
        write_dicom_study(phantom, root / name / "nested", ct=sitk.Cast(phantom * 0 - 1000, sitk.sitkInt16))
    write_dicom_study(phantom, root / "study_c")
    _edit(root / "study_c", lambda ds, k: setattr(ds, "ImagePositionPatient", [
        float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1]) + 0.5 * k,
        float(ds.ImagePositionPatient[2])]))  # gantry tilt: not one regular volume
    caplog.set_level(logging.INFO)

    code = process.main(["--input", str(root), "--output", str(tmp_path / "out"), "--weights", str(HOTSPOT_WEIGHTS),
                         "--device", "cpu", "--report"])
    assert code == 1
    written = sorted(p.name for p in (tmp_path / "out" / OUT_SUB).iterdir())
    assert written == ["study_a.dcm", "study_b.dcm"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "study_c" in r.getMessage()]
    assert len(errors) == 2 and errors[0].startswith(f"{root / 'study_c'}: series ")  # the case's line, the summary
    assert errors[0].endswith("(PET WB phantom): gantry tilt (slices not stacked along their normal); "
                              "resample it first")
    pet = read_pet_series(pet_series(root / "study_a"))
    mask = read_seg_mask(tmp_path / "out" / OUT_SUB / "study_a.dcm", pet)
    assert mask.any()  # the hot ball
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert [r["outputs"][0]["type"] if r["outputs"] else None for r in results] == ["dicom_seg", "dicom_seg", None]
    assert json.loads((tmp_path / "out/lesion-report/study_a.json").read_text())["summary"]["lesions"] >= 1


def test_nifti_in_and_out_keeps_the_geometry(tmp_path, phantom):
    (tmp_path / "input/images/pet").mkdir(parents=True)
    sitk.WriteImage(phantom, str(tmp_path / "input/images/pet/case.nii.gz"))
    pet = sitk.ReadImage(str(tmp_path / "input/images/pet/case.nii.gz"))
    for fmt, name in ((None, "case.nii.gz"), ("mha", "case.mha"), ("nifti", "case.nii.gz")):
        out = tmp_path / f"out-{fmt}"
        args = ["--input", str(tmp_path / "input"), "--output", str(out), "--weights", str(HOTSPOT_WEIGHTS),
                "--device", "cpu"] + (["--output-format", fmt] if fmt else [])
        assert process.main(args) == 0
        mask = sitk.ReadImage(str(out / OUT_SUB / name))
        assert mask.GetSize() == pet.GetSize() and mask.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_allclose(mask.GetOrigin(), pet.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(mask.GetDirection(), pet.GetDirection(), atol=1e-6)
        np.testing.assert_allclose(mask.GetSpacing(), pet.GetSpacing(), atol=1e-6)
    assert process.main(["--input", str(tmp_path / "input"), "--output", str(tmp_path / "x"), "--weights",
                         str(HOTSPOT_WEIGHTS), "--output-format", "dicom-seg"]) == 2
    shutil.rmtree(tmp_path / "x", ignore_errors=True)


def test_an_anonymised_series_keeps_its_mask(tmp_path, phantom):
    """An anonymiser dropped the Type 2 patient and study attributes (birth date, sex, IDs, referring
    physician): the SUV headers are complete, so the case is segmented and its SEG is written, with
    those attributes present and empty as DICOM allows, instead of losing the computed mask."""
    from runner.dicom import TYPE2_COPIED

    root = tmp_path / "input"
    write_dicom_study(phantom, root / "anon")
    _edit(root / "anon", lambda ds, k: [delattr(ds, key) for key in TYPE2_COPIED if key in ds])
    assert not any(key in pydicom.dcmread(next((root / "anon/PT").iterdir())) for key in TYPE2_COPIED)
    code = process.main(["--input", str(root), "--output", str(tmp_path / "out"), "--weights", str(HOTSPOT_WEIGHTS),
                         "--device", "cpu"])
    assert code == 0
    seg = hd.seg.segread(tmp_path / "out" / OUT_SUB / "anon.dcm")  # highdicom's own parser
    assert seg.PatientBirthDate == "" and seg.PatientSex == "" and seg.StudyID == ""
    pet = read_pet_series(pet_series(root / "anon"))
    assert seg.StudyInstanceUID == pet.slices[0].StudyInstanceUID
    assert read_seg_mask(tmp_path / "out" / OUT_SUB / "anon.dcm", pet).any()


def test_a_series_without_suv_headers_is_segmented_and_its_report_leaves_suv_empty(tmp_path, phantom, caplog):
    """An archive export whose anonymiser removed the units, the patient's weight and the radiopharmaceutical,
    its pixels MONOCHROME1: the mask needs no SUV, so the case is segmented from the stored values (the
    same mask as with SUV: the percentile scaling is scale-free), and the report gives volumes and counts
    with SUV empty. The same series with ``--suv-factors`` (per case, from a JSON table) gets its SUV back."""
    acq = Acquisition()
    root = tmp_path / "input"
    for name in ("full", "stripped", "given"):
        write_dicom_study(phantom, root / name, acq)
    for name in ("stripped", "given"):
        _edit(root / name, lambda ds, k: ([delattr(ds, key) for key in ("Units", "PatientWeight",
                                                                        "RadiopharmaceuticalInformationSequence")],
                                          setattr(ds, "PhotometricInterpretation", "MONOCHROME1")))
    table = tmp_path / "factors.json"
    table.write_text(json.dumps({"given": {"weight": acq.weight_kg, "dose": f"{acq.dose_bq / 1e6} MBq",
                                           "injection": acq.injected.isoformat(), "scan": acq.scan_start.isoformat(),
                                           "half_life": acq.half_life_s}}))
    caplog.set_level(logging.WARNING)
    code = process.main(["--input", str(root), "--output", str(tmp_path / "out"), "--weights", str(HOTSPOT_WEIGHTS),
                         "--device", "cpu", "--report", "--suv-factors", str(table)])
    assert code == 0
    masks = {name: read_seg_mask(tmp_path / "out" / OUT_SUB / f"{name}.dcm", read_pet_series(pet_series(root / name)))
             for name in ("full", "stripped", "given")}
    assert masks["full"].any() and np.array_equal(masks["full"], masks["stripped"])
    assert np.array_equal(masks["full"], masks["given"])
    report = json.loads((tmp_path / "out/lesion-report/stripped.json").read_text())
    assert report["suv_missing"] == "missing Units"
    assert report["summary"]["suv_max"] is None and report["summary"]["tmtv_ml"] > 0
    assert all(lesion["tlg"] is None and lesion["volume_ml"] > 0 for lesion in report["lesions"])
    full = json.loads((tmp_path / "out/lesion-report/full.json").read_text())
    assert full["summary"]["suv_max"] > 0 and full["summary"]["tmtv_ml"] == report["summary"]["tmtv_ml"]
    assert any("values are not SUV (missing Units)" in r.getMessage() for r in caplog.records)
    given = json.loads((tmp_path / "out/lesion-report/given.json").read_text())
    assert given.get("suv_missing") is None
    for key in ("suv_max", "tlg"):  # the headers' SUV and the given factors' agree to 1e-4
        assert given["summary"][key] == pytest.approx(full["summary"][key], rel=1e-4)
    for ours, theirs in zip(given["lesions"], full["lesions"], strict=True):
        for key in ("suv_max", "suv_mean", "suv_peak", "tlg"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-4)
    results = {e["inputs"][0]["filename"]: e for e in json.loads((tmp_path / "out/results.json").read_text())}
    assert results["full"]["suv_source"] == "DICOM headers" and "suv_source" not in results["stripped"]
    assert results["given"]["suv_source"] == f"DICOM headers + --suv-factors {table} (case given)"


@pytest.mark.parametrize("correction", ["START", "ADMIN"])
def test_suv_factors_fill_only_what_the_headers_lack(tmp_path, phantom, correction):
    """The usual anonymiser: only the weight removed. ``--suv-factors weight=..`` alone completes the
    headers (dose, half-life, times, decay correction as they say) to the full series' SUV within 1e-4."""
    from runner.case import read_pet
    from runner.suv import SuvTable

    acq = Acquisition(weight_kg=81.0, decay_correction=correction)
    write_dicom_study(phantom, tmp_path / "full", acq)
    write_dicom_study(phantom, tmp_path / "noweight", acq)
    _edit(tmp_path / "noweight", lambda ds, k: delattr(ds, "PatientWeight"))
    assert read_pet(tmp_path / "noweight").series.suv_missing == "missing PatientWeight"
    given = read_pet(tmp_path / "noweight", SuvTable.parse("weight=81").every)
    assert given.suv_origin == "DICOM headers + --suv-factors" and given.series.suv_missing is None
    np.testing.assert_allclose(sitk.GetArrayFromImage(given.image), sitk.GetArrayFromImage(suv_back(tmp_path / "full")),
                               rtol=1e-4, atol=1e-6)


def test_a_sidecar_that_cannot_give_suv_never_fails_the_case(tmp_path):
    """Units already SUV, counts, an unknown tracer, unreadable JSON: the image is read either way and
    the reason is the report's, not an error."""
    from runner.case import not_suv, read_pet

    image = sitk.GetImageFromArray(np.full((8, 8, 8), 3.0, np.float32))
    cases = {"gml": ({"Units": "g/ml"}, None), "counts": ({"Units": "counts"}, "Units 'counts'"),
             "tracer": ({"Units": "Bq/mL", "TracerRadionuclide": "Tb-152", "InjectedRadioactivity": 200,
                         "InjectionStart": 0, "ImageDecayCorrectionTime": 3600, "BodyWeight": 70},
                        "no half-life known for radionuclide 'Tb-152'"),
             "broken": ("{not json", "unreadable")}
    for name, (sidecar, reason) in cases.items():
        path = tmp_path / f"{name}.nii.gz"
        sitk.WriteImage(image, str(path))
        (tmp_path / f"{name}.json").write_text(sidecar if isinstance(sidecar, str) else json.dumps(sidecar))
        source = read_pet(path)
        assert sitk.GetArrayFromImage(source.image).mean() == pytest.approx(3.0)
        if reason is None:
            assert not_suv(source) is None and source.suv_origin.endswith("already SUV)")
        else:
            assert reason in not_suv(source), (name, not_suv(source))


def test_suv_from_a_bids_or_dcm2niix_sidecar_equals_the_dicom_route(tmp_path, phantom):
    """The same phantom's stored Bq/ml as a NIfTI with a JSON sidecar beside it: the BIDS-PET fields (dose,
    injection and decay-reference seconds, tracer) with the weight from --suv-factors (BIDS keeps it in
    participants.tsv), or dcm2niix's (dose, half-life, weight) with the times from --suv-factors, give the
    SUV the DICOM headers give, within 1e-4; without a sidecar the values are taken as given."""
    from runner.case import not_suv, read_pet
    from runner.suv import SuvFactors

    acq = Acquisition(weight_kg=68.0, dose_bq=2.9e8, scan_start=dt.datetime(2026, 3, 4, 10, 17, 40))
    write_dicom_study(phantom, tmp_path / "dicom", acq)
    suv = sitk.GetArrayFromImage(suv_back(tmp_path / "dicom"))
    raw = tmp_path / "raw"
    write_dicom_study(phantom, raw, acq)
    _edit(raw, lambda ds, k: delattr(ds, "Units"))
    stored = read_pet_series(pet_series(raw)).image  # the stored values (Bq/ml), as the scanner wrote them
    elapsed = (acq.scan_start - acq.injected).total_seconds()
    sidecars = {
        "bids": ({"Units": "Bq/mL", "TracerRadionuclide": "F18", "InjectedRadioactivity": acq.dose_bq / 1e6,
                  "InjectedRadioactivityUnits": "MBq", "TimeZero": "09:00:00", "InjectionStart": 0,
                  "ScanStart": elapsed, "ImageDecayCorrected": True, "ImageDecayCorrectionTime": elapsed},
                 SuvFactors(weight_kg=acq.weight_kg)),
        "dcm2niix": ({"Units": "BQML", "RadionuclideTotalDose": acq.dose_bq, "RadionuclideHalfLife": acq.half_life_s,
                      "PatientWeight": acq.weight_kg},
                     SuvFactors(injection=acq.injected.time().isoformat(), scan=acq.scan_start.time().isoformat())),
    }
    for name, (fields, given) in sidecars.items():
        image = tmp_path / name / "sub-01_pet.nii.gz"
        image.parent.mkdir()
        sitk.WriteImage(stored, str(image))
        (image.parent / "sub-01_pet.json").write_text(json.dumps(fields))
        source = read_pet(image, given)
        assert source.suv_origin == "sidecar sub-01_pet.json + --suv-factors" and not_suv(source) is None
        np.testing.assert_allclose(sitk.GetArrayFromImage(source.image), suv, rtol=1e-4, atol=1e-6)
        alone = read_pet(image)  # without the user's part, the sidecar falls short and says what is missing
        assert alone.suv_missing is not None and "sidecar sub-01_pet.json: no " in alone.suv_missing
        assert not_suv(alone) == alone.suv_missing
    plain = tmp_path / "plain.nii.gz"
    sitk.WriteImage(stored, str(plain))
    taken = read_pet(plain)
    assert taken.suv_origin is None and "Bq/ml?" in not_suv(taken)  # Bq/ml as given: flagged, not converted


def test_suv_factors_spec_parsing_against_a_direct_computation() -> None:
    from runner.suv import SuvTable

    factor = SuvTable.parse("weight=72, dose=9.46mCi, injection=10:02, scan=11:04:30").every.factor()
    direct = 72_000 / (9.46 * 3.7e7 * 0.5 ** (3750 / 6586.2))
    assert factor == pytest.approx(direct, rel=1e-12)
    assert SuvTable.parse("scale=5e-4").every.factor() == 5e-4
    partial = SuvTable.parse("weight=72,dose=3e8").every  # headers or a sidecar may complete it, per case
    with pytest.raises(InputError, match="no injection, scan"):
        partial.factor()
    assert SuvTable.parse("weight=70,dose=3e8,injection=2026-03-04T09:00,scan=10:00").every.factor() == \
        pytest.approx(70_000 / (3e8 * 0.5 ** (3600 / 6586.2)), rel=1e-12)  # a time on the date-time's day
    for bad, message in (("half_life=0", "half_life 0 s must be positive"), ("weight=72000,dose=3e8,injection=9:00,"
                         "scan=10:00", "implausible weight 72000 kg"), ("dose=3 furlongs", "dose '3 furlongs'"),
                         ("weight=70,dose=3e8,injection=11:00,scan=10:00", "injection after the scan start"),
                         ("colour=blue", "unknown field(s) colour")):
        with pytest.raises(InputError, match=re.escape(message)):
            SuvTable.parse(bad)


#: What highdicom 0.28 reads from a SEG's single-frame source images (grep of its seg/, base and
#: module code for attributes of the source datasets), plus the file's own identity.
SEG_SOURCE_ATTRIBUTES = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
    "StudyID", "AccessionNumber", "ReferringPhysicianName", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
    "FrameOfReferenceUID", "Modality", "Rows", "Columns", "PixelSpacing", "SliceThickness",
    "ImageOrientationPatient", "ImagePositionPatient", "SpecificCharacterSet", "Manufacturer",
    "ManufacturerModelName", "InstitutionName", "StationName", "SoftwareVersions", "DeviceSerialNumber",
    "AcquisitionDate", "AcquisitionTime", "LossyImageCompression",
)


def test_each_attribute_the_seg_reads_removed_in_turn_never_loses_the_mask(tmp_path, phantom):
    """Every attribute highdicom takes from the source, stripped from the whole series in turn: the PET
    is refused before any computing (one line naming it), or the mask comes out, as a SEG that highdicom
    parses back to the same voxels or, where the SEG cannot be made, as an .mha beside it with the reason."""
    from runner.formats import FORMATS, PetInput, write_mask

    study = tmp_path / "study"
    write_dicom_study(phantom, study)
    mask_array = (sitk.GetArrayFromImage(suv_back(study)) > 2.0).astype(np.uint8)
    outcomes = {}
    for keyword in SEG_SOURCE_ATTRIBUTES:
        folder = tmp_path / keyword
        shutil.copytree(study, folder)
        _edit(folder, lambda ds, k, key=keyword: delattr(ds, key) if key in ds else None)
        try:
            pet = read_pet_series(pet_series(folder))
        except InputError as exc:  # refused before the network ran: nothing computed, nothing lost
            assert "\n" not in str(exc) and keyword in str(exc)  # the case folder is added by the runner
            outcomes[keyword] = "refused"
            continue
        mask = sitk.GetImageFromArray(mask_array)
        mask.CopyInformation(pet.image)
        target = tmp_path / "out" / f"{keyword}.dcm"
        target.parent.mkdir(exist_ok=True)
        written, failure = write_mask(FORMATS["dicom-seg"], mask, PetInput(pet.image, pet), target)
        if failure is None:
            assert written == target and np.array_equal(read_seg_mask(target, pet), mask_array)
            outcomes[keyword] = "seg"
        else:
            assert written == target.with_suffix(".mha") and not target.exists() and "\n" not in failure
            assert failure.startswith(f"{target}: DICOM-SEG not written") and failure.endswith(f"{keyword}.mha")
            assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(written))), mask_array)
            outcomes[keyword] = "mha"
    # the anonymiser's usual victims (Type 2) give a SEG; a series without a study to refer to, an .mha
    assert all(outcomes[k] == "seg" for k in ("PatientBirthDate", "PatientSex", "StudyID", "ReferringPhysicianName",
                                              "AccessionNumber", "PatientName", "PatientID"))
    assert outcomes["StudyInstanceUID"] == "mha"
    assert set(outcomes.values()) <= {"seg", "mha", "refused"}


def test_a_seg_that_cannot_be_written_leaves_the_mask_as_mha_named_in_results(tmp_path, phantom):
    root = tmp_path / "input"
    write_dicom_study(phantom, root / "nostudy")
    _edit(root / "nostudy", lambda ds, k: delattr(ds, "StudyInstanceUID"))
    code = process.main(["--input", str(root), "--output", str(tmp_path / "out"), "--weights", str(HOTSPOT_WEIGHTS),
                         "--device", "cpu"])
    assert code == 0
    out = tmp_path / "out" / OUT_SUB
    assert not (out / "nostudy.dcm").exists() and sitk.ReadImage(str(out / "nostudy.mha")).GetSize() == \
        suv_back(root / "nostudy").GetSize()
    (entry,) = json.loads((tmp_path / "out" / "results.json").read_text())
    assert entry["outputs"] == [{"type": "metaio_image", "filename": "nostudy.mha"}]
    assert "StudyInstanceUID" in entry["dicom_seg_not_written"] and entry["error_messages"] == []
    # a rerun keeps the .mha (the same headers would fail the SEG again) instead of computing it anew
    before = (out / "nostudy.mha").stat().st_mtime_ns
    assert process.main(["--input", str(root), "--output", str(tmp_path / "out"), "--weights", str(HOTSPOT_WEIGHTS),
                         "--device", "cpu"]) == 0
    assert (out / "nostudy.mha").stat().st_mtime_ns == before and not (out / "nostudy.dcm").exists()
    (again,) = json.loads((tmp_path / "out" / "results.json").read_text())
    assert again["outputs"] == entry["outputs"] and "earlier run" in again["dicom_seg_not_written"]
    assert "inference" not in again


def test_a_multi_frame_pet_is_read_and_its_seg_refers_to_its_frames(tmp_path, phantom):
    """A Legacy Converted Enhanced PET (highdicom's conversion of the project's single-frame series, as a
    PACS makes them; geometry and rescale in the functional groups, the SUV headers among the converted
    attributes): read to the same SUV volume as the single-frame series, segmented to the same mask,
    and written back as a SEG that highdicom parses frame by frame onto the multi-frame source."""
    from highdicom.legacy import LegacyConvertedEnhancedPETImage

    root = tmp_path / "input"
    write_dicom_study(phantom, root / "single")
    slices = [pydicom.dcmread(p) for p in sorted((root / "single" / "PT").iterdir())]
    slices = slices[::2] + slices[1::2]  # frames out of z order: the reader sorts, the SEG maps back
    enhanced = LegacyConvertedEnhancedPETImage(slices, series_instance_uid=hd.UID(), series_number=2,
                                               sop_instance_uid=hd.UID(), instance_number=1)
    (root / "multi").mkdir()
    enhanced.save_as(root / "multi" / "pet.dcm")
    assert int(pydicom.dcmread(root / "multi" / "pet.dcm").NumberOfFrames) == len(slices)
    single, multi = (read_pet_series(pet_series(root / name)) for name in ("single", "multi"))
    assert multi.suv_missing is None and multi.image.GetSize() == single.image.GetSize()
    assert multi.image.GetOrigin() == pytest.approx(single.image.GetOrigin())
    assert multi.image.GetDirection() == pytest.approx(single.image.GetDirection())
    np.testing.assert_allclose(sitk.GetArrayFromImage(multi.image), sitk.GetArrayFromImage(single.image),
                               rtol=1e-6, atol=1e-6)
    code = process.main(["--input", str(root), "--output", str(tmp_path / "out"), "--weights", str(HOTSPOT_WEIGHTS),
                         "--device", "cpu"])
    assert code == 0
    masks = {name: read_seg_mask(tmp_path / "out" / OUT_SUB / f"{name}.dcm", pet)
             for name, pet in (("single", single), ("multi", multi))}
    assert masks["single"].any() and np.array_equal(masks["single"], masks["multi"])
    seg = hd.seg.segread(tmp_path / "out" / OUT_SUB / "multi.dcm")
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    assert referenced == enhanced.SOPInstanceUID


def test_the_lenient_header_reading_gives_what_is_left(tmp_path, phantom):
    """``header_suv_factors`` (for --suv-factors) reads the headers with ``suv_factor``'s readers but keeps
    what is there: complete START headers give the acquisition's own factor; ADMIN headers without the
    radiopharmaceutical give no decay and no dose, and the dose added completes the factor."""
    from runner.dicom import header_suv_factors, suv_factor
    from runner.suv import SuvFactors

    acq = Acquisition(weight_kg=61.0, dose_bq=2.9e8)
    write_dicom_study(phantom, tmp_path / "start", acq)
    series = pet_series(tmp_path / "start")
    slices = [pydicom.dcmread(p) for p in series.files]
    expected = 1.0 / acq.bqml_per_suv()  # the writer's own definition
    assert header_suv_factors(slices[0], slices, series).factor() == pytest.approx(expected, rel=1e-9)
    assert suv_factor(slices[0], slices, series) == pytest.approx(expected, rel=1e-9)

    write_dicom_study(phantom, tmp_path / "admin", Acquisition(decay_correction="ADMIN", weight_kg=61.0))
    _edit(tmp_path / "admin", lambda ds, k: delattr(ds, "RadiopharmaceuticalInformationSequence"))
    series = pet_series(tmp_path / "admin")
    slices = [pydicom.dcmread(p) for p in series.files]
    with pytest.raises(InputError, match="missing RadiopharmaceuticalInformationSequence"):
        suv_factor(slices[0], slices, series)
    partial = header_suv_factors(slices[0], slices, series)
    assert (partial.weight_kg, partial.dose_bq, partial.injection, partial.scan) == (61.0, None, 0.0, 0.0)
    with pytest.raises(InputError, match="no dose for the SUV"):
        partial.factor()
    assert partial.merged(SuvFactors(dose_bq=3.0e8)).factor() == pytest.approx(61.0 * 1000.0 / 3.0e8, rel=1e-12)
