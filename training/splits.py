"""Patient-level, deterministic k-fold cross-validation splits, stored as JSON.

Why patient level: autoPET has several studies of some patients; a patient in both train and val
leaks anatomy and lesions into validation and inflates Dice. Folds are balanced in size and, when
lesion information is given, in lesion-positive / lesion-free studies.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import write_text_atomic


class SplitError(ValueError):
    """A folds file or a dataset that cannot be split as asked (a user's input, not a bug)."""


def _case_and_patient(rec: Any) -> tuple[str, str]:
    if isinstance(rec, Mapping):
        return str(rec["case_id"]), str(rec.get("patient_id", rec["case_id"]))
    if isinstance(rec, str):
        return rec, rec
    return str(rec.case_id), str(getattr(rec, "patient_id", rec.case_id))


def make_folds(
    records: Sequence[Any], n_folds: int = 5, seed: int = 0, positive: Mapping[str, bool] | None = None
) -> list[dict[str, Any]]:
    """Split studies into n_folds by patient.

    records: cases (``common.cases.Case``), dicts with case_id/patient_id, or plain case-id strings (one patient each).
    positive: optional case_id -> has-lesion; used to spread positive studies evenly over the folds.
    Greedy assignment of shuffled patients (largest first) to the emptiest fold keeps the sizes within
    one study of each other whenever the patients allow it; the result depends only on the set of
    records and the seed, not on their order.
    """
    if n_folds < 2:
        raise SplitError("n_folds must be >= 2")
    by_patient = _by_patient(records)
    if len(by_patient) < n_folds:
        raise SplitError(f"{len(by_patient)} patients cannot fill {n_folds} folds")
    order = _placement_order(by_patient, seed)
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    _place(order, by_patient, folds, positive or {}, [0] * n_folds)
    return _as_folds(folds, sorted(c for cases in by_patient.values() for c in cases))


def authors_folds(records: Sequence[Any], n_folds: int = 5) -> list[dict[str, Any]]:
    """The authors' split (their ``scripts/split_data.py``): the patient folders in order, cut into
    consecutive blocks of ceil(patients / n_folds); fold k validates on block k, trains on the rest.

    Their script takes the folders in ``os.scandir`` order, which depends on the file system; here
    they are sorted, so the same data gives the same folds on every machine. Where the ceiling leaves
    fewer than ``n_folds`` blocks (e.g. 11 patients: blocks of 3, 3, 3, 2) their script fails on the
    missing block; so does this, in one line. Lesion-positive studies are not balanced over folds.
    """
    if n_folds < 2:
        raise SplitError("n_folds must be >= 2")
    by_patient = _by_patient(records)
    patients = sorted(by_patient)
    size = -(-len(patients) // n_folds)
    blocks = [patients[i:i + size] for i in range(0, len(patients), size)]
    if len(blocks) < n_folds:
        raise SplitError(f"{len(patients)} patients in blocks of ceil({len(patients)}/{n_folds}) = {size} make "
                         f"{len(blocks)} blocks, not {n_folds} (the authors' split needs them all)")
    folds = [[c for p in block for c in by_patient[p]] for block in blocks]
    return _as_folds(folds, sorted(c for cases in by_patient.values() for c in cases))


SPLIT_METHODS = ("balanced", "authors")

#: The ensemble member trained on every case of the folds file, without validation (the authors'
#: fifth network, their best single one, beside four cross-validation folds).
ALL_DATA = "all"


def member_name(fold: int | str) -> str:
    """The run folder and exported file name of a member: ``fold<k>`` or ``all``."""
    return ALL_DATA if fold == ALL_DATA else f"fold{int(fold)}"


def parse_members(text: str) -> list[int | str]:
    """"0,2,3,4,all" -> [0, 2, 3, 4, "all"]."""
    out: list[int | str] = []
    for value in (v.strip() for v in text.split(",")):
        if value:
            out.append(ALL_DATA if value == ALL_DATA else int(value))
    return out


def _by_patient(records: Sequence[Any]) -> dict[str, list[str]]:
    """Patient id -> its case ids (sorted); a case id given twice is an error."""
    by_patient: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for rec in records:
        case, patient = _case_and_patient(rec)
        if case in seen:
            raise SplitError(f"duplicate case id {case!r}")
        seen.add(case)
        by_patient[patient].append(case)
    return {p: sorted(by_patient[p]) for p in sorted(by_patient)}


def _placement_order(by_patient: Mapping[str, list[str]], seed: int) -> list[str]:
    """Patients shuffled by seed, then (stable) bigger patients first: they are the hardest to place."""
    patients = sorted(by_patient)
    rng = np.random.default_rng(seed)
    order = [patients[i] for i in rng.permutation(len(patients))]
    order.sort(key=lambda p: -len(by_patient[p]))
    return order


def _place(order: Sequence[str], by_patient: Mapping[str, list[str]], folds: list[list[str]],
           positive: Mapping[str, bool], npos: list[int]) -> None:
    """Greedy: each patient (in order) into the emptiest fold, ties to the fold with fewest positives."""
    for p in order:
        cases = by_patient[p]
        k_pos = sum(bool(positive.get(c, False)) for c in cases)
        k = min(range(len(folds)), key=lambda f: (len(folds[f]), npos[f] if k_pos else -npos[f], f))
        folds[k].extend(cases)
        npos[k] += k_pos


def _as_folds(folds: Sequence[Sequence[str]], all_cases: Sequence[str],
              numbers: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """{fold, train, val} per validation set; fold numbers 0.. unless given."""
    out = []
    for k, fold in enumerate(folds):
        val = sorted(fold)
        vset = set(val)
        number = k if numbers is None else int(numbers[k])
        out.append({"fold": number, "train": [c for c in all_cases if c not in vset], "val": val})
    return out


def cases_of(folds: Sequence[Mapping[str, Any]]) -> set[str]:
    """Every case a folds file names, in a training or a validation set."""
    return {c for f in folds for c in (*f["train"], *f["val"])}


def extend_folds(
    folds: Sequence[Mapping[str, Any]], records: Sequence[Any], seed: int = 0,
    positive: Mapping[str, bool] | None = None, train_only: bool = False,
) -> list[dict[str, Any]]:
    """Add the records that no fold holds yet; every case already placed stays in its fold.

    Why not re-split: networks warm-started from the old folds have trained on the old training
    cases, so moving one into a validation fold would leak it. A new study of a known patient joins
    that patient's fold; new patients go, largest first, to the emptiest fold as in ``make_folds``.
    Fold numbers are kept (fold k must stay the fold of ``weights/fold{k}.pt``). Every case of the
    old folds must be among ``records``: otherwise a new study of its patient could not be placed.

    ``train_only`` puts new patients in every fold's training set and in no validation set: extra
    training data that leaves each fold's validation cases, and so its figures, as they were (new
    studies of known patients still join their patient's fold, or they would leak into its training).
    """
    check_folds(folds)
    ordered = sorted(folds, key=lambda f: int(f["fold"]))
    numbers = [int(f["fold"]) for f in ordered]
    val_sets: list[list[str]] = [list(f["val"]) for f in ordered]
    fold_of = {c: k for k, val in enumerate(val_sets) for c in val}
    pos = positive or {}
    npos = [sum(bool(pos.get(c, False)) for c in val) for val in val_sets]
    placed = cases_of(ordered)
    new: dict[str, list[str]] = {}
    seen: set[str] = set()
    for patient, cases in _by_patient(records).items():
        seen.update(cases)
        known = {fold_of[c] for c in cases if c in fold_of}
        extra = any(c in placed and c not in fold_of for c in cases)  # already training data of every fold
        if len(known) + extra > 1:
            raise SplitError(f"patient {patient!r} straddles folds")
        fresh = [c for c in cases if c not in placed]
        if known and fresh:  # a new study of a known patient joins that patient's fold
            val_sets[known.pop()].extend(fresh)
        elif fresh and not extra:  # (a new study of a train-only patient stays train-only)
            new[patient] = fresh
    missing = sorted(placed - seen)
    if missing:
        raise SplitError(f"{len(missing)} cases of the folds are not in the data, e.g. {missing[0]!r}")
    if not train_only:  # (train-only cases are in no val set, so _as_folds puts them in every train set)
        _place(_placement_order(new, seed), new, val_sets, pos, npos)
    return _as_folds(val_sets, sorted(seen), numbers)


def check_folds(folds: Sequence[Mapping[str, Any]], records: Sequence[Any] | None = None) -> None:
    """Raise ValueError unless every case is in at most one val fold and no patient straddles folds.

    A case in no val fold is training data of every fold (``extend_folds(train_only=True)``); its
    patient must then have no case in any val fold.
    """
    every = cases_of(folds)
    counts: dict[str, int] = defaultdict(int)
    for f in folds:
        if set(f["train"]) & set(f["val"]):
            raise SplitError(f"fold {f['fold']}: a case is in both train and val")
        if set(f["train"]) | set(f["val"]) != every:
            raise SplitError(f"fold {f['fold']}: does not cover every case")
        for c in f["val"]:
            counts[c] += 1
    bad = [c for c in every if counts[c] > 1]
    if bad:
        raise SplitError(f"case {sorted(bad)[0]!r} is in {counts[sorted(bad)[0]]} val folds (expected at most 1)")
    if records is not None:
        fold_of = {c: f["fold"] for f in folds for c in f["val"]}
        patient_fold: dict[str, int | None] = {}  # None: training data of every fold
        for rec in records:
            case, patient = _case_and_patient(rec)
            if case not in every:
                raise SplitError(f"case {case!r} is in no fold")
            if patient_fold.setdefault(patient, fold_of.get(case)) != fold_of.get(case):
                raise SplitError(f"patient {patient!r} straddles folds")


def save_splits(folds: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write the folds as JSON (a list of {fold, train, val}, like nnU-Net's splits_final.json + fold)."""
    path = Path(path)
    write_text_atomic(json.dumps([dict(f) for f in folds], indent=1) + "\n", path)
    return path


def load_splits(path: str | Path) -> list[dict[str, Any]]:
    """Read folds written by save_splits (also accepts nnU-Net's list of {train, val})."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise SplitError(f"{path}: cannot read the folds file ({err.strerror or err})") from err
    except json.JSONDecodeError as err:
        raise SplitError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, list) or not all(
        isinstance(f, dict) and "train" in f and "val" in f for f in data
    ):
        raise SplitError(f"{path}: not a list of {{'train': [...], 'val': [...]}} folds")
    out = []
    for k, f in enumerate(data):
        out.append({"fold": int(f.get("fold", k)), "train": list(f["train"]), "val": list(f["val"])})
    try:
        check_folds(out)
    except SplitError as err:
        raise SplitError(f"{path}: {err}") from err
    return out
