"""Patient-level fold properties: no patient straddles folds, every case validated once, deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.layouts import CaseRecord
from training.splits import check_folds, load_splits, make_folds, save_splits


def _records(n_patients: int = 23) -> list[CaseRecord]:
    recs = []
    for p in range(n_patients):
        for s in range(1 + (p % 4 == 0) + (p % 7 == 0)):  # some patients have 2-3 studies
            recs.append(CaseRecord(f"P{p:03d}_{s}", f"P{p:03d}", Path(f"/x/P{p:03d}_{s}.nii.gz"), None, None))
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
