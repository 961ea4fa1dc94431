"""autoPET metrics on hand-computed cases, and the folder CLI's pairing, errors and JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from common.atomic import dumps_json as dumps
from evaluation.cases import CaseError, pair_cases
from evaluation.cli import main
from evaluation.metrics import (
    CaseMetrics,
    GridMismatchError,
    aggregate,
    case_metrics,
    evaluate_images,
    voxel_volume_ml,
)

#: 10 mm isotropic voxels are exactly 1 ml, so volumes below read as voxel counts.
ML = (10.0, 10.0, 10.0)


def _mask(*voxels: tuple[int, int, int], shape: tuple[int, int, int] = (6, 6, 6)) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    for v in voxels:
        m[v] = 1
    return m


# ---------------------------------------------------------------- components and 18-connectivity


def test_edge_joined_prediction_is_one_component_so_no_false_positive() -> None:
    # (1,1,1) and (2,2,1) share only an edge: one component under 18-connectivity; it overlaps GT.
    gt = _mask((1, 1, 1))
    pred = _mask((1, 1, 1), (2, 2, 1))
    m = case_metrics(gt, pred, ML)
    assert m.n_pred_components == 1
    assert m.fpv_ml == 0.0
    assert m.fnv_ml == 0.0
    assert m.dice == pytest.approx(2 * 1 / (1 + 2))


def test_corner_joined_prediction_is_two_components_and_the_free_one_is_false_positive() -> None:
    # (1,1,1) and (2,2,2) share only a corner: two components under 18-connectivity.
    gt = _mask((1, 1, 1))
    pred = _mask((1, 1, 1), (2, 2, 2))
    m = case_metrics(gt, pred, ML)
    assert m.n_pred_components == 2
    assert m.n_fp_components == 1
    assert m.fpv_ml == pytest.approx(1.0)
    assert m.fnv_ml == 0.0
    assert m.dice == pytest.approx(2 / 3)


def test_ground_truth_components_follow_the_same_rule_for_false_negatives() -> None:
    pred = _mask((1, 1, 1))
    edge = case_metrics(_mask((1, 1, 1), (1, 2, 2)), pred, ML)  # edge-joined GT: one lesion, found
    corner = case_metrics(_mask((1, 1, 1), (2, 2, 2)), pred, ML)  # corner-joined GT: second lesion missed
    assert (edge.n_gt_components, edge.fnv_ml) == (1, 0.0)
    assert (corner.n_gt_components, corner.n_fn_components, corner.fnv_ml) == (2, 1, pytest.approx(1.0))


def test_adjacent_but_not_overlapping_counts_as_both_false_positive_and_false_negative() -> None:
    # Touching by a face is not overlap: FP/FN are defined by shared voxels.
    gt = _mask((1, 1, 1))
    pred = _mask((1, 1, 2))
    m = case_metrics(gt, pred, ML)
    assert m.dice == 0.0
    assert m.fpv_ml == pytest.approx(1.0)
    assert m.fnv_ml == pytest.approx(1.0)


def test_partly_overlapping_blob_counts_wholly_as_found() -> None:
    gt = np.zeros((8, 8, 8), np.uint8)
    gt[1:4, 1:4, 1:4] = 1  # 27 voxels
    pred = np.zeros_like(gt)
    pred[3:6, 3:6, 3:6] = 1  # 27 voxels, overlap at (3,3,3) only
    pred[7, 7, 7] = 1  # separate FP voxel
    m = case_metrics(gt, pred, ML)
    assert m.fpv_ml == pytest.approx(1.0)
    assert m.fnv_ml == 0.0
    assert m.dice == pytest.approx(2 * 1 / (27 + 28))
    assert (m.gt_ml, m.pred_ml) == (pytest.approx(27.0), pytest.approx(28.0))


def test_any_nonzero_label_is_lesion() -> None:
    m = case_metrics(_mask((1, 1, 1)) * 2, _mask((1, 1, 1)) * 255, ML)
    assert m.dice == 1.0


def _reference(gt: np.ndarray, pred: np.ndarray, voxel_ml: float) -> tuple[float, float, float]:
    """Slow, independent reading of the definitions: scipy labelling, one component at a time."""
    structure = ndimage.generate_binary_structure(3, 2)  # faces + edges = 18-connectivity
    g, p = gt > 0, pred > 0
    fp = fn = 0
    labels, n = ndimage.label(p, structure)
    for i in range(1, n + 1):
        comp = labels == i
        fp += comp.sum() if not (comp & g).any() else 0
    labels, n = ndimage.label(g, structure)
    for i in range(1, n + 1):
        comp = labels == i
        fn += comp.sum() if not (comp & p).any() else 0
    total = g.sum() + p.sum()
    dice = 2 * (g & p).sum() / total if total else math.nan
    return dice, fp * voxel_ml, fn * voxel_ml


@pytest.mark.parametrize("seed", range(5))
def test_matches_an_independent_reference_on_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gt = (rng.random((12, 14, 16)) > 0.93).astype(np.uint8)
    pred = (rng.random((12, 14, 16)) > 0.93).astype(np.uint8)
    pred[:6] |= gt[:6]  # some real hits, so both kinds of components occur
    spacing = (2.0, 2.5, 3.0)
    m = case_metrics(gt, pred, spacing)
    dice, fpv, fnv = _reference(gt, pred, voxel_volume_ml(spacing))
    assert (m.dice, m.fpv_ml, m.fnv_ml) == (pytest.approx(dice), pytest.approx(fpv), pytest.approx(fnv))
    assert 0 < m.fpv_ml < m.pred_ml and 0 < m.fnv_ml < m.gt_ml


# ---------------------------------------------------------------- empty masks


def test_both_empty_gives_nan_dice_and_zero_volumes() -> None:
    m = case_metrics(_mask(), _mask(), ML)
    assert math.isnan(m.dice)
    assert (m.fpv_ml, m.fnv_ml, m.has_lesion) == (0.0, 0.0, False)


def test_empty_ground_truth_with_prediction() -> None:
    m = case_metrics(_mask(), _mask((1, 1, 1), (4, 4, 4)), ML)
    assert m.dice == 0.0
    assert m.fpv_ml == pytest.approx(2.0)
    assert m.fnv_ml == 0.0
    assert not m.has_lesion


def test_empty_prediction_with_ground_truth() -> None:
    m = case_metrics(_mask((1, 1, 1), (1, 1, 2)), _mask(), ML)
    assert m.dice == 0.0
    assert m.fnv_ml == pytest.approx(2.0)
    assert m.fpv_ml == 0.0
    assert m.has_lesion


# ---------------------------------------------------------------- volumes and grids


def test_anisotropic_spacing_volume() -> None:
    assert voxel_volume_ml((2.0, 3.0, 4.0)) == pytest.approx(0.024)
    gt = np.zeros((4, 4, 4), np.uint8)
    gt[0, 0:2, 0:4] = 1  # 8 voxels
    m = case_metrics(gt, np.zeros_like(gt), (2.0, 3.0, 4.0))
    assert m.gt_ml == pytest.approx(8 * 0.024)
    assert m.fnv_ml == pytest.approx(8 * 0.024)


def _image(arr: np.ndarray, spacing=(2.0, 3.0, 4.0), origin=(0.0, 0.0, 0.0), direction=None) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def test_evaluate_images_uses_image_spacing() -> None:
    gt = _mask((1, 1, 1), (1, 1, 2))
    m = evaluate_images(_image(gt), _image(_mask((1, 1, 1))))
    assert m.gt_ml == pytest.approx(2 * 0.024)
    assert m.fnv_ml == 0.0
    assert m.dice == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"spacing": (2.0, 3.0, 4.5)}, "spacing"),
        ({"origin": (0.0, 5.0, 0.0)}, "origin"),
        ({"direction": (1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0)}, "direction"),
    ],
)
def test_grid_mismatch_names_what_differs(kwargs: dict, word: str) -> None:
    with pytest.raises(GridMismatchError, match=word):
        evaluate_images(_image(_mask((1, 1, 1))), _image(_mask((1, 1, 1)), **kwargs))


def test_size_mismatch_and_tiny_rounding() -> None:
    with pytest.raises(GridMismatchError, match="size"):
        evaluate_images(_image(_mask()), _image(_mask(shape=(6, 6, 7))))
    # float32 rounding in a writer must not count as another grid
    m = evaluate_images(_image(_mask((1, 1, 1))), _image(_mask((1, 1, 1)), origin=(1e-5, 0.0, -1e-5)))
    assert m.dice == 1.0


# ---------------------------------------------------------------- aggregate and JSON


def _cm(dice: float, fpv: float, fnv: float, has_lesion: bool, pred_ml: float = 0.0) -> CaseMetrics:
    return CaseMetrics(dice, fpv, fnv, 1.0 if has_lesion else 0.0, pred_ml, has_lesion)


def test_aggregate_by_hand() -> None:
    cases = [
        _cm(0.8, 1.0, 0.0, True, 2.0),
        _cm(0.4, 0.0, 3.0, True, 1.0),
        _cm(math.nan, 0.0, 0.0, False),  # true negative
        _cm(0.0, 5.0, 0.0, False, 5.0),  # lesion-free with a false positive
    ]
    agg = aggregate(cases)
    assert (agg.n_cases, agg.n_with_lesion, agg.n_without_lesion, agg.n_true_negative) == (4, 2, 2, 1)
    assert agg.mean_dice == pytest.approx(0.6)
    assert agg.leaderboard_dice == pytest.approx((0.8 + 0.4) / 4)
    assert agg.mean_fpv_ml == pytest.approx(6.0 / 4)
    assert agg.mean_fnv_ml == pytest.approx(3.0 / 2)


def test_aggregate_without_lesions_is_nan_not_an_error() -> None:
    agg = aggregate([_cm(math.nan, 0.0, 0.0, False)])
    assert math.isnan(agg.mean_dice) and math.isnan(agg.mean_fnv_ml)
    assert agg.leaderboard_dice == 0.0


def test_json_writes_nan_as_null() -> None:
    text = dumps({"a": math.nan, "b": [np.float32(1.5), float("inf")], "c": np.int64(3)})
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": 3}


# ---------------------------------------------------------------- folders and CLI


def _write(folder: Path, name: str, arr: np.ndarray, **kwargs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    sitk.WriteImage(_image(arr, **kwargs), str(path))
    return path


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _write(gt, "lesion.nii.gz", _mask((1, 1, 1), (2, 2, 2)))
    _write(pred, "lesion.mha", _mask((1, 1, 1), (4, 4, 4)))  # other extension pairs by stem
    _write(gt, "negative.nii.gz", _mask())
    _write(pred, "negative.nii.gz", _mask())
    (gt / "notes.txt").write_text("not an image")
    return gt, pred


def _strict_json(path: Path) -> dict:
    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def test_cli_writes_table_and_strict_json(folders: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    gt, pred = folders
    out = tmp_path / "res" / "metrics.json"
    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "lesion.nii.gz" in printed and "leaderboard" in printed
    report = _strict_json(out)
    assert set(report["cases"]) == {"lesion.nii.gz", "negative.nii.gz"}
    lesion = report["cases"]["lesion.nii.gz"]
    assert lesion["dice"] == pytest.approx(0.5)
    assert lesion["fpv_ml"] == pytest.approx(0.024)
    assert lesion["fnv_ml"] == pytest.approx(0.024)
    assert report["cases"]["negative.nii.gz"]["dice"] is None
    assert report["aggregate"]["mean_dice"] == pytest.approx(0.5)
    assert report["aggregate"]["leaderboard_dice"] == pytest.approx(0.25)


def test_cli_missing_prediction_names_the_file(folders: tuple[Path, Path], capsys) -> None:
    gt, pred = folders
    (pred / "negative.nii.gz").unlink()
    assert main(["--gt", str(gt), "--pred", str(pred), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "negative.nii.gz" in err and "missing" in err


def test_cli_grid_mismatch_names_the_file(folders: tuple[Path, Path], capsys) -> None:
    gt, pred = folders
    _write(pred, "negative.nii.gz", _mask(), spacing=(2.0, 2.0, 2.0))
    assert main(["--gt", str(gt), "--pred", str(pred), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "negative.nii.gz" in err and "spacing" in err


def test_cli_pictures_need_pet(folders: tuple[Path, Path], tmp_path: Path) -> None:
    gt, pred = folders
    with pytest.raises(SystemExit) as exc:
        main(["--gt", str(gt), "--pred", str(pred), "--pictures", str(tmp_path / "pics")])
    assert exc.value.code == 2


def test_pairing_prefers_same_name_and_reports_extras(tmp_path: Path) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _write(gt, "a.nii.gz", _mask())
    _write(pred, "a.nii.gz", _mask())
    _write(pred, "a.mha", _mask())
    _write(pred, "b.nii", _mask())
    pairs, extra = pair_cases(gt, pred)
    assert [(p.case_id, p.prediction.name) for p in pairs] == [("a.nii.gz", "a.nii.gz")]
    assert extra == ["b.nii"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaseError, match="no ground-truth images"):
        pair_cases(tmp_path / "empty", pred)
    with pytest.raises(CaseError, match="ground-truth folder is not a folder"):
        pair_cases(tmp_path / "nothing", pred)


def test_cli_pictures_one_png_per_case(folders: tuple[Path, Path], tmp_path: Path) -> None:
    gt, pred = folders
    pet = tmp_path / "pet"
    _write(pet, "lesion_0001.nii.gz", np.full((6, 6, 6), 2.0, np.float32))
    _write(pet, "negative_0001.mha", np.full((6, 6, 6), 2.0, np.float32))
    pics = tmp_path / "pics"
    args = ["--gt", str(gt), "--pred", str(pred), "--pet", str(pet), "--pictures", str(pics), "--quiet"]
    assert main([*args, "--pet-suffix", "_0001", "--no-progress"]) == 0
    assert sorted(p.name for p in pics.iterdir()) == ["lesion.png", "negative.png"]


def test_resolution_ceiling_is_exact_at_the_input_spacing_and_lower_when_coarser(tmp_path: Path) -> None:
    """scripts/resolution_ceiling.py: a label taken to its own grid and back is unchanged; to 3x coarser it loses
    boundary voxels (what a network reproducing labels at that spacing would lose)."""
    from scripts import resolution_ceiling as ceiling

    ball = (np.indices((40, 40, 30)) - np.array([20, 20, 15])[:, None, None, None]) ** 2
    gt = (ball.sum(0) <= 36).astype(np.uint8)  # radius 6 voxels
    label = sitk.GetImageFromArray(gt)
    label.SetSpacing((2.0, 2.0, 3.0))
    label.SetOrigin((-40.0, 12.5, 100.0))
    same = ceiling.round_trip(label, (2.0, 2.0, 3.0), sitk.sitkNearestNeighbor)
    assert np.array_equal(same, gt.astype(bool))
    coarse = ceiling.round_trip(label, (6.0, 6.0, 6.0), sitk.sitkNearestNeighbor)
    dice = 2 * (coarse & (gt > 0)).sum() / (coarse.sum() + gt.sum())
    assert 0.5 < dice < 0.99


def test_one_dice_for_every_caller():
    """common.masks.dice: the challenge's NaN for two empty masks by default, 1.0 where asked."""
    import math

    from common.masks import dice
    from evaluation.metrics import dice as metrics_dice

    assert metrics_dice is dice
    a = np.zeros((4, 4, 4), np.uint8)
    b = a.copy()
    a[0, :2] = 1
    b[0, 1:3] = 1
    assert dice(a, b) == 2 * 4 / (8 + 8)
    assert math.isnan(dice(a * 0, b * 0)) and dice(a * 0, b * 0, both_empty=1.0) == 1.0
