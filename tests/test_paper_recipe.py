"""The ``paper`` preset point by point against the authors' code (commit c377616; docs/training.md's table):
rotation plane, stop epoch, last checkpoint, the authors' split, stop at a non-finite loss, seed and
determinism, and the four-folds-plus-one-network ensemble."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.config import preset
from model.network import build_network, load_checkpoint, save_checkpoint
from training.fit import fit
from training.recipe import NonFiniteLoss, train_preset
from training.splits import SplitError, authors_folds

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**changes: object):
    return train_preset("tiny").with_(**changes)


def _rotations(train) -> list:
    from monai.transforms import RandRotate90d

    from training.recipe import random_transforms

    return [t for t in random_transforms(preset("tiny"), train).transforms if isinstance(t, RandRotate90d)]


def test_paper_rotates_in_the_axial_plane_only_and_never_moves_the_3mm_axis() -> None:
    paper = train_preset("paper")
    assert paper.rot90_planes == "xy" and [tuple(t.spatial_axes) for t in _rotations(paper)] == [(0, 1)]
    assert len(_rotations(train_preset("demo"))) == 3  # the demo's recipe keeps all three planes
    arr = np.arange(6 * 6 * 4, dtype=np.float32).reshape(1, 6, 6, 4)  # x, y at 2 mm; z at 3 mm
    shapes, seen = set(), set()
    for seed in range(40):
        (rot,) = _rotations(paper.with_(rot90_prob=1.0))
        rot.set_random_state(seed)
        out = np.asarray(rot({"pet": torch.from_numpy(arr), "label": torch.from_numpy(arr)})["pet"])
        shapes.add(out.shape)
        k = next(k for k in range(4) if np.array_equal(out[0], np.rot90(arr[0], k, axes=(0, 1))))
        seen.add(k)  # each output is numpy's rotation in the x-y plane by some k
    assert shapes == {(1, 6, 6, 4)} and seen == {1, 2, 3}
    moved = set()
    for seed in range(40):  # all three planes: the 3 mm axis does move
        for rot in _rotations(train_preset("demo").with_(rot90_prob=1.0)):
            rot.set_random_state(seed)
            moved.add(np.asarray(rot({"pet": torch.from_numpy(arr), "label": torch.from_numpy(arr)})["pet"]).shape)
    assert (1, 6, 4, 6) in moved or (1, 4, 6, 6) in moved


def test_paper_seed_determinism_and_stop_rule_are_the_authors() -> None:
    paper = train_preset("paper")
    assert (paper.seed, paper.deterministic, paper.nonfinite, paper.epochs) == (36, True, "stop", 800)
    demo = train_preset("demo")
    assert (demo.seed, demo.deterministic, demo.nonfinite) == (0, False, "skip")
    assert train_preset("paper-interactive").nonfinite == "stop"
    with pytest.raises(ValueError, match="rot90_planes"):
        paper.with_(rot90_planes="xy,xq")


def test_stop_epoch_ends_the_run_with_the_cosine_planned_for_every_epoch(phantoms, cache_dir, tmp_path) -> None:
    train = _tiny(epochs=6, iters_per_epoch=1, val_every=10, name="paper")
    result = fit(phantoms[:3], phantoms[4:5], preset("tiny"), train, tmp_path / "fold0", cache_dir=cache_dir,
                 progress=False, stop_epoch=2)
    assert result.status == "stop_epoch" and result.epochs_done == 2
    lr0, eta = train.lr, train.eta_min
    for row in result.history:  # the cosine of six epochs, not of two (independent formula)
        t = row["epoch"] - 1
        assert row["lr"] == pytest.approx(eta + (lr0 - eta) * (1 + math.cos(math.pi * t / 6)) / 2)
    assert math.isfinite(result.history[-1]["val_dice"])  # the last epoch is scored, as after a budget stop
    state = torch.load(tmp_path / "fold0" / "last.pt", map_location="cpu", weights_only=True)
    assert state["scheduler"]["T_max"] == 6 and state["epoch"] == 2


def test_export_keeps_the_most_recent_checkpoint_for_the_paper_recipe(phantoms, cache_dir, tmp_path) -> None:
    from model.manifest import read_manifest
    from training.export import export

    runs = tmp_path / "runs"
    for fold, name in ((0, "paper"), (1, "tiny")):
        fit(phantoms[:3], phantoms[4:5], preset("tiny"), _tiny(epochs=3, iters_per_epoch=1, val_every=1, name=name,
                                                               lr=1e-2), runs / f"fold{fold}", cache_dir=cache_dir,
            progress=False)
    export(runs, tmp_path / "weights", folds=(0, 1))
    models = read_manifest(tmp_path / "weights")["models"]
    assert [m["checkpoint"] for m in models] == ["last", "best"]
    assert models[0]["epoch"] == 3  # the most recent, whatever validation said


def test_authors_split_is_consecutive_blocks_of_sorted_patients() -> None:
    records = [{"case_id": f"P{p:02d}_s{s}", "patient_id": f"P{p:02d}"} for p in (7, 3, 9, 0, 1, 2, 4, 5, 6, 8)
               for s in range(1 + (p == 3))]
    folds = authors_folds(records)
    patients = sorted({r["patient_id"] for r in records})
    for k, fold in enumerate(folds):  # blocks of ceil(10 / 5) = 2 patients, in sorted order
        block = set(patients[2 * k: 2 * k + 2])
        assert fold["fold"] == k
        assert sorted(fold["val"]) == sorted(r["case_id"] for r in records if r["patient_id"] in block)
        assert sorted(fold["train"]) == sorted(r["case_id"] for r in records if r["patient_id"] not in block)
    eleven = [f"P{p:02d}" for p in range(11)]  # blocks of 3, 3, 3, 2: four, and their script fails too
    with pytest.raises(SplitError, match="11 patients in blocks of ceil\\(11/5\\) = 3 make 4 blocks, not 5"):
        authors_folds(eleven)


def test_a_non_finite_loss_stops_a_paper_run_in_one_line(phantoms, cache_dir, tmp_path, capsys) -> None:
    torch.manual_seed(0)
    net = build_network(preset("tiny"))
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    save_checkpoint(tmp_path / "nan.pt", net, preset("tiny"))
    train = train_preset("paper").with_(**{k: getattr(_tiny(), k) for k in (
        "epochs", "batch_size", "samples_per_volume", "iters_per_epoch", "amp", "val_every", "val_max_cases")})
    train = train.with_(allow_smaller=False, train_inferer="simple")
    cudnn_before = torch.backends.cudnn.deterministic
    try:
        with pytest.raises(NonFiniteLoss) as err:
            fit(phantoms[:3], [], preset("tiny"), train, tmp_path / "fold0", cache_dir=cache_dir, progress=False,
                init=tmp_path / "nan.pt")
        assert torch.backends.cudnn.deterministic  # the paper's recipe asked for deterministic kernels
    finally:
        torch.backends.cudnn.deterministic = cudnn_before
    line = str(err.value)
    assert "\n" not in line and line.startswith("epoch 1 step 1: loss nan on case PETCT_000")
    assert any(c.case_id in line for c in phantoms[:3]) and "TerminateOnNan" in line
    # the demo's rule skips the step and goes on, naming the crops' cases in one line per skipped step
    capsys.readouterr()
    result = fit(phantoms[:3], [], preset("tiny"), train.with_(nonfinite="skip"), tmp_path / "skip",
                 cache_dir=cache_dir, progress=False, init=tmp_path / "nan.pt")
    assert result.history[0]["skipped"] == result.history[0]["steps"] > 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "step skipped" in line]
    assert len(lines) == sum(row["skipped"] for row in result.history)
    assert lines[0].startswith("epoch 1 step 1: loss nan, non-finite")
    assert any(c.case_id in lines[0] for c in phantoms[:3])


def test_four_folds_plus_one_network_on_all_data_export_and_load(phantoms, cache_dir, tmp_path, capsys) -> None:
    from model import Predictor
    from model.manifest import read_manifest
    from training.cli import main

    root = phantoms[0].pet.parents[2]
    common = ["--data", str(root), "--layout", "tcia", "--preset", "tiny", "--splits", str(tmp_path / "splits.json"),
              "--out", str(tmp_path / "runs"), "--cache-dir", str(cache_dir), "--epochs", "1", "--iters-per-epoch",
              "1", "--quiet", "--threads", "1"]
    # six patients cannot make the authors' five blocks of ceil(6/5) = 2: one line, exit 2
    assert main(["cv", *common, "--split", "authors", "--folds", "0"]) == 2
    assert "6 patients in blocks of ceil(6/5) = 2 make 3 blocks, not 5" in capsys.readouterr().err
    assert main(["cv", *common, "--folds", "0,all"]) == 0
    all_state = torch.load(tmp_path / "runs" / "all" / "last.pt", map_location="cpu", weights_only=True)
    info = __import__("json").loads(all_state["data"])
    assert (info["n_train"], info["n_val"]) == (6, 0) and all_state["val_cases"] == []
    assert main(["export", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "weights"),
                 "--folds", "0,all"]) == 0
    manifest = read_manifest(tmp_path / "weights")
    assert [(m["file"], m["fold"]) for m in manifest["models"]] == [("fold0.pt", 0), ("all.pt", "all")]
    assert load_checkpoint(tmp_path / "weights" / "all.pt").config == preset("tiny")
    predictor = Predictor.from_weights(tmp_path / "weights", device="cpu")
    assert len(predictor.networks) == 2


def test_fit_takes_one_fold_or_all(capsys) -> None:
    from training.cli import build_parser

    parse = build_parser().parse_args
    base = ["fit", "--data", "d", "--splits", "s.json", "--out", "o", "--fold"]
    assert parse([*base, "all"]).fold == "all" and parse([*base, "3"]).fold == 3
    with pytest.raises(SystemExit):
        parse([*base, "1,2"])
    assert "one fold number or 'all'" in capsys.readouterr().err


def test_cv_resume_goes_on_with_a_fold_stopped_before_a_later_stop_epoch() -> None:
    from training.cli import _fold_done

    stopped = {"status": "stop_epoch", "epochs_done": 400}
    assert _fold_done(stopped, None) and _fold_done(stopped, 400) and not _fold_done(stopped, 564)
    assert _fold_done({"status": "budget", "epochs_done": 3}, 564) and not _fold_done({"status": "stopped"}, None)
    assert not _fold_done(None, None)
