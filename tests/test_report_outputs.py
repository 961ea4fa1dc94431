"""process.py --report --save-votes --save-probabilities, and python -m evaluation.report: the files a
clinician or a trial reads, beside the challenge's output and never inside it."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

import process
from evaluation import report as report_cli
from lesion_report.lesions import measure_lesions
from tests.conftest import HOTSPOT_WEIGHTS, same_grid_exactly
from tests.test_process import OUT_SUB, make_input


@pytest.fixture(scope="module")
def three_networks(tmp_path_factory) -> Path:
    """An ensemble of three copies of the tiny network: every vote is 0 or 3."""
    folder = tmp_path_factory.mktemp("weights")
    for k in range(3):
        shutil.copy(HOTSPOT_WEIGHTS, folder / f"{k}.pt")
    return folder


def run(tmp_path: Path, weights: Path, *extra: str) -> int:
    return process.main(["--input", str(tmp_path / "input"), "--output", str(tmp_path / "output"),
                         "--weights", str(weights), "--device", "cpu", "--time-budget", "0", *extra])


def components(mask: np.ndarray) -> int:
    return ndimage.label(mask > 0, structure=ndimage.generate_binary_structure(3, 2))[1]


def test_report_votes_and_probabilities_beside_the_challenge_output(tmp_path, three_networks, caplog):
    make_input(tmp_path / "input", names=("case_a",))
    (tmp_path / "input/images/pet/broken.mha").write_bytes(b"not an image")
    caplog.set_level(logging.INFO)

    assert run(tmp_path, three_networks, "--report", "--save-votes", "--save-probabilities") == 1
    out = tmp_path / "output"
    assert sorted(p.name for p in (out / OUT_SUB).iterdir()) == ["case_a.mha"]  # the challenge's folder: masks only
    pet = sitk.ReadImage(str(tmp_path / "input/images/pet/case_a.mha"))
    mask = sitk.ReadImage(str(out / OUT_SUB / "case_a.mha"))
    votes = sitk.ReadImage(str(out / "votes/case_a.mha"))
    probability = sitk.ReadImage(str(out / "probabilities/case_a.mha"))
    for image, pixel in ((votes, sitk.sitkUInt8), (probability, sitk.sitkFloat32)):
        assert same_grid_exactly(image, pet) and image.GetPixelID() == pixel
    m, v, p = (sitk.GetArrayFromImage(i) for i in (mask, votes, probability))
    assert m.any() and set(np.unique(v)) == {0, 3}
    np.testing.assert_array_equal(v * 2 > 3, m > 0)
    np.testing.assert_array_equal(p > 0.5, m > 0)  # identical networks: mean probability = each one's
    assert votes.GetMetaData("networks") == "3"

    folder = out / "lesion-report"
    data = json.loads((folder / "case_a.json").read_text())
    assert data["summary"]["lesions"] == components(m) >= 1
    assert data["networks"] == 3 and all(lesion["vote_share"] == 1.0 for lesion in data["lesions"])
    assert data["summary"]["tmtv_ml"] == pytest.approx(m.sum() * np.prod(pet.GetSpacing()) / 1000)
    assert (folder / "case_a.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((folder / "lesions.csv").open()))
    assert len(rows) == data["summary"]["lesions"] and {r["case"] for r in rows} == {"case_a"}
    assert [r["case"] for r in csv.DictReader((folder / "cases.csv").open())] == ["case_a"]
    page = (folder / "index.html").read_text()
    assert "data:image/png;base64," in page and "broken" in page and "class='err'" in page
    results = {r["inputs"][0]["filename"]: r for r in json.loads((out / "results.json").read_text())}
    assert results["case_a.mha"]["lesion_report"] == data["summary"]

    # a rerun with the report removed makes it from the files, without inference
    (folder / "case_a.json").unlink()
    (folder / "case_a.png").unlink()
    caplog.clear()
    assert run(tmp_path, three_networks, "--report", "--save-votes", "--save-probabilities") == 1
    assert "lesion report made from it" in caplog.text and "windows" not in caplog.text
    assert json.loads((folder / "case_a.json").read_text())["lesions"] == data["lesions"]

    # a missing vote map cannot be made without inference: the case is recomputed
    (out / "votes/case_a.mha").unlink()
    caplog.clear()
    assert run(tmp_path, three_networks, "--report", "--save-votes") == 1
    assert "recomputing" in caplog.text and (out / "votes/case_a.mha").exists()


def test_report_of_any_mask_from_the_command_line(tmp_path, capsys):
    pets, masks = tmp_path / "pet", tmp_path / "labels"
    make_input(tmp_path / "in", names=("a", "b"), ct=False)
    shutil.copytree(tmp_path / "in/images/pet", pets)
    masks.mkdir()
    pet = sitk.ReadImage(str(pets / "a.mha"))
    label = sitk.Cast(pet > 3.0, sitk.sitkUInt8)  # the hot ball as a ground-truth-like label
    sitk.WriteImage(label, str(masks / "a.mha"))

    assert report_cli.main(["--pet", str(pets), "--mask", str(masks), "--out", str(tmp_path / "stats")]) == 1
    assert "b.mha: no mask of that name" in capsys.readouterr().err
    data = json.loads((tmp_path / "stats/a.json").read_text())
    expected = measure_lesions(pet, label)
    assert data["summary"]["lesions"] == expected.summary.lesions >= 1
    assert data["summary"]["tmtv_ml"] == pytest.approx(expected.summary.tmtv_ml)
    assert (tmp_path / "stats/index.html").exists() and (tmp_path / "stats/lesions.csv").exists()

    assert report_cli.main(["--pet", str(pets / "a.mha"), "--mask", str(masks / "a.mha"),
                            "--out", str(tmp_path / "one.json")]) == 0
    assert json.loads((tmp_path / "one.json").read_text())["lesions"] == data["lesions"]
    assert report_cli.main(["--pet", str(pets / "b.mha"), "--mask", str(masks / "a.mha"),
                            "--out", str(tmp_path / "x.json")]) == 0  # same grid: b's PET, a's label
    off_grid = sitk.Resample(label, [s // 2 for s in label.GetSize()], sitk.Transform(), sitk.sitkNearestNeighbor,
                             label.GetOrigin(), [2 * s for s in label.GetSpacing()], label.GetDirection())
    sitk.WriteImage(off_grid, str(tmp_path / "off.mha"))
    assert report_cli.main(["--pet", str(pets / "a.mha"), "--mask", str(tmp_path / "off.mha"),
                            "--out", str(tmp_path / "y.json")]) == 1
    assert "off.mha: mask is not on the PET's grid" in capsys.readouterr().err


def test_a_pet_in_bq_per_ml_is_segmented_and_flagged_not_suv(tmp_path, caplog):
    """An .mha in Bq/ml where the challenge expects SUV: the mask is the SUV one's (the percentile
    scaling is scale-free), the log and results.json say the values are not SUV, and the report leaves
    the SUV quantities empty rather than print Bq/ml as SUV."""
    import json
    import logging

    import numpy as np
    import SimpleITK as sitk

    import process
    from tests.conftest import body_with_lesion

    pet, _ = body_with_lesion(size=(48, 44, 56))
    for name, image in (("suv", pet), ("bqml", pet * 5000.0)):
        (tmp_path / name / "images/pet").mkdir(parents=True)
        sitk.WriteImage(image, str(tmp_path / name / "images/pet/case.mha"))
    caplog.set_level(logging.WARNING)
    for name in ("suv", "bqml"):
        assert process.main(["--input", str(tmp_path / name), "--output", str(tmp_path / f"out-{name}"), "--weights",
                             str(HOTSPOT_WEIGHTS), "--device", "cpu", "--report"]) == 0
    masks = {name: sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"out-{name}" / OUT_SUB / "case.mha")))
             for name in ("suv", "bqml")}
    assert masks["suv"].any() and np.array_equal(masks["suv"], masks["bqml"])
    results = {name: json.loads((tmp_path / f"out-{name}/results.json").read_text())[0] for name in ("suv", "bqml")}
    assert "values_not_suv" not in results["suv"] and "Bq/ml?" in results["bqml"]["values_not_suv"]
    reports = {name: json.loads((tmp_path / f"out-{name}/lesion-report/case.json").read_text())
               for name in ("suv", "bqml")}
    assert reports["suv"]["summary"]["suv_max"] > 0 and reports["bqml"]["summary"]["suv_max"] is None
    assert reports["bqml"]["summary"]["tmtv_ml"] == reports["suv"]["summary"]["tmtv_ml"]
    assert sum("values are not SUV" in r.getMessage() for r in caplog.records) == 1
