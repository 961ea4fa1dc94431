"""scripts/evaluate_heldout.py: two held-out sets side by side, through process.py and the challenge metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import evaluate_heldout
from tests.conftest import HOTSPOT_WEIGHTS
from training.layouts import read_tcia
from training.phantoms import main as phantoms_main

GRID = ["--shape", "24", "24", "28", "--spacing", "10", "10", "10", "--lesions", "yes"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("heldout")
    standard, shifted = root / "standard", root / "shifted"
    assert phantoms_main(["--out", str(standard), "--seeds", "50000-50001", *GRID]) == 0
    assert phantoms_main(["--out", str(shifted), "--seeds", "60000", "--ranges", "shifted", *GRID]) == 0
    return standard, shifted


def test_both_sets_scored_side_by_side_and_a_rescore_replaces_the_row(sets, tmp_path: Path, capsys) -> None:
    standard, shifted = sets
    table, scores = tmp_path / "results.md", tmp_path / "json"
    argv = ["--weights", str(HOTSPOT_WEIGHTS), "--sets", f"standard={standard}", f"shifted={shifted}",
            "--table", str(table), "--json-dir", str(scores)]
    assert evaluate_heldout.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| standard (2 cases, " in printed and "| shifted (1 cases, " in printed
    rows = [line for line in table.read_text().splitlines() if line.startswith("| `")]
    assert len(rows) == 1 and rows[0].count("|") == 8  # model + 2 sets x (Dice, FPV, FNV)
    # the row's Dice is the mean of the per-case Dice that evaluation wrote
    per_case = json.loads((scores / "standard.json").read_text())["cases"]
    assert set(per_case) == {f"{r.case_id}.nii.gz" for r in read_tcia(standard)}
    dices = [c["dice"] for c in per_case.values() if c["gt_ml"] > 0]
    assert rows[0].split(" | ")[1] == f"{sum(dices) / len(dices):.3f}"
    # a second model keeps the first row; scoring the first again replaces it; remarks under the table stay
    table.write_text(table.read_text() + "\nThe first row: measured on a given date, commit abc.\n")
    other = tmp_path / "other.pt"
    other.write_bytes(HOTSPOT_WEIGHTS.read_bytes())
    assert evaluate_heldout.main(["--weights", str(other), "--sets", f"standard={standard}",
                                  f"shifted={shifted}", "--table", str(table)]) == 0
    assert evaluate_heldout.main(argv[:-2]) == 0
    rows = [line for line in table.read_text().splitlines() if line.startswith("| `")]
    assert len(rows) == 2 and rows[0].startswith(f"| `{HOTSPOT_WEIGHTS}`")
    text = table.read_text()
    assert text.count("measured on a given date") == 1 and text.index(rows[1]) < text.index("measured on a given")
    with pytest.raises(SystemExit):  # another choice of sets would break the table's columns: refused first
        evaluate_heldout.main(["--weights", str(other), "--sets", f"standard={standard}", "--table", str(table)])
    assert "compares the sets ['standard', 'shifted']" in capsys.readouterr().err


def test_a_written_score_is_the_dice_of_the_predictors_mask(sets, tmp_path: Path) -> None:
    """Independent check of one case: the Dice counted with numpy on the ground truth and the
    Predictor's own mask (same weights, same crop) equals the one process.py + evaluation wrote."""
    import SimpleITK as sitk

    from model import Predictor

    standard, _ = sets
    record = next(r for r in read_tcia(standard) if sitk.GetArrayFromImage(sitk.ReadImage(str(r.label))).any())
    out = tmp_path / "json"
    assert evaluate_heldout.main(["--weights", str(HOTSPOT_WEIGHTS), "--sets", f"standard={standard}",
                                  "--json-dir", str(out), "--crop", "none"]) == 0
    written = json.loads((out / "standard.json").read_text())["cases"][f"{record.case_id}.nii.gz"]["dice"]
    mask = Predictor.from_weights(HOTSPOT_WEIGHTS, device="cpu", crop="none").predict(sitk.ReadImage(str(record.pet)))
    g = sitk.GetArrayFromImage(sitk.ReadImage(str(record.label))) > 0
    p = sitk.GetArrayFromImage(mask) > 0
    assert g.any()
    assert written == pytest.approx(2 * (g & p).sum() / (g.sum() + p.sum()), abs=1e-9)


def test_bad_sets_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="NAME=FOLDER"):
        evaluate_heldout.main(["--sets", "nofolder"])
    with pytest.raises(SystemExit, match="no such folder"):
        evaluate_heldout.main(["--sets", f"x={tmp_path / 'missing'}"])
