"""Patient-level fold properties: no patient straddles folds, every case validated once, deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.cases import Case
from training.splits import SplitError, check_folds, extend_folds, load_splits, make_folds, save_splits


def _records(n_patients: int = 23) -> list[Case]:
    recs = []
    for p in range(n_patients):
        for s in range(1 + (p % 4 == 0) + (p % 7 == 0)):  # some patients have 2-3 studies
            recs.append(Case(f"P{p:03d}_{s}", Path(f"/x/P{p:03d}_{s}.nii.gz"), patient_id=f"P{p:03d}"))
    return recs


def test_patients_never_straddle_and_each_case_once() -> None:
    recs = _records()
    folds = make_folds(recs, n_folds=5, seed=0)
    check_folds(folds, recs)
    fold_of = {c: f["fold"] for f in folds for c in f["val"]}
    assert sorted(fold_of) == sorted(r.case_id for r in recs)
    for r in recs:
        sibling_folds = {fold_of[o.case_id] for o in recs if o.patient_id == r.patient_id}
        assert len(sibling_folds) == 1
    for f in folds:
        assert not set(f["train"]) & set(f["val"])
        assert len(f["train"]) + len(f["val"]) == len(recs)


def test_balanced_sizes_and_positive_balance() -> None:
    recs = _records(40)
    positive = {r.case_id: i % 2 == 0 for i, r in enumerate(recs)}
    folds = make_folds(recs, n_folds=5, seed=3, positive=positive)
    sizes = [len(f["val"]) for f in folds]
    assert max(sizes) - min(sizes) <= 1, sizes
    npos = [sum(positive[c] for c in f["val"]) for f in folds]
    assert max(npos) - min(npos) <= 3, npos


def test_deterministic_and_order_independent() -> None:
    recs = _records()
    a = make_folds(recs, seed=1)
    assert a == make_folds(list(reversed(recs)), seed=1)
    assert a != make_folds(recs, seed=2)


def test_save_load_round_trip(tmp_path: Path) -> None:
    folds = make_folds(_records(), seed=0)
    path = save_splits(folds, tmp_path / "splits.json")
    assert load_splits(path) == folds


def test_plain_ids_and_errors() -> None:
    folds = make_folds([f"c{i}" for i in range(10)], n_folds=5)
    assert all(len(f["val"]) == 2 for f in folds)
    with pytest.raises(ValueError, match="cannot fill"):
        make_folds(["a", "b"], n_folds=5)
    with pytest.raises(ValueError, match="duplicate"):
        make_folds(["a", "a", "b", "c", "d", "e"], n_folds=5)


def test_extend_keeps_old_folds_and_places_new_cases() -> None:
    """Growing the data must not move a case: warm-started networks trained on the old train sets."""
    old_recs = _records(23)
    old = make_folds(old_recs, n_folds=5, seed=0)
    new_recs = _records(48)  # patients 0-22 as before, 23-47 new
    new_recs.append(Case("P003_9", Path("/x/P003_9.nii.gz"), patient_id="P003"))  # a known patient's new study
    positive = {r.case_id: i % 3 == 0 for i, r in enumerate(new_recs)}
    grown = extend_folds(old, new_recs, seed=0, positive=positive)
    check_folds(grown, new_recs)
    old_fold = {c: f["fold"] for f in old for c in f["val"]}
    new_fold = {c: f["fold"] for f in grown for c in f["val"]}
    assert all(new_fold[c] == k for c, k in old_fold.items())
    assert new_fold["P003_9"] == old_fold["P003_0"]
    sizes = [len(f["val"]) for f in grown]
    assert max(sizes) - min(sizes) <= 2, sizes
    assert extend_folds(grown, new_recs) == grown  # nothing new: unchanged
    new_only = [c for f in grown for c in f["val"] if c not in old_fold]
    npos = [sum(positive[c] for c in f["val"] if c in new_only) for f in grown]
    old_npos = [sum(positive.get(c, False) for c in f["val"] if c in old_fold) for f in grown]
    totals = [a + b for a, b in zip(npos, old_npos, strict=True)]
    assert max(totals) - min(totals) <= 2, totals  # new positives evened out the folds


def test_extend_train_only_keeps_validation_sets_and_never_leaks() -> None:
    """Extra training data: every fold trains on the new patients and validates on what it did."""
    old_recs = _records(23)
    old = make_folds(old_recs, n_folds=5, seed=0)
    new_recs = [*_records(30), Case("P003_9", Path("/x/P003_9.nii.gz"), patient_id="P003")]
    grown = extend_folds(old, new_recs, train_only=True)
    check_folds(grown, new_recs)
    new_patients = {r.case_id for r in new_recs if int(r.patient_id[1:]) >= 23}
    old_val = {f["fold"]: f["val"] for f in old}
    for f in grown:
        expected = old_val[f["fold"]] + (["P003_9"] if "P003_0" in old_val[f["fold"]] else [])
        assert sorted(f["val"]) == sorted(expected)  # a known patient's new study still joins its fold
        assert new_patients <= set(f["train"])
        assert not set(f["train"]) & set(f["val"])
    # a later study of a train-only patient stays train-only; a plain extension leaves them alone too
    later = [*new_recs, Case("P025_5", Path("/x/P025_5.nii.gz"), patient_id="P025")]
    for train_only in (True, False):
        again = extend_folds(grown, later, train_only=train_only)
        assert all("P025_5" in f["train"] and "P025_5" not in f["val"] for f in again)
    # a file where a train-only patient also validates a fold is a leak
    leaky = [{**f, "val": [*f["val"], "P024_0"], "train": [c for c in f["train"] if c != "P024_0"]}
             if f["fold"] == 0 else f for f in grown]
    with pytest.raises(SplitError, match="straddles"):
        check_folds(leaky, new_recs)


def test_extend_keeps_fold_numbers_and_refuses_lost_cases() -> None:
    folds = make_folds([f"c{i}" for i in range(10)], n_folds=5)
    renumbered = [{**f, "fold": f["fold"] + 1} for f in folds]  # a file whose folds are 1..5
    grown = extend_folds(renumbered, [f"c{i}" for i in range(12)])
    assert [f["fold"] for f in grown] == [1, 2, 3, 4, 5]
    assert all(set(a["val"]) <= set(b["val"]) for a, b in zip(renumbered, grown, strict=True))
    with pytest.raises(SplitError, match="not in the data"):
        extend_folds(folds, [f"c{i}" for i in range(1, 12)])  # c0 vanished


def test_missing_folds_file_is_one_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SplitError, match="nope.json: cannot read"):
        load_splits(tmp_path / "nope.json")


def test_has_lesion_reads_the_label(tmp_path: Path) -> None:
    """Regression: a view of a temporary image read freed memory and called every label empty."""
    import numpy as np
    import SimpleITK as sitk

    from training.cli import has_lesion

    label = np.zeros((300, 400, 400), np.uint8)  # autoPET-sized: a small image's freed buffer still held it
    label[150, 200, 201] = 1
    sitk.WriteImage(sitk.GetImageFromArray(label), str(tmp_path / "SEG.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros_like(label)), str(tmp_path / "empty.nii.gz"))
    assert [has_lesion(tmp_path / "SEG.nii.gz") for _ in range(5)] == [True] * 5
    assert not has_lesion(tmp_path / "empty.nii.gz")
