"""Organ supervision: a training-only organ head beside the lesion output (training/organ_head.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from common.cases import Case
from model.config import preset
from model.network import build_network
from training.fit import fit
from training.organ_head import OrganHead, organ_loss
from training.recipe import train_preset

pytestmark = pytest.mark.usefixtures("one_thread")


def _organ_loss_of(net: torch.nn.Module, head_state: dict, case: Case, cache: Path) -> float:
    """The organ head's cross-entropy on a whole (small) phantom as training sees it (the cached arrays)."""
    from training.data import CaseStore

    store = CaseStore([case], preset("tiny"), cache)
    pet, _, _ = store.load(case.case_id, mmap=False)
    organs = store.load_organs(case.case_id, mmap=False)
    model = OrganHead(net, 11)
    model.head.load_state_dict(head_state)
    x = torch.from_numpy(np.ascontiguousarray(pet[:64, :64, :64], dtype=np.float32))[None, None]
    y = torch.from_numpy(organs[:64, :64, :64].astype(np.int64))[None, None]
    with torch.no_grad():
        return float(organ_loss(model.eval()(x)[:, 2:], y))


def test_the_organ_head_learns_and_the_export_keeps_the_lesion_network_only(phantoms, tmp_path: Path) -> None:
    from model import Predictor
    from model.network import load_checkpoint
    from training.export import export

    config = preset("tiny")
    train = train_preset("tiny").with_(organ_weight=1.0, epochs=6, iters_per_epoch=5, lr=3e-2, val_every=100,
                                       organ_head_lr=3e-2)  # everything at one rate
    torch.manual_seed(train.seed)  # as fit seeds them: the same starting network and head
    fresh = OrganHead(build_network(config), 11)
    before = _organ_loss_of(fresh.net, fresh.head.state_dict(), phantoms[0], tmp_path / "cache")

    cases = [phantoms[0], phantoms[2]]  # two with lesions
    result = fit(cases, [], config, train, tmp_path / "runs" / "fold0", cache_dir=tmp_path / "cache", progress=False,
                 fold=0)
    organ = [row["loss_organ"] for row in result.history]  # logged apart from the lesion loss, and falling
    assert all(np.isfinite(organ)) and organ[-1] < organ[0]
    assert "loss_organ" in (tmp_path / "runs" / "fold0" / "metrics.csv").read_text().splitlines()[0].split(",")
    state = torch.load(tmp_path / "runs" / "fold0" / "last.pt", map_location="cpu", weights_only=True)
    assert set(state["net"]) == set(build_network(config).state_dict())  # the lesion network, no head in it
    assert "organ_head" in state
    trained = build_network(config)
    trained.load_state_dict(state["net"])
    after = _organ_loss_of(trained, state["organ_head"], phantoms[0], tmp_path / "cache")
    # the head and the shared layers learned the organs: 2.50 -> 0.88 measured (30 steps); half is the bar
    assert after < 0.5 * before, (before, after)

    export(tmp_path / "runs", tmp_path / "weights", folds=(0,))
    exported = torch.load(tmp_path / "weights" / "fold0.pt", map_location="cpu", weights_only=True)
    assert "organ_head" not in exported and load_checkpoint(tmp_path / "weights" / "fold0.pt").config == config
    predictor = Predictor.from_weights(tmp_path / "weights", device="cpu")
    scores = predictor.predict_scores(sitk.ReadImage(str(phantoms[0].pet)))
    assert scores.shape[0] == 1 and np.isfinite(scores).all()
    # benchmarks/organ_head.py scores the head kept in last.pt: the trained one beats a fresh one
    from benchmarks.organ_head import score_run

    fresh_state = {**state, "net": fresh.net.state_dict(), "organ_head": fresh.head.state_dict()}
    torch.save(fresh_state, tmp_path / "fresh.pt")
    learned = score_run(tmp_path / "runs" / "fold0" / "last.pt", [phantoms[0]], tmp_path / "cache")
    untrained = score_run(tmp_path / "fresh.pt", [phantoms[0]], tmp_path / "cache")
    assert learned["voxel_accuracy"] > untrained["voxel_accuracy"] and learned["dice"]["background"] is not None
    with pytest.raises(SystemExit, match="no organ head"):
        score_run(tmp_path / "weights" / "fold0.pt", [phantoms[0]], tmp_path / "cache")


