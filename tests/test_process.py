"""process.py as users and the platform run it: folders in, masks out, clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import process
from runner.algorithm import build_algorithm
from tests.conftest import HOTSPOT_WEIGHTS, ROOT, body_with_lesion

OUT_SUB = Path("images/automated-petct-lesion-segmentation")


def make_input(root: Path, names=("case_a",), ct=True, size=(48, 44, 56)) -> Path:
    (root / "images/pet").mkdir(parents=True, exist_ok=True)
    (root / "images/ct").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        pet, _ = body_with_lesion(size=size, seed=i)
        sitk.WriteImage(pet, str(root / "images/pet" / f"{name}.mha"))
        if ct:
            ct_img = sitk.Cast(pet * 0 - 1000, sitk.sitkInt16)
            sitk.WriteImage(ct_img, str(root / "images/ct" / f"ct_{name}.mha"))
    return root


def run(tmp_path: Path, *extra: str, input_root: Path | None = None) -> int:
    argv = ["--input", str(input_root or tmp_path / "input"), "--output", str(tmp_path / "output"),
            "--weights", str(HOTSPOT_WEIGHTS), "--device", "cpu", *extra]
    return process.main(argv)


def test_single_case_with_ct_of_another_uuid(tmp_path, caplog):
    make_input(tmp_path / "input")
    assert run(tmp_path) == 0
    mask_path = tmp_path / "output" / OUT_SUB / "case_a.mha"
    mask = sitk.ReadImage(str(mask_path))
    pet = sitk.ReadImage(str(tmp_path / "input/images/pet/case_a.mha"))
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSize() == pet.GetSize() and mask.GetOrigin() == pet.GetOrigin()
    assert mask.GetSpacing() == pet.GetSpacing() and mask.GetDirection() == pet.GetDirection()
    assert sitk.GetArrayViewFromImage(mask).max() == 1
    results = json.loads((tmp_path / "output/results.json").read_text())
    assert results[0]["outputs"][0]["filename"] == "case_a.mha"
    assert not list((tmp_path / "output" / OUT_SUB).glob(".*"))  # no temp files left


def test_many_cases_one_broken(tmp_path, capsys):
    root = make_input(tmp_path / "input", names=("a", "b", "c"), ct=False)
    (root / "images/pet/b.mha").write_bytes(b"ObjectType = Image\nNDims = 3\n garbage")
    code = run(tmp_path)
    assert code == 1
    written = sorted(p.name for p in (tmp_path / "output" / OUT_SUB).iterdir())
    assert written == ["a.mha", "c.mha"]
    results = json.loads((tmp_path / "output/results.json").read_text())
    assert any("b.mha" in m for r in results for m in r["error_messages"])


def test_rerun_skips_done_cases_unless_overwrite(tmp_path, caplog):
    make_input(tmp_path / "input", names=("a",), ct=False)
    assert run(tmp_path) == 0
    mask_path = tmp_path / "output" / OUT_SUB / "a.mha"
    done = sitk.ReadImage(str(mask_path))
    marker = sitk.Cast(done * 0 + 1, sitk.sitkUInt8)  # a valid mask that process.py would never write
    sitk.WriteImage(marker, str(mask_path), True)
    assert run(tmp_path) == 0
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))).min() == 1  # skipped
    assert run(tmp_path, "--overwrite") == 0
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))).min() == 0  # recomputed


@pytest.mark.parametrize("problem", ["no-input", "no-pet-dir", "empty-pet-dir", "output-is-file", "bad-weights"])
def test_run_that_cannot_start_exits_2_with_one_line(tmp_path, capsys, problem):
    root = tmp_path / "input"
    extra: list[str] = []
    if problem != "no-input":
        root.mkdir()
    if problem in ("empty-pet-dir", "output-is-file", "bad-weights"):
        (root / "images/pet").mkdir(parents=True)
    if problem in ("output-is-file", "bad-weights"):
        make_input(root, ct=False)
    if problem == "output-is-file":
        (tmp_path / "output").write_text("not a folder")
    if problem == "bad-weights":
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"\x00" * 100)
        extra = ["--weights", str(bad)]
    argv = ["--input", str(root), "--output", str(tmp_path / "output"), "--weights", str(HOTSPOT_WEIGHTS),
            "--device", "cpu", *extra]
    assert process.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "Traceback" not in err[0]
    expected = {"no-input": "input", "no-pet-dir": "images/pet", "empty-pet-dir": "no PET images",
                "output-is-file": "output", "bad-weights": "bad.pt"}[problem]
    assert expected in err[0]


def _write(array: np.ndarray, path: Path, is_vector: bool = False) -> None:
    image = sitk.GetImageFromArray(array, isVector=is_vector)
    sitk.WriteImage(image, str(path))


@pytest.mark.parametrize("kind", ["2d", "4d", "vector", "truncated"])
def test_unusable_pet_is_named(tmp_path, kind):
    root = make_input(tmp_path / "input", names=("good",), ct=False)
    bad = root / "images/pet/bad.mha"
    if kind == "2d":
        _write(np.ones((20, 20), np.float32), bad)
    elif kind == "4d":
        _write(np.ones((3, 20, 20, 20), np.float32), bad)
    elif kind == "vector":
        _write(np.ones((20, 20, 20, 3), np.float32), bad, is_vector=True)
    else:
        sitk.WriteImage(sitk.GetImageFromArray(np.ones((40, 40, 40), np.float32)), str(bad), False)
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    assert run(tmp_path) == 1
    results = json.loads((tmp_path / "output/results.json").read_text())
    messages = [m for r in results for m in r["error_messages"]]
    assert len(messages) == 1 and "bad.mha" in messages[0]
    expected = {"2d": "3D", "4d": "3D", "vector": "one value per voxel", "truncated": "truncated"}[kind]
    assert expected in messages[0]
    assert (tmp_path / "output" / OUT_SUB / "good.mha").exists()
    assert not (tmp_path / "output" / OUT_SUB / "bad.mha").exists()


def test_ct_on_another_grid_warns_and_nan_pet_still_segments(tmp_path, caplog):
    root = make_input(tmp_path / "input", names=("a",), ct=False)
    pet = sitk.ReadImage(str(root / "images/pet/a.mha"))
    arr = sitk.GetArrayFromImage(pet)
    arr[0, 0, :4] = np.nan
    nan_pet = sitk.GetImageFromArray(arr)
    nan_pet.CopyInformation(pet)
    sitk.WriteImage(nan_pet, str(root / "images/pet/a.mha"))
    small_ct = sitk.Image([10, 10, 10], sitk.sitkInt16)
    sitk.WriteImage(small_ct, str(root / "images/ct/other.mha"))
    with caplog.at_level("WARNING"):
        assert run(tmp_path) == 0
    text = caplog.text
    assert "not on the PET's grid" in text and "other.mha" in text
    assert "4 NaN/Inf voxel(s)" in text
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "output" / OUT_SUB / "a.mha")))
    assert mask.max() == 1 and not np.isnan(mask).any()


def test_cli_subprocess_help_and_exit_code(tmp_path):
    env_python = sys.executable
    help_out = subprocess.run([env_python, "process.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert help_out.returncode == 0 and "--weights" in help_out.stdout and "--overwrite" in help_out.stdout
    missing = subprocess.run([env_python, "process.py", "--input", str(tmp_path / "nope"), "--output",
                              str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in missing.stderr


def test_vote_option_reaches_the_predictor(tmp_path):
    args = process.build_parser().parse_args([
        "--vote", "soft", "--weights", str(HOTSPOT_WEIGHTS), "--device", "cpu",
        "--input", str(make_input(tmp_path / "input", ct=False)), "--output", str(tmp_path / "output")])
    algorithm = build_algorithm(args)
    assert algorithm.run.predictor.config.vote == "soft"


def test_time_budget_is_kept_and_recorded(tmp_path, caplog):
    """Three networks and a budget nothing fits in: the first network alone votes, and results.json says so."""
    import shutil

    make_input(tmp_path / "input", names=("a",), ct=False)
    weights = tmp_path / "three"
    weights.mkdir()
    for k in range(3):
        shutil.copy(HOTSPOT_WEIGHTS, weights / f"{k}.pt")
    assert run(tmp_path, "--weights", str(weights), "--time-budget", "0.000001") == 0
    results = json.loads((tmp_path / "output/results.json").read_text())
    record = results[0]["inference"]
    assert record["crop"] == "exact" and record["time_budget"]["networks_run"] == 1
    assert [s["networks"] for s in record["steps"]] == [[0]]
    assert "time budget" in caplog.text and "only 1 of 3 networks vote" in caplog.text
    rushed = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "output" / OUT_SUB / "a.mha")))

    single_out = tmp_path / "single"
    assert process.main(["--input", str(tmp_path / "input"), "--output", str(single_out), "--weights",
                         str(HOTSPOT_WEIGHTS), "--device", "cpu"]) == 0
    single = sitk.GetArrayFromImage(sitk.ReadImage(str(single_out / OUT_SUB / "a.mha")))
    assert rushed.max() == 1 and np.array_equal(rushed, single)


def test_bad_tta_axes_stop_the_run_with_one_line(tmp_path, capsys):
    make_input(tmp_path / "input", names=("a",), ct=False)
    assert run(tmp_path, "--tta", "05") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --tta takes axes among 0, 1, 2 (e.g. 012), got '05'"]


def _interface(slug: str, relative_path: str, kind: str = "Image") -> dict:
    """An entry of Grand-Challenge's /input/inputs.json (the fields this project reads, and a few others)."""
    return {"interface": {"title": slug.replace("-", " "), "slug": slug, "kind": kind,
                          "relative_path": relative_path, "super_kind": kind}, "value": None, "file": None}


