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
    # the head and the shared layers learned the organs: 2.26 -> 0.24 measured (30 steps, three-level head);
    # half is the bar
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
    # measured (three-level head): 2.26 -> 2.17 with the network's 1e-4, 2.26 -> 0.48 with the head's own 3e-2
    # (30 steps)
    (slow_before, slow_after), (fast_before, fast_after) = losses[1e-4], losses[3e-2]
    assert slow_after > 0.95 * slow_before and fast_after < 0.75 * fast_before, losses


def test_the_organ_benchmark_refuses_bad_input_in_one_line(phantoms, tmp_path: Path) -> None:
    from benchmarks.organ_head import main

    with pytest.raises(SystemExit, match=f"not a directory: {tmp_path / 'none'}$"):
        main(["--runs", str(tmp_path / "a.pt"), "--data", str(tmp_path / "none")])
    data = phantoms[0].pet.parents[2]  # the phantoms' TCIA root: cases with organ maps
    with pytest.raises(SystemExit, match=f"{tmp_path / 'a.pt'}: checkpoint file not found$"):
        main(["--runs", str(tmp_path / "a.pt"), "--data", str(data)])


def test_the_organ_head_reads_the_decoders_levels() -> None:
    """One level reads what the lesion output reads (the decoder's output, computed here by MONAI's own
    path); three levels add the two coarser outputs, upsampled to the full grid, as channels after it."""
    import torch.nn.functional as F

    from training.organ_head import levels_of

    config = preset("tiny")
    torch.manual_seed(0)
    net = build_network(config).eval()
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        decoded = net.skip_layers(x)  # DynUNet's encoder-decoder, before its output block
        one = OrganHead(net, 11, levels=1).eval()
        assert torch.allclose(one(x)[:, 2:], one.head(decoded), atol=1e-6)
        three = OrganHead(net, 11, levels=3).eval()
        coarse = {}
        for depth in (2, 3):
            net.upsamples[-depth].register_forward_hook(lambda m, a, out, d=depth: coarse.__setitem__(d, out))
        organs = three(x)[:, 2:]
        stacked = torch.cat([decoded] + [F.interpolate(coarse[d], size=(32, 32, 32), mode="trilinear")
                                         for d in (2, 3)], 1)
        assert stacked.shape[1] == sum(config.filters[:3]) == three.head.in_channels
        assert torch.allclose(organs, three.head(stacked), atol=1e-6)
    # a saved head says how many levels it read (the first runs' heads read one)
    assert levels_of(net, one.head.in_channels) == 1 and levels_of(net, three.head.in_channels) == 3
    with pytest.raises(ValueError, match="organ head levels must be 1-3"):
        OrganHead(net, 11, levels=4)


def test_the_readout_benchmark_trains_one_head_per_depth(phantoms, tmp_path: Path) -> None:
    """benchmarks/organ_readout.py: a fresh head per --levels on the frozen network's decoder, its input
    the first channels of the deepest read-out (4 for the tiny network's last level, 4 + 8 for two)."""
    import json

    from benchmarks.organ_readout import main
    from model.network import save_checkpoint

    config = preset("tiny")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "tiny.pt", build_network(config), config)
    data = phantoms[0].pet.parents[2]
    args = ["--weights", str(tmp_path / "tiny.pt"), "--data", str(data), "--cache-dir", str(tmp_path / "cache"),
            "--train-cases", "4", "--test-cases", "2", "--crops-per-case", "1", "--steps", "8"]
    assert main([*args, "--levels", "1", "2", "--json", str(tmp_path / "readout.json")]) == 0
    record = json.loads((tmp_path / "readout.json").read_text())
    assert [(r["levels"], r["channels"]) for r in record["results"]] == [(1, 4), (2, 12)]
    assert record["train_crops"] == 4 and record["test_crops"] == 2
    for r in record["results"]:
        assert np.isfinite(r["cross_entropy"]) and all(v is None or 0 <= v <= 1 for v in r["dice"].values())
    with pytest.raises(SystemExit, match=r"6 cases with ORGANS.nii.gz, 6 \+ 2 needed$"):
        main([*args[:7], "6", "--test-cases", "2"])
    with pytest.raises(SystemExit, match=r"^--levels: organ head levels must be 1-3 for this network, got 4$"):
        main([*args, "--levels", "1", "4"])