def test_organ_supervision_without_an_organ_map_says_which_case(phantoms, tmp_path: Path) -> None:
    from training.data import LayoutError

    bare = [Case(c.case_id, c.pet, label=c.label) for c in phantoms[:2]]
    train = train_preset("tiny").with_(organ_weight=1.0, epochs=1, iters_per_epoch=1)
    with pytest.raises(LayoutError, match=r"no organ map .*--organs"):
        fit(bare, [], preset("tiny"), train, tmp_path / "fold0", cache_dir=tmp_path / "cache", progress=False)


def test_the_organ_benchmarks_dice_is_monais() -> None:
    """benchmarks/organ_head.py scores each class with common.masks.dice: MONAI's Dice, NaN for a class in
    neither mask (left out of the class's mean)."""
    from monai.metrics import compute_dice

    from common.masks import dice

    rng = np.random.default_rng(0)
    for _ in range(5):
        pred, truth = rng.random((2, 12, 10, 8)) < rng.random(2)[:, None, None, None]
        theirs = float(compute_dice(torch.from_numpy(pred)[None, None].float(),
                                    torch.from_numpy(truth)[None, None].float(), include_background=True))
        assert dice(pred, truth) == pytest.approx(theirs, abs=1e-6)
    assert np.isnan(dice(np.zeros(3, bool), np.zeros(3, bool)))


def test_the_organ_head_learns_at_its_own_rate_while_the_network_fine_tunes(phantoms, tmp_path: Path) -> None:
    """A fine-tuning's lr (1e-4) for everything leaves a fresh head where it started; the head's own rate
    (organ_head_lr) teaches it the organs while the lesion network keeps the small one."""
    config = preset("tiny")
    losses = {}
    for head_lr in (1e-4, 3e-2):
        train = train_preset("tiny").with_(organ_weight=1.0, epochs=6, iters_per_epoch=5, lr=1e-4, val_every=100,
                                           organ_head_lr=head_lr)
        torch.manual_seed(train.seed)
        fresh = OrganHead(build_network(config), 11)
        before = _organ_loss_of(fresh.net, fresh.head.state_dict(), phantoms[0], tmp_path / "cache")
        run = tmp_path / f"head_lr_{head_lr:g}"
        fit([phantoms[0], phantoms[2]], [], config, train, run, cache_dir=tmp_path / "cache", progress=False)
        state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
        assert [g["lr"] for g in state["optimizer"]["param_groups"]][1] < head_lr * 1.0001  # the head's own group
        trained = build_network(config)
        trained.load_state_dict(state["net"])
        losses[head_lr] = (before, _organ_loss_of(trained, state["organ_head"], phantoms[0], tmp_path / "cache"))
    # measured: 2.50 -> 2.48 with the network's 1e-4, 2.50 -> 1.32 with the head's own 3e-2 (30 steps)
    (slow_before, slow_after), (fast_before, fast_after) = losses[1e-4], losses[3e-2]
    assert slow_after > 0.95 * slow_before and fast_after < 0.75 * fast_before, losses


def test_the_organ_benchmark_refuses_bad_input_in_one_line(phantoms, tmp_path: Path) -> None:
    from benchmarks.organ_head import main

    with pytest.raises(SystemExit, match=f"not a directory: {tmp_path / 'none'}$"):
        main(["--runs", str(tmp_path / "a.pt"), "--data", str(tmp_path / "none")])
    data = phantoms[0].pet.parents[2]  # the phantoms' TCIA root: cases with organ maps
    with pytest.raises(SystemExit, match=f"{tmp_path / 'a.pt'}: checkpoint file not found$"):
        main(["--runs", str(tmp_path / "a.pt"), "--data", str(data)])
