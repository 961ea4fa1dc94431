"""Layouts: round trips through every writer/reader, and loud errors that name the offending path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from common.cases import Case
from training.layouts import (
    LayoutError,
    check_pet_ct_arrays,
    load_arrays,
    read_challenge,
    read_layout,
    read_nnunet,
    read_tcia,
    validate_record,
    write_case,
    write_nnunet_dataset_json,
)
from training.phantoms import make_phantom

FLIP = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


@pytest.fixture(scope="module")
def phantoms() -> list:
    # small, one with flipped axes so orientation survives the file formats
    return [
        make_phantom(4, shape=(48, 40, 36), spacing=(8.0, 8.0, 10.0), lesions=True),
        make_phantom(5, shape=(48, 40, 36), spacing=(8.0, 8.0, 10.0), direction=FLIP, lesions=True),
    ]


def _same_image(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
    assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
    assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))


@pytest.mark.parametrize("layout", ["tcia", "nnunet", "gc"])
def test_round_trip(tmp_path: Path, phantoms: list, layout: str) -> None:
    written = [
        write_case(ph, tmp_path, layout, case_id=f"PAT{i}_0", patient_id=f"PAT{i}")
        for i, ph in enumerate(phantoms)
    ]
    if layout == "nnunet":
        write_nnunet_dataset_json(tmp_path)
    records = read_layout(tmp_path, layout)
    assert [r.case_id for r in records] == [w.case_id for w in written]
    for rec, w, ph in zip(records, written, phantoms, strict=True):
        assert rec.pet == w.pet and rec.ct == w.ct
        _same_image(sitk.ReadImage(str(rec.pet)), ph.pet)
        _same_image(sitk.ReadImage(str(rec.ct)), ph.ct)
        if layout == "gc":
            assert rec.label is None  # the challenge input has no labels ...
            _same_image(sitk.ReadImage(str(w.label)), ph.label)  # ... the writer keeps them aside
        else:
            assert rec.patient_id == w.patient_id
            _same_image(sitk.ReadImage(str(rec.label)), ph.label)
    arrays = load_arrays(records[0])
    assert arrays["pet"].dtype == np.float32


def test_tcia_study_folders_and_patients(tmp_path: Path, phantoms: list) -> None:
    write_case(
        phantoms[0], tmp_path, "tcia", case_id="PETCT_0a_01-01-2000-NA-PET-CT-1", patient_id="PETCT_0a"
    )
    write_case(
        phantoms[1], tmp_path, "tcia", case_id="PETCT_0a_05-07-2001-NA-PET-CT-2", patient_id="PETCT_0a"
    )
    (tmp_path / "PETCT_0a" / "05-07-2001-NA-PET-CT-2" / "PET.nii.gz").write_bytes(b"unused")
    recs = read_tcia(tmp_path)
    assert [r.patient_id for r in recs] == ["PETCT_0a", "PETCT_0a"]
    assert recs[1].pet.name == "SUV.nii.gz" and recs[1].ct.name == "CTres.nii.gz"


def test_nnunet_channel_orders_and_swap_detection(tmp_path: Path, phantoms: list) -> None:
    write_case(phantoms[0], tmp_path, "nnunet", case_id="PAT0_0", channel_order="pet_ct")
    recs = read_nnunet(tmp_path, channel_order="pet_ct")
    assert recs[0].pet.name == "PAT0_0_0000.nii.gz" and recs[0].patient_id == "PAT0"
    with pytest.raises(LayoutError, match="swapped") as err:
        read_nnunet(tmp_path, channel_order="ct_pet")  # wrong order: caught from the pixel values
    assert "PAT0_0_0001.nii.gz" in str(err.value)
    write_nnunet_dataset_json(tmp_path, channel_order="pet_ct")
    with pytest.raises(LayoutError, match="dataset.json"):
        read_nnunet(tmp_path, channel_order="ct_pet")
    recs = read_nnunet(tmp_path, channel_order="pet_ct", patient_of=lambda c: "everyone")
    assert recs[0].patient_id == "everyone"


def test_missing_files_are_named(tmp_path: Path, phantoms: list) -> None:
    rec = write_case(phantoms[0], tmp_path / "t", "tcia", case_id="PAT0_0")
    rec.ct.unlink()
    with pytest.raises(LayoutError, match=str(rec.ct)):
        read_tcia(tmp_path / "t")
    rec = write_case(phantoms[0], tmp_path / "n", "nnunet", case_id="PAT0_0")
    write_case(phantoms[1], tmp_path / "n", "nnunet", case_id="PAT1_0")
    missing = tmp_path / "n" / "labelsTr" / "PAT1_0.nii.gz"
    missing.unlink()
    with pytest.raises(LayoutError, match=str(missing)):
        read_nnunet(tmp_path / "n")
    (tmp_path / "n" / "imagesTr" / "PAT0_0_0001.nii.gz").unlink()
    with pytest.raises(LayoutError, match="PAT0_0_0001.nii.gz"):
        read_nnunet(tmp_path / "n")
    with pytest.raises(LayoutError, match="missing folder"):
        read_challenge(tmp_path / "nothing")


def test_mismatched_grids_are_named(tmp_path: Path, phantoms: list) -> None:
    rec = write_case(phantoms[0], tmp_path, "tcia", case_id="PAT0_0")
    other = make_phantom(4, shape=(48, 40, 30), spacing=(8.0, 8.0, 12.0))
    sitk.WriteImage(other.label, str(rec.label))
    with pytest.raises(LayoutError, match=f"{rec.label}.*label grid"):
        read_tcia(tmp_path)
    sitk.WriteImage(phantoms[0].label, str(rec.label))
    shifted = sitk.Image(phantoms[0].ct)
    shifted.SetOrigin(tuple(o + 5.0 for o in shifted.GetOrigin()))
    sitk.WriteImage(shifted, str(rec.ct))
    with pytest.raises(LayoutError, match=f"{rec.ct}.*CT grid"):
        validate_record(rec)


def test_challenge_pairing(tmp_path: Path, phantoms: list) -> None:
    root = tmp_path / "input"
    (root / "images" / "pet").mkdir(parents=True)
    (root / "images" / "ct").mkdir(parents=True)
    sitk.WriteImage(phantoms[0].pet, str(root / "images" / "pet" / "1b2c-pet-uuid.mha"))
    sitk.WriteImage(phantoms[0].ct, str(root / "images" / "ct" / "9f8e-ct-uuid.mha"))
    (rec,) = read_challenge(root)  # names differ, but exactly one of each: paired
    assert rec.pet.name == "1b2c-pet-uuid.mha" and rec.ct.name == "9f8e-ct-uuid.mha" and rec.label is None
    sitk.WriteImage(phantoms[1].pet, str(root / "images" / "pet" / "another.mha"))
    sitk.WriteImage(phantoms[1].ct, str(root / "images" / "ct" / "yet-another.mha"))
    with pytest.raises(LayoutError, match="cannot pair"):
        read_challenge(root)
    shutil.rmtree(root / "images" / "ct")
    with pytest.raises(LayoutError, match=str(root / "images" / "ct")):
        read_challenge(root)


def test_channel_check_on_arrays() -> None:
    ph = make_phantom(1, shape=(40, 40, 20), spacing=(10.0, 10.0, 10.0))
    pet, ct = sitk.GetArrayFromImage(ph.pet), sitk.GetArrayFromImage(ph.ct)
    check_pet_ct_arrays(pet, ct)
    with pytest.raises(LayoutError, match="swapped"):
        check_pet_ct_arrays(ct, pet, where="case X")
    with pytest.raises(LayoutError, match="does not look like a CT"):
        check_pet_ct_arrays(pet, pet)


def test_write_case_accepts_plain_images(tmp_path: Path, phantoms: list) -> None:
    ph = phantoms[0]
    rec = write_case((ph.pet, ph.ct), tmp_path, "tcia", case_id="P_1", patient_id="P")
    assert rec == Case("P_1", tmp_path / "P" / "1" / "SUV.nii.gz", tmp_path / "P" / "1" / "CTres.nii.gz",
                       patient_id="P")
    assert read_tcia(tmp_path)[0] == rec
    with pytest.raises(ValueError, match="layout"):
        write_case(ph, tmp_path, "dicom", case_id="x")


def test_training_cli_reports_bad_data_in_one_line(tmp_path: Path, phantoms: list, capsys) -> None:
    """Data that cannot be trained on ends `python -m training` with one error line and exit 2."""
    from training.cli import main

    for i, ph in enumerate(phantoms):  # two patients cannot fill five folds
        write_case(ph, tmp_path / "two", "tcia", case_id=f"PAT{i}_0", patient_id=f"PAT{i}")
    args = ["fit", "--layout", "tcia", "--preset", "tiny", "--fold", "0", "--out", str(tmp_path / "run")]
    code = main([*args, "--data", str(tmp_path / "two"), "--splits", str(tmp_path / "splits.json")])
    err = capsys.readouterr().err
    assert code == 2 and "2 patients cannot fill 5 folds" in err and "Traceback" not in err

    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "two", broken)
    victim = next(broken.rglob("CTres.nii.gz"))
    victim.write_bytes(b"not a NIfTI file")
    code = main([*args, "--data", str(broken), "--splits", str(tmp_path / "splits2.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "CTres.nii.gz" in err

    code = main(["splits", "--layout", "tcia", "--data", str(tmp_path / "two"), "--out", str(tmp_path / "s.json"),
                 "--train-only"])
    err = capsys.readouterr().err
    assert code == 2 and "--train-only" in err and "--extend" in err and not (tmp_path / "s.json").exists()