def test_inputs_json_names_the_pet_and_ct_folders(tmp_path, caplog):
    """A phase whose interfaces live elsewhere than images/pet: the PET is found through its slug."""
    import logging

    root = tmp_path / "input"
    make_input(root, names=("a",))
    (root / "images/pet").rename(root / "images/pet-scan")
    (root / "images/ct").rename(root / "images/ct-scan")
    (root / "inputs.json").write_text(json.dumps([
        _interface("clinical-information", "clinical-information.json", kind="Anything"),
        _interface("ct-scan", "images/ct-scan"),
        _interface("pet-scan", "images/pet-scan"),
    ]))
    with caplog.at_level(logging.INFO):
        assert run(tmp_path) == 0
    assert (tmp_path / "output" / OUT_SUB / "a.mha").is_file()
    assert "inputs found through" in caplog.text and "inputs.json" in caplog.text
    assert "images/pet-scan" in caplog.text and "images/ct-scan" in caplog.text


def test_inputs_json_without_a_pet_stops_with_the_slugs_it_found(tmp_path, capsys):
    root = make_input(tmp_path / "input", names=("a",))
    (root / "inputs.json").write_text(json.dumps([_interface("ct-image", "images/ct"),
                                                  _interface("age-in-years", "age.json", kind="Integer")]))
    assert run(tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {root / 'inputs.json'}: no PET image among the inputs (slugs: ct-image, age-in-years)"]
    assert not (tmp_path / "output" / OUT_SUB / "a.mha").exists()


def test_autopet_inputs_json_and_another_output_slug(tmp_path):
    """autoPET's own interfaces (images/pet, images/ct) through inputs.json, the mask under autoPET IV's slug."""
    root = make_input(tmp_path / "input", names=("a",))
    (root / "inputs.json").write_text(json.dumps([_interface("positron-emission-tomography-pet", "images/pet"),
                                                  _interface("computed-tomography-ct", "images/ct")]))
    assert run(tmp_path, "--output-slug", "tumor-lesion-segmentation") == 0
    assert (tmp_path / "output/images/tumor-lesion-segmentation/a.mha").is_file()
    assert not (tmp_path / "output" / OUT_SUB).exists()
    assert run(tmp_path, "--output-slug", "Bad_Slug") == 2
