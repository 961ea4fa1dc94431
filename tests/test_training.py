"""Training recipe: transform order, crop sampling, NaN-safe steps, resume, atomic checkpoints, export."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cc3d
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from common.cases import Case
from model.config import preset
from model.network import build_network
from tests.conftest import SHAPE, SPACING, write_tcia_phantoms  # noqa: F401 (other test modules import it here)
from training.data import HOT_MIN_COMPONENT, CaseStore, CropDataset, component_pool, epoch_draws
from training.fit import DistInfo, cpu_has_native_bf16, fit, train_step
from training.recipe import (
    RandCropByPosHotNegd,
    TrainConfig,
    crop_transform,
    make_loss,
    make_optimizer,
    train_preset,
    transform_names,
)

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**changes: object) -> TrainConfig:
    return train_preset("tiny").with_(**changes)


# ---------------------------------------------------------------------------------------------


def test_transform_order_is_the_papers() -> None:
    config = preset("paper")
    names = transform_names(config, train_preset("paper"))
    assert names == [
        "LoadImaged",
        "EnsureChannelFirstd",
        "NonFiniteToZerod",
        "Orientationd",
        "Spacingd",
        "ScaleIntensityRangePercentilesd",
        "<cache>",
        "RandCropByPosNegLabeld",
        "RandFlipd",
        "RandFlipd",
        "RandFlipd",
        "RandRotate90d",  # the axial plane only, as the authors' RandRotate90d(spatial_axes=(0, 1))
        "NonFiniteToZerod",
    ]
    demo = transform_names(preset("demo"), train_preset("demo"))
    assert demo[demo.index("<cache>") + 1] == "RandCropByPosHotNegd" and demo[-1] == "NonFiniteToZerod"


def test_nonfinite_voxels_become_zero_before_the_percentiles_in_training_and_inference(tmp_path) -> None:
    """One rule in both paths: a PET with NaN and Inf voxels is treated as the same PET with zeros there."""
    import numpy as np
    import SimpleITK as sitk

    from model import Predictor
    from tests.conftest import HOTSPOT_WEIGHTS, body_with_lesion
    from training.recipe import deterministic_transforms

    pet, _ = body_with_lesion(size=(48, 44, 56))
    dirty_array = sitk.GetArrayFromImage(pet)
    dirty_array[10, 12, 3:9] = np.nan
    dirty_array[20, 5, 7] = np.inf
    dirty_array[21, 5, 7] = -np.inf
    clean_array = np.nan_to_num(dirty_array, nan=0.0, posinf=0.0, neginf=0.0)
    images = {}
    for name, array in (("dirty", dirty_array), ("clean", clean_array)):
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(pet)
        images[name] = image
        sitk.WriteImage(image, str(tmp_path / f"{name}.nii.gz"))
        sitk.WriteImage(sitk.Cast(image * 0, sitk.sitkUInt8), str(tmp_path / f"{name}_label.nii.gz"))

    config = preset("tiny")
    prepared = {name: deterministic_transforms(config)({"pet": str(tmp_path / f"{name}.nii.gz"),
                                                        "label": str(tmp_path / f"{name}_label.nii.gz")})["pet"]
                for name in ("dirty", "clean")}
    assert torch.isfinite(prepared["dirty"]).all() and prepared["dirty"].max() == 1.0
    assert torch.equal(prepared["dirty"].as_tensor(), prepared["clean"].as_tensor())

    predictor = Predictor.from_weights(HOTSPOT_WEIGHTS, device="cpu")
    masks = {name: sitk.GetArrayFromImage(predictor.predict(images[name])) for name in ("dirty", "clean")}
    assert masks["clean"].max() == 1 and np.array_equal(masks["dirty"], masks["clean"])


def test_recipe_parameters() -> None:
    from training.recipe import deterministic_transforms, make_scheduler, random_transforms

    config, train = preset("paper"), train_preset("paper")
    det = deterministic_transforms(config).transforms
    assert tuple(det[4].spacing_transform.pixdim) == pytest.approx(config.spacing)
    assert [str(m) for m in det[4].mode] == ["bilinear", "nearest"]
    scale = det[5].scaler
    assert (scale.lower, scale.upper, scale.b_min, scale.b_max, scale.clip) == (0.05, 99.95, 0.0, 1.0, True)
    rand = random_transforms(config, train).transforms
    crop = rand[0]
    assert crop.cropper.pos_ratio == pytest.approx(0.6)
    assert tuple(crop.cropper.spatial_size) == (224, 224, 224) and crop.cropper.allow_smaller
    assert [t.flipper.spatial_axis for t in rand[1:4]] == [0, 1, 2] and all(t.prob == 0.1 for t in rand[1:5])
    assert tuple(rand[4].spatial_axes) == (0, 1) and type(rand[5]).__name__ == "NonFiniteToZerod"  # axial only
    assert (train.batch_size, train.iters_per_epoch, train.steps_per_epoch(810), train.steps_per_epoch(810, 4)) == (
        1, 0, 810, 203)  # the authors' epoch: one pass over the training cases, one crop per step
    loss = make_loss(train)
    assert loss.dice.squared_pred and loss.dice.include_background and loss.dice.softmax and loss.dice.to_onehot_y
    assert not loss.dice.batch and make_loss(train_preset("demo")).dice.batch
    opt = make_optimizer(build_network(preset("tiny")).parameters(), train)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 2e-4
    sched = make_scheduler(opt, train.with_(epochs=4))
    for _ in range(4):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-8)
    assert train_preset("paper").hot_neg == 0 and train_preset("paper").amp


def _ball_volume() -> dict[str, np.ndarray]:
    """64^3 volume: a lesion ball and a hot non-lesion ball, both far from the borders."""
    grid = np.stack(np.meshgrid(*[np.arange(64)] * 3, indexing="ij"))
    lesion = ((grid - np.array([20, 32, 32])[:, None, None, None]) ** 2).sum(0) <= 25
    hot = ((grid - np.array([44, 32, 32])[:, None, None, None]) ** 2).sum(0) <= 25
    pet = np.full((64, 64, 64), 0.05, np.float32)
    pet[lesion | hot] = 0.9
    return {"pet": pet[None], "label": lesion[None].astype(np.float32), "lesion": lesion, "hot": hot}


def test_paper_crop_is_lesion_centred_60_percent() -> None:
    vol = _ball_volume()
    cropper = crop_transform(preset("tiny"), _tiny(samples_per_volume=1, batch_size=1))
    cropper.set_random_state(seed=3)
    hits, n = 0, 600
    for _ in range(n):
        out = cropper({"pet": vol["pet"], "label": vol["label"]})[0]
        assert tuple(out["pet"].shape) == (1, 32, 32, 32)
        hits += int(out["label"][0, 16, 16, 16] > 0)
    assert abs(hits / n - 0.6) < 0.06, hits / n


def test_hot_negative_crop_ratios() -> None:
    vol = _ball_volume()
    flat_lesion = np.flatnonzero(vol["lesion"])
    flat_hot = np.flatnonzero(vol["hot"])
    cropper = RandCropByPosHotNegd(["pet", "label"], "label", (32, 32, 32), pos=0.5, hot=0.3, neg=0.2, num_samples=4)
    cropper.set_random_state(seed=5)
    counts = {"lesion": 0, "hot": 0, "other": 0}
    n = 0
    for _ in range(200):
        for out in cropper({"pet": vol["pet"], "label": vol["label"], "fg_idx": flat_lesion, "hot_idx": flat_hot}):
            c = tuple(int(v) for v in out["crop_center"])
            kind = "lesion" if vol["lesion"][c] else "hot" if vol["hot"][c] else "other"
            counts[kind] += 1
            n += 1
            assert "fg_idx" not in out and out["label"].shape == (1, 32, 32, 32)
    assert abs(counts["lesion"] / n - 0.5) < 0.05 and abs(counts["hot"] / n - 0.3) < 0.05, counts


def test_hot_pool_balances_structures_by_square_root_of_size() -> None:
    """A big hot block and a small one: per voxel the small one gets its voxel share; balanced, sqrt."""
    mask = np.zeros((40, 40, 40), bool)
    mask[2:22, 2:22, 2:22] = True  # 8000 voxels ("brain")
    mask[30:35, 30:35, 30:35] = True  # 125 voxels ("bladder")
    mask[0, 39, 0] = True  # a one-voxel speck
    small = np.zeros_like(mask)
    small[30:35, 30:35, 30:35] = True
    flat_small = set(np.flatnonzero(small).tolist())
    rng = np.random.default_rng(0)
    uniform = component_pool(mask, 1.0, rng, max_indices=4000)
    assert len(np.unique(uniform)) == len(uniform) == 4000  # a subsample, no repeats
    share_uniform = np.mean([i in flat_small for i in uniform.tolist()])
    assert abs(share_uniform - 125 / 8126) < 0.01
    balanced = component_pool(mask, 0.5, rng, max_indices=20000)
    assert set(balanced.tolist()) <= set(np.flatnonzero(mask).tolist())
    masses = np.array([8000**0.5, 125**0.5, 1 * HOT_MIN_COMPONENT**-0.5])
    share_balanced = np.mean([i in flat_small for i in balanced.tolist()])
    assert abs(share_balanced - masses[1] / masses.sum()) < 0.015, share_balanced  # about 0.11, not 0.015
    assert len(component_pool(np.zeros_like(mask), 0.5, rng)) == 0


def test_hot_sampler_avoids_air_and_uses_hot_voxels_on_lesion_free_volumes() -> None:
    vol = _ball_volume()
    vol["pet"][0, :, :, :8] = 0.0  # a slab of air
    cropper = RandCropByPosHotNegd(
        ["pet", "label"], "label", (32, 32, 32), pos=0.5, hot=0.0, neg=0.5, num_samples=200, body_threshold=0.01
    )
    cropper.set_random_state(seed=7)
    empty = np.zeros(0, dtype=np.int64)
    crops = cropper({"pet": vol["pet"], "label": np.zeros_like(vol["label"]), "fg_idx": empty,
                     "hot_idx": np.flatnonzero(vol["hot"])})
    centres = [tuple(int(v) for v in c["crop_center"]) for c in crops]
    assert all(c[2] >= 8 for c in centres)  # never centred in air
    on_hot = np.mean([vol["hot"][c] for c in centres])
    assert 0.4 < on_hot < 0.65  # the lesion share went to hot voxels (plus hot hits by chance)


def test_air_share_lands_crops_in_air_and_neg_share_does_not() -> None:
    vol = _ball_volume()
    vol["pet"][0, :, :, :48] = 0.0  # three quarters of the volume is air, the two balls kept hot
    vol["pet"][0][vol["lesion"] | vol["hot"]] = 0.9
    air = vol["pet"][0] <= 0.01
    cropper = RandCropByPosHotNegd(
        ["pet", "label"], "label", (32, 32, 32), pos=0.0, hot=0.0, neg=0.6, air=0.4, num_samples=500,
        body_threshold=0.01,
    )
    cropper.set_random_state(seed=11)
    crops = cropper({"pet": vol["pet"], "label": vol["label"], "fg_idx": np.flatnonzero(vol["lesion"]),
                     "hot_idx": np.flatnonzero(vol["hot"])})
    in_air = np.mean([air[tuple(int(v) for v in c["crop_center"])] for c in crops])
    expected = 0.4 * air[~vol["lesion"]].mean()  # neg centres never in air; air centres uniform off-lesion
    assert abs(in_air - expected) < 0.06, (in_air, expected)
    # lesion and hot shares that find no pool fall back to body voxels, never to air
    cropper = RandCropByPosHotNegd(
        ["pet", "label"], "label", (32, 32, 32), pos=0.5, hot=0.5, neg=0.0, air=0.0, num_samples=200,
        body_threshold=0.01,
    )
    cropper.set_random_state(seed=12)
    empty = np.zeros(0, dtype=np.int64)
    crops = cropper({"pet": vol["pet"], "label": vol["label"], "fg_idx": empty, "hot_idx": empty})
    assert not any(air[tuple(int(v) for v in c["crop_center"])] for c in crops)
    assert train_preset("demo").air > 0 and train_preset("demo").uses_hot_sampler
    assert train_preset("paper").air == 0 and not train_preset("paper").uses_hot_sampler


def test_lesion_cases_get_their_share_of_draws() -> None:
    weights = [0.7 / 2, 0.7 / 2, 0.3 / 4, 0.3 / 4, 0.3 / 4, 0.3 / 4]
    draws = epoch_draws(6, 3000, seed=0, epoch=0, weights=weights)
    assert abs(np.mean([d < 2 for d in draws]) - 0.7) < 0.03


def test_epoch_draws_are_deterministic_and_sharded() -> None:
    a = epoch_draws(10, 7, seed=1, epoch=3)
    assert a == epoch_draws(10, 7, seed=1, epoch=3) and a != epoch_draws(10, 7, seed=1, epoch=4)
    r0 = epoch_draws(10, 5, seed=1, epoch=0, rank=0, world=2)
    r1 = epoch_draws(10, 5, seed=1, epoch=0, rank=1, world=2)
    assert len(r0) == len(r1) == 5 and set(r0).isdisjoint(r1)  # one pass of 10 cases split in two


def test_nan_loss_step_is_skipped_and_leaves_weights_unchanged() -> None:
    torch.manual_seed(0)
    net = build_network(preset("tiny"))
    opt = make_optimizer(net.parameters(), _tiny())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(2, 1, 32, 32, 32)
    y = (x > 0.7).float()
    bad = {"pet": x.clone(), "label": y}
    bad["pet"][0, 0, 0, 0, 0] = float("nan")
    result = train_step(net, bad, make_loss(_tiny()), opt, scaler, torch.device("cpu"), amp_dtype=None, info=DistInfo())
    assert not result.applied and math.isnan(result.loss)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not opt.state and all(p.grad is None for p in net.parameters())
    good = train_step(net, {"pet": x, "label": y}, make_loss(_tiny()), opt, scaler, torch.device("cpu"), None)
    assert good.applied and math.isfinite(good.loss)
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_autocast_dtype_follows_device_and_cpu_support(monkeypatch) -> None:
    from training.fit import autocast_dtype

    on, off = _tiny().with_(amp=True), _tiny().with_(amp=False)
    assert autocast_dtype(on, torch.device("cuda")) is torch.float16
    assert autocast_dtype(off, torch.device("cuda")) is None and autocast_dtype(off, torch.device("cpu")) is None
    for amx, avx512_bf16, expected in ((True, False, torch.bfloat16), (False, True, torch.bfloat16),
                                       (False, False, None)):  # no native bf16 (emulated is slower): fp32
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        assert autocast_dtype(on, torch.device("cpu")) is expected


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="CPU without native bf16")
def test_bf16_cpu_step_trains_fp32_weights() -> None:
    torch.manual_seed(0)
    net = build_network(preset("tiny"))
    seen = []
    net.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    opt = make_optimizer(net.parameters(), _tiny())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    x = torch.rand(2, 1, 32, 32, 32)
    y = (x > 0.7).float()
    loss_fn = make_loss(_tiny())
    losses = [train_step(net, {"pet": x, "label": y}, loss_fn, opt, scaler, torch.device("cpu"), torch.bfloat16)
              for _ in range(6)]
    assert all(r.applied and math.isfinite(r.loss) for r in losses)
    assert losses[-1].loss < losses[0].loss
    assert seen and set(seen) == {torch.bfloat16}  # the network really ran in bf16
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_batch_dice_teaches_false_positives_in_lesion_free_crops() -> None:
    """Per crop (the paper), the Dice term of a lesion-free crop is ~1 whatever the network does, so
    a false positive there is taught by cross-entropy alone, i.e. 1/(voxels in the batch) per voxel.
    With one Dice over the batch (the demo's ``dice_batch``) it enters the lesion crop's Dice.
    Demo scale: 64^3 crops, a 1 ml lesion at 4 mm found, an undecided false positive of the same size."""
    label = torch.zeros(2, 1, 64, 64, 64)
    label[0, 0, 20:30, 20:30, 20:30] = 1  # crop 0 has a lesion, crop 1 none
    logits = torch.zeros(2, 2, 64, 64, 64)
    logits[:, 0] = 4.0  # background everywhere ...
    logits[0, :, 20:30, 20:30, 20:30] = torch.tensor([-4.0, 4.0]).view(2, 1, 1, 1)  # ... the lesion found
    logits[1, :, 2:12, 2:12, 2:12] = torch.tensor([-0.5, 0.5]).view(2, 1, 1, 1)  # a false positive, p 0.73
    fp = (1, slice(None), slice(2, 12), slice(2, 12), slice(2, 12))

    def grad_on_fp(batch: bool) -> float:
        x = logits.clone().requires_grad_(True)
        make_loss(train_preset("demo").with_(dice_batch=batch))(x, label).backward()
        return float(x.grad[fp].abs().sum())

    per_crop, over_batch = grad_on_fp(False), grad_on_fp(True)
    assert over_batch > 10 * per_crop > 0


def test_fit_counts_skipped_steps(phantoms, cache_dir, tmp_path, monkeypatch) -> None:
    import training.fit as fit_module

    real = make_loss(_tiny())
    calls = {"n": 0}

    def nan_first(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = real(logits, target)
        return loss * float("nan") if calls["n"] == 1 else loss

    monkeypatch.setattr(fit_module, "make_loss", lambda train: nan_first)
    result = fit(
        phantoms[:4],
        [],
        preset("tiny"),
        _tiny(epochs=1, iters_per_epoch=3),
        tmp_path / "run",
        cache_dir=cache_dir,
        progress=False,
    )
    assert result.history[0]["skipped"] == 1 and result.history[0]["steps"] == 3
    assert math.isfinite(result.history[0]["loss"])
    import csv

    row = next(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert row["skipped"] == "1" and row["steps"] == "3"


def test_loss_lesion_leaves_out_the_floor_of_lesion_free_batches(phantoms, cache_dir, tmp_path, monkeypatch) -> None:
    """A batch without lesion voxels costs about 0.5 even when every voxel is called background with
    99.9 % confidence (its lesion Dice term stays ~1 until the summed squared lesion probability falls
    below the smoothing term, 1e-5), so the epoch loss hides fitting; ``loss_lesion`` averages the
    batches with lesions only."""
    import training.fit as fit_module

    loss = make_loss(train_preset("demo"))
    empty = torch.zeros(2, 1, 16, 16, 16)
    margin = float(np.log(999.0))  # lesion probability 1e-3 on every voxel
    confident = torch.cat([torch.full_like(empty, margin / 2), torch.full_like(empty, -margin / 2)], dim=1)
    assert 0.5 <= float(loss(confident, empty)) < 0.51  # a network right on every voxel still pays 0.5
    seen: list[tuple[float, bool, bool]] = []
    real_step = fit_module.train_step

    def recording_step(*args, **kwargs):
        step = real_step(*args, **kwargs)
        seen.append((step.loss, step.applied, step.has_lesion))
        assert step.has_lesion == bool(args[1]["label"].any())
        return step

    monkeypatch.setattr(fit_module, "train_step", recording_step)
    result = fit(phantoms[:4], [], preset("tiny"), _tiny(epochs=1, iters_per_epoch=6, batch_size=1,
                 samples_per_volume=1, seed=3), tmp_path / "run", cache_dir=cache_dir, progress=False)
    with_lesion = [v for v, applied, lesion in seen if applied and lesion]
    assert with_lesion and len(with_lesion) < len(seen)  # both kinds of batch occurred
    assert result.history[0]["loss_lesion"] == pytest.approx(float(np.mean(with_lesion)))
    assert result.history[0]["loss"] == pytest.approx(float(np.mean([v for v, a, _ in seen if a])))


def test_plan_epochs_fits_the_budget() -> None:
    from training.fit import plan_epochs

    train = _tiny(epochs=40, val_every=8)
    planned = plan_epochs(budget_s=1000, epoch_s=50, val_s=60, train=train)
    vals = 1 + sum(e % 8 == 0 or e == planned for e in range(2, planned + 1))
    assert planned * 50 + vals * 60 <= 950 < (planned + 1) * 50 + vals * 60
    assert plan_epochs(budget_s=1e6, epoch_s=1, val_s=1, train=train) == 40  # the cap
    assert plan_epochs(budget_s=1, epoch_s=50, val_s=60, train=train) == 1
    # "--epochs 100000" as a mere cap (scripts/train_demo_gpu.sh): once an O(epochs^2) loop that hung
    uncapped = _tiny(epochs=100_000, val_every=100_000)
    assert plan_epochs(budget_s=600, epoch_s=1.0, val_s=5.0, train=uncapped) == 560  # 560 + 2 validations
    from training.fit import _validates, _validations

    for every in range(-1, 11):  # the closed-form validation count against the per-epoch rule
        for planned in range(1, 60):
            assert _validations(planned, every) == 1 + sum(_validates(e, planned, every) for e in range(2, planned + 1))
    for every in (1, 3, 8):  # and the plan it gives
        train = _tiny(epochs=30, val_every=every)
        for budget in (100, 333, 900):
            planned = plan_epochs(budget_s=budget, epoch_s=7, val_s=11, train=train)
            assert _run_cost(planned, every) <= 0.95 * budget or planned == 1
            assert planned == 30 or _run_cost(planned + 1, every) > 0.95 * budget


def _run_cost(planned: int, every: int, epoch_s: float = 7, val_s: float = 11) -> float:
    """Seconds of a planned run by the per-epoch rule: epoch 1 validated, every k-th and the last."""
    return planned * epoch_s + val_s * (1 + sum(e % every == 0 or e == planned for e in range(2, planned + 1)))


def test_time_budget_plans_the_schedule(phantoms, cache_dir, tmp_path) -> None:
    result = fit(
        phantoms[:2],
        phantoms[4:5],
        preset("tiny"),
        _tiny(epochs=50, iters_per_epoch=1, val_every=0),
        tmp_path / "b",
        cache_dir=cache_dir,
        progress=False,
        time_budget_s=1e-3,
    )
    state = _state(tmp_path / "b" / "last.pt")
    assert result.epochs_done == state["planned_epochs"] == 1 and result.status == "finished"
    assert state["scheduler"]["T_max"] == 1 and math.isfinite(result.history[0]["val_dice"])


def test_budget_stop_validates_the_final_weights(phantoms, cache_dir, tmp_path, monkeypatch) -> None:
    import training.fit as fit_module

    calls = {"n": 0}

    def next_epoch_s(*args: object) -> float:  # epoch 2 fits the budget, epoch 3 does not
        calls["n"] += 1
        return 0.0 if calls["n"] == 1 else 1e9

    monkeypatch.setattr(fit_module, "_next_epoch_s", next_epoch_s)
    monkeypatch.setattr(fit_module, "plan_epochs", lambda *a, **k: 10)
    train = _tiny(epochs=10, iters_per_epoch=1, val_every=0)
    result = fit(phantoms[:2], phantoms[4:5], preset("tiny"), train, tmp_path / "s", cache_dir=cache_dir,
                 progress=False, time_budget_s=3600.0)
    assert result.status == "budget" and result.epochs_done == 2
    assert all(math.isfinite(r["val_dice"]) for r in result.history)  # epoch 1 (planning) and the final one
    state = _state(tmp_path / "s" / "last.pt")
    assert math.isfinite(state["history"][-1]["val_dice"]) and "optimizer" in state
    assert state["best_epoch"] == result.best_epoch and _state(tmp_path / "s" / "best.pt")["epoch"] in (1, 2)
    assert not fit_module.validate_final(tmp_path / "s", phantoms, cache_dir)  # already validated


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_resume_reaches_the_same_state_as_an_uninterrupted_run(phantoms, cache_dir, tmp_path) -> None:
    train = _tiny(epochs=2, iters_per_epoch=2, val_every=2, val_max_cases=1)
    kw = dict(cache_dir=cache_dir, progress=False)
    straight = fit(phantoms[:4], phantoms[4:], preset("tiny"), train, tmp_path / "a", **kw)
    first = fit(phantoms[:4], phantoms[4:], preset("tiny"), train, tmp_path / "b", stop_after=1, **kw)
    assert first.status == "stopped" and first.epochs_done == 1
    torch.manual_seed(12345)  # a resumed process starts from unrelated global RNG states
    np.random.seed(999)  # noqa: NPY002
    resumed = fit(phantoms[:4], phantoms[4:], preset("tiny"), train, tmp_path / "b", resume=True, **kw)
    assert resumed.status == "finished" and straight.epochs_done == resumed.epochs_done == 2
    a, b = _state(tmp_path / "a" / "last.pt"), _state(tmp_path / "b" / "last.pt")
    for key in a["net"]:
        assert torch.equal(a["net"][key], b["net"][key]), key
    for key, value in a["optimizer"]["state"].items():
        assert torch.equal(value["exp_avg"], b["optimizer"]["state"][key]["exp_avg"])
    assert a["scheduler"] == b["scheduler"]
    for key in ("loss", "loss_lesion"):
        np.testing.assert_array_equal([r[key] for r in a["history"]], [r[key] for r in b["history"]])
    assert a["history"][-1]["val_dice"] == b["history"][-1]["val_dice"] or (
        math.isnan(a["history"][-1]["val_dice"]) and math.isnan(b["history"][-1]["val_dice"])
    )
    assert (tmp_path / "b" / "curves.png").stat().st_size > 1000
    assert len((tmp_path / "b" / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs


def test_changed_recipe_refuses_to_resume(phantoms, cache_dir, tmp_path) -> None:
    fit(
        phantoms[:2],
        [],
        preset("tiny"),
        _tiny(epochs=2, iters_per_epoch=1),
        tmp_path / "r",
        cache_dir=cache_dir,
        progress=False,
        stop_after=1,
    )
    with pytest.raises(SystemExit, match=r"different training settings: lr 0\.0002 \(now 0\.001\)"):
        fit(
            phantoms[:2],
            [],
            preset("tiny"),
            _tiny(epochs=2, iters_per_epoch=1, lr=1e-3),
            tmp_path / "r",
            cache_dir=cache_dir,
            progress=False,
            resume=True,
        )


def test_crop_dataset_serves_finite_batches(phantoms, cache_dir) -> None:
    store = CaseStore(phantoms, preset("tiny"), cache_dir)
    store.ensure_all()
    for train in (_tiny(), train_preset("demo").with_(batch_size=2, samples_per_volume=2)):
        ds = CropDataset(store, [p.case_id for p in phantoms[:4]], preset("tiny"), train)
        ds.set_draws([0, 1, 2, 3])
        for i in range(4):
            crops = ds[i]
            assert len(crops) == train.samples_per_volume
            for c in crops:
                assert c["pet"].shape == (1, 32, 32, 32) and torch.isfinite(c["pet"]).all()
                assert set(torch.unique(c["label"]).tolist()) <= {0.0, 1.0}
    pet, label, meta = store.load(phantoms[0].case_id)
    assert pet.dtype == np.float32 and 0.0 <= pet.min() and pet.max() <= 1.0 and label.dtype == np.uint8
    assert meta["lesion_voxels"] > 0


def test_float16_cache_is_separate_close_and_serves_float32(phantoms, cache_dir, tmp_path) -> None:
    """--cache-dtype float16: its own cache folder, PET within float16 rounding of the float32 cache,
    and crops and validation volumes still reach the network as float32."""
    from training.fit import validate

    full = CaseStore(phantoms[:3], preset("tiny"), cache_dir)
    half = CaseStore(phantoms[:3], preset("tiny"), tmp_path / "half", dtype="float16")
    assert full.folder.name != half.folder.name
    assert CaseStore(phantoms[:3], preset("tiny"), tmp_path / "x").folder.name == full.folder.name  # key unchanged
    half.ensure_all()
    for src in phantoms[:3]:
        (a, la, ma), (b, lb, mb) = full.load(src.case_id, mmap=False), half.load(src.case_id, mmap=False)
        assert b.dtype == np.float16 and mb["dtype"] == "float16"
        assert np.abs(a - b.astype(np.float32)).max() <= 5e-4 and np.array_equal(la, lb)
        assert ma["lesion_voxels"] == mb["lesion_voxels"]
    for train in (_tiny(), train_preset("demo").with_(batch_size=2, samples_per_volume=2)):
        ds = CropDataset(half, [p.case_id for p in phantoms[:3]], preset("tiny"), train)
        ds.set_draws([0, 1, 2])
        assert all(c["pet"].dtype == torch.float32 for i in range(3) for c in ds[i])
    net = build_network(preset("tiny"))
    ids = [p.case_id for p in phantoms[:2]]
    a, b = (validate(net, store, ids, preset("tiny"), "cpu") for store in (full, half))
    assert a["val_cases"] == b["val_cases"] == 2 and np.isfinite(b["val_fpv_ml"])
    with pytest.raises(ValueError, match="cache dtype"):
        CaseStore(phantoms[:1], preset("tiny"), tmp_path / "bad", dtype="int8")


def test_parallel_prepare_writes_the_same_cache_and_names_a_bad_file(phantoms, tmp_path) -> None:
    """prepare --workers N: the same arrays as one process; a broken study stops it with its path."""
    serial = CaseStore(phantoms[:3], preset("tiny"), tmp_path / "serial")
    serial.ensure_all()
    parallel = CaseStore(phantoms[:3], preset("tiny"), tmp_path / "parallel")
    parallel.ensure_all(workers=2)
    for src in phantoms[:3]:
        a, b = serial.load(src.case_id, mmap=False), parallel.load(src.case_id, mmap=False)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]

    broken = tmp_path / "broken" / "SUV.nii.gz"
    broken.parent.mkdir()
    broken.write_bytes(b"not a NIfTI file")
    sources = [*phantoms[:2], Case("BROKEN_0", broken, label=phantoms[0].label)]
    store = CaseStore(sources, preset("tiny"), tmp_path / "with_broken")
    with pytest.raises(Exception, match="broken/SUV.nii.gz"):
        store.ensure_all(workers=2)
    assert not store.is_cached("BROKEN_0")
    assert not [p for p in store.folder.iterdir() if ".tmp" in p.name]  # only whole cases are left


def test_killed_run_leaves_a_loadable_checkpoint_and_resumes(phantoms, cache_dir, tmp_path) -> None:
    """SIGKILL in the middle of training: last.pt is whole (atomic rename) and --resume continues."""
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, torch\n"
        "torch.set_num_threads(1)\n"
        "from pathlib import Path\n"
        "from model.config import preset\nfrom common.cases import Case\n"
        "from training.fit import fit\nfrom training.recipe import train_preset\n"
        f"src = [Case(c, Path(p), label=Path(l)) for c, p, l in {[(s.case_id, str(s.pet), str(s.label)) for s in phantoms[:4]]!r}]\n"  # noqa: E501
        "train = train_preset('tiny').with_(epochs=200, iters_per_epoch=1)\n"
        f"fit(src, [], preset('tiny'), train, Path({str(tmp_path / 'k')!r}),\n"
        f"    cache_dir=Path({str(cache_dir)!r}),\n"
        "    resume=len(sys.argv) > 1, progress=False, stop_after=2 if len(sys.argv) > 1 else None)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    last = tmp_path / "k" / "last.pt"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and (not last.is_file() or _state(last)["epoch"] < 3):
            time.sleep(0.2)
        time.sleep(0.37)  # land somewhere inside a later epoch or save
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    state = _state(last)  # must load: never half-written
    killed_at = state["epoch"]
    assert killed_at >= 3
    subprocess.run([sys.executable, str(script), "resume"], check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    assert _state(last)["epoch"] == killed_at + 2


def test_export_round_trips_through_the_predictor(phantoms, cache_dir, tmp_path) -> None:
    from model import Predictor
    from model.manifest import read_manifest, verify_manifest
    from training.export import export

    runs = tmp_path / "runs"
    for fold in (0, 1):
        fit(
            phantoms[:3],
            phantoms[4:5] if fold == 0 else [],  # fold 1 never validates: it has no best.pt
            preset("tiny"),
            _tiny(epochs=1, iters_per_epoch=1, seed=fold),
            runs / f"fold{fold}",
            cache_dir=cache_dir,
            progress=False,
            fold=fold,
            data_info={"what": "test"},
        )
    weights = tmp_path / "weights"
    export(runs, weights, folds=(0, 1), which=["best", "last"], description="tiny test")
    assert [p.name for p in verify_manifest(weights)] == ["fold0.pt", "fold1.pt"]
    manifest = read_manifest(weights)
    assert manifest["preset"] == "tiny" and manifest["models"][1]["fold"] == 1
    assert [m["checkpoint"] for m in manifest["models"]] == ["best", "last"]
    assert manifest["models"][0]["data"] == {"what": "test"} and manifest["models"][0]["epochs"] == 1
    saved = _state(weights / "fold0.pt")
    assert "optimizer" not in saved and saved["fold"] == 0
    trained = _state(runs / "fold0" / "best.pt")
    assert all(torch.equal(trained["net"][k], saved["net"][k]) for k in trained["net"])
    predictor = Predictor.from_weights(weights, device="cpu")
    assert len(predictor.networks) == 2
    pet = sitk.ReadImage(str(phantoms[0].pet))
    mask = predictor.predict(pet)
    assert mask.GetSize() == pet.GetSize() and mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetOrigin() == pytest.approx(pet.GetOrigin())

    # --dtype float16: half the bytes, the same weights to float16 rounding, loaded into float32 networks
    half = tmp_path / "weights16"
    export(runs, half, folds=(0, 1), which=["best", "last"], description="tiny test", dtype="float16")
    assert [p.name for p in verify_manifest(half)] == ["fold0.pt", "fold1.pt"]
    entries = read_manifest(half)["models"]
    assert [m["weights_dtype"] for m in entries] == ["float16"] * 2
    assert read_manifest(weights)["models"][0]["weights_dtype"] == "float32"
    stored = _state(half / "fold0.pt")
    assert stored["weights_dtype"] == "float16" and stored["fold"] == 0
    assert all(v.dtype == torch.float16 for v in stored["net"].values() if v.is_floating_point())
    assert all(torch.equal(trained["net"][k].half(), stored["net"][k]) for k in trained["net"])
    assert entries[0]["bytes"] < 0.6 * read_manifest(weights)["models"][0]["bytes"]
    predictor16 = Predictor.from_weights(half, device="cpu")
    assert all(p.dtype == torch.float32 for net in predictor16.networks for p in net.parameters())
    scores, scores16 = predictor.predict_scores(pet), predictor16.predict_scores(pet)
    inside = scores > -1000  # the -1e4 fill outside the body crop
    spread = scores[inside].max() - scores[inside].min()
    assert np.abs(scores - scores16).max() < 0.01 * spread  # rounding (0.08 % seen), not another network
    changed = sitk.GetArrayViewFromImage(predictor16.predict(pet)) != sitk.GetArrayViewFromImage(mask)
    assert changed.mean() < 1e-3
    with pytest.raises(ValueError, match="dtype"):
        export(runs, tmp_path / "bad", folds=(0,), which="last", dtype="int8")


def test_full_validation_scores_every_fold_case_and_reaches_the_manifest(phantoms, cache_dir, tmp_path) -> None:
    import json

    from model.manifest import read_manifest
    from training.export import export
    from training.fit import validate_full

    runs = tmp_path / "runs"
    val = phantoms[3:6]
    fit(phantoms[:3], val, preset("tiny"), _tiny(epochs=1, iters_per_epoch=1, val_max_cases=1), runs / "fold0",
        cache_dir=cache_dir, progress=False, fold=0)
    during = _state(runs / "fold0" / "last.pt")["history"][-1]
    assert during["val_cases"] == 1  # training looked at one case only
    full = validate_full(runs / "fold0", phantoms, [v.case_id for v in val], cache_dir, "cpu")
    assert full["val_cases"] == 3 and full["epoch"] == 1
    written = json.loads((runs / "fold0" / "val_full.json").read_text())
    assert written["val_cases"] == 3 and sorted(written["cases"]) == sorted(v.case_id for v in val)
    rows = written["cases"].values()
    assert written["val_fpv_ml"] == pytest.approx(sum(r["fpv_ml"] for r in rows) / 3)
    lesion_dice = [r["dice"] for r in rows if r["has_lesion"]]
    assert lesion_dice and written["val_dice"] == pytest.approx(sum(lesion_dice) / len(lesion_dice))
    assert all(r["dice"] in (None, 0.0) for r in rows if not r["has_lesion"])  # null: nothing to compare
    export(runs, tmp_path / "w_last", folds=(0,), which="last")
    entry = read_manifest(tmp_path / "w_last")["models"][0]
    assert entry["val_full_cases"] == 3 and entry["val_cases"] == 1
    assert entry["val_full_fpv_ml"] == pytest.approx(full["val_fpv_ml"])
    with pytest.raises(ValueError, match="wrong splits file or fold"):  # training validated a case not listed
        validate_full(runs / "fold0", phantoms, [v.case_id for v in phantoms[:3]], cache_dir, "cpu")
    fit(phantoms[:3], val, preset("tiny"), _tiny(epochs=1, iters_per_epoch=1, val_max_cases=1, seed=5),
        runs / "fold0", cache_dir=cache_dir, progress=False, fold=0)  # trained again: val_full.json is stale
    export(runs, tmp_path / "w_again", folds=(0,), which="last")
    assert "val_full_cases" not in read_manifest(tmp_path / "w_again")["models"][0]


def test_revalidation_reads_the_cache_dtype_the_fold_trained_on(phantoms, tmp_path) -> None:
    """A fold trained on a float16 cache records it in last.pt; validating it again without naming
    the dtype uses that cache rather than preprocessing every study into a new float32 one."""
    from training.cli import build_parser
    from training.fit import _trained_cache_dtype, validate_full

    cache = tmp_path / "cache"
    fit(phantoms[:2], phantoms[3:4], preset("tiny"), _tiny(epochs=1, iters_per_epoch=1), tmp_path / "fold0",
        cache_dir=cache, cache_dtype="float16", progress=False, fold=0)
    state = _state(tmp_path / "fold0" / "last.pt")
    assert state["cache_dtype"] == "float16"
    assert _trained_cache_dtype({k: v for k, v in state.items() if k != "cache_dtype"}) == "float32"  # older files
    before = sorted(p.name for p in cache.iterdir())
    full = validate_full(tmp_path / "fold0", phantoms, [phantoms[3].case_id], cache, "cpu")
    assert full["val_cases"] == 1 and sorted(p.name for p in cache.iterdir()) == before  # no float32 cache made
    args = build_parser().parse_args(["revalidate", "--data", "d", "--out", "o"])
    assert args.cache_dtype is None  # so cmd_revalidate passes None: the recorded dtype


@pytest.mark.parametrize("command", ["prepare", "fit", "cv", "revalidate", "export", "plot"])
def test_cli_help(command: str) -> None:
    from training.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0


@pytest.mark.parametrize(
    ("flags", "expected"), [([], True), (["--no-dice-batch"], False), (["--preset", "paper"], False),
                            (["--preset", "paper", "--dice-batch"], True)]
)
def test_cli_dice_batch_flag(flags: list[str], expected: bool) -> None:
    from training.cli import _train_config, build_parser

    args = build_parser().parse_args(
        ["fit", "--data", "d", "--out", "o", "--splits", "s.json", "--fold", "0", "--preset", "demo", *flags]
    )
    assert _train_config(args).dice_batch is expected


def test_export_of_a_run_missing_folds_says_which_in_one_line(tmp_path, capsys) -> None:
    """A run holding fold 0 only: a line naming the missing folds and --folds, no traceback, nothing written."""
    from training.cli import main

    (tmp_path / "run/fold0").mkdir(parents=True)
    (tmp_path / "run/fold0/last.pt").write_bytes(b"")  # only its presence is checked before loading
    code = main(["export", "--runs", str(tmp_path / "run"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"error: {tmp_path / 'run'}: no best.pt or last.pt for fold(s) 1, 2, 3, 4; "
                   "export those with --folds 0"]
    assert not (tmp_path / "out").exists()


def test_sliding_window_training_step_is_dicece_on_monais_stitched_output() -> None:
    """The paper's forward pass: the loss of a step is DiceCE on MONAI's sliding_window_inference of
    the crop (gaussian, the train overlap), and the gradients reach every parameter of the network."""
    from monai.inferers import sliding_window_inference

    from training.fit import train_step
    from training.recipe import make_train_inferer

    config = preset("tiny")  # 32^3 windows
    train = train_preset("tiny").with_(train_inferer="sliding", train_sw_overlap=0.25, train_sw_batch=3)
    torch.manual_seed(0)
    net = build_network(config)
    x = torch.rand(1, 1, 56, 48, 40)
    y = torch.zeros(1, 1, 56, 48, 40)
    y[0, 0, 20:30, 10:22, 15:25] = 1
    loss_fn = make_loss(train)
    with torch.no_grad():
        stitched = sliding_window_inference(x, config.roi_size, 3, net, overlap=0.25, mode="gaussian",
                                            sigma_scale=config.sigma_scale)
        expected = float(loss_fn(stitched, y))
        whole = float(loss_fn(net(x), y))

    grads: dict[str, torch.Tensor] = {}

    class Recording(torch.optim.SGD):
        def step(self, closure=None):  # noqa: ANN001 - torch's signature
            grads.update({n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None})
            return super().step(closure)

    opt = Recording(net.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = train_step(net, {"pet": x, "label": y}, loss_fn, opt, scaler, torch.device("cpu"), None,
                      inferer=make_train_inferer(config, train))
    assert step.applied
    assert step.loss == pytest.approx(expected, rel=1e-5)
    assert abs(step.loss - whole) > 1e-3  # the whole-crop pass gives another loss: the window was used
    names = [n for n, _ in net.named_parameters()]
    assert sorted(grads) == sorted(names)
    assert all(torch.isfinite(g).all() for g in grads.values())
    weights = [n for n in names if n.endswith("weight")]
    assert all(grads[n].abs().sum() > 0 for n in weights), [n for n in weights if grads[n].abs().sum() == 0]


def test_paper_preset_trains_through_the_sliding_window() -> None:
    from monai.inferers import SlidingWindowInferer

    from training.recipe import make_train_inferer

    inferer = make_train_inferer(preset("paper"), train_preset("paper"))
    assert isinstance(inferer, SlidingWindowInferer)
    assert (tuple(inferer.roi_size), inferer.overlap, inferer.mode, inferer.sw_batch_size) == ((128,) * 3, 0.25,
                                                                                                 "gaussian", 8)
    demo = make_train_inferer(preset("demo"), train_preset("demo"))  # the scaled equivalent: 2 x 2 x 2 windows
    assert (tuple(demo.roi_size), demo.overlap, preset("demo").crop_size) == ((64,) * 3, 0.25, (96,) * 3)
    assert make_train_inferer(preset("demo"), train_preset("demo").with_(train_inferer="simple")) is None


def test_lesion_balance_draws_lesion_crop_centres_per_lesion(phantoms, cache_dir) -> None:
    """Default: every lesion voxel once (the paper's per-voxel draw). Balanced: each 26-connected
    lesion's share of the pool is size**0.5 over the sum, counted here with cc3d."""
    store = CaseStore(phantoms, preset("tiny"), cache_dir)
    store.ensure_all()

    def lesion_sizes(case_id: str) -> np.ndarray:
        components = cc3d.connected_components(np.array(store.load(case_id)[1]), connectivity=26)
        return np.bincount(components.ravel())[1:]

    def size_ratio(case_id: str) -> float:
        sizes = lesion_sizes(case_id)
        return float(sizes.max() / sizes.min()) if len(sizes) > 1 else 0.0

    case = max((p.case_id for p in phantoms), key=size_ratio)
    label = np.array(store.load(case)[1])
    components = cc3d.connected_components(label, connectivity=26)
    sizes = np.bincount(components.ravel())[1:]
    assert len(sizes) >= 2 and sizes.max() > 4 * sizes.min(), sizes  # lesions of unlike sizes to balance
    demo = train_preset("demo")
    per_voxel = CropDataset(store, [case], preset("tiny"), demo).index[case][0]
    assert np.array_equal(per_voxel, np.flatnonzero(label))
    balanced = CropDataset(store, [case], preset("tiny"), demo.with_(lesion_balance=0.5)).index[case][0]
    drawn = np.bincount(components.ravel()[balanced], minlength=len(sizes) + 1)[1:] / len(balanced)
    weights = sizes * np.maximum(sizes, HOT_MIN_COMPONENT) ** -0.5
    np.testing.assert_allclose(drawn, weights / weights.sum(), atol=0.02)
    smallest = int(np.argmin(sizes))
    assert drawn[smallest] > sizes[smallest] / sizes.sum() + 0.02  # more than its voxels' share
    with pytest.raises(ValueError, match="lesion_balance"):
        demo.with_(lesion_balance=1.5)
    with pytest.raises(ValueError, match="lesion_balance"):
        _tiny(lesion_balance=0.5)  # the paper's sampler has no per-lesion draw


def test_cli_crop_size_sets_the_training_crop_and_refuses_sizes_the_network_cannot_take(phantoms, cache_dir) -> None:
    """--crop-size changes only the training crop (the same network, so warm starts and exports still fit);
    the crops served have that size; a size the strides do not divide is refused in one line."""
    from training.cli import _model_config, build_parser

    def args(*flags: str):
        return build_parser().parse_args(["fit", "--data", "d", "--out", "o", "--splits", "s.json", "--fold", "0",
                                          "--preset", "tiny", *flags])

    assert _model_config(args()).crop_size == preset("tiny").crop_size == (32, 32, 32)
    config = _model_config(args("--crop-size", "48", "48", "48"))  # cubic: the 90-degree rotations keep it
    assert config.crop_size == (48, 48, 48) and config.same_network(preset("tiny"))
    store = CaseStore(phantoms, config, cache_dir)
    store.ensure_all()
    ds = CropDataset(store, [p.case_id for p in phantoms[:2]], config, _tiny(samples_per_volume=2))
    ds.set_draws([0, 1])
    shapes = {tuple(c["pet"].shape) for i in range(2) for c in ds[i]} | {tuple(c["label"].shape) for c in ds[0]}
    assert shapes == {(1, 48, 48, 48)}
    with pytest.raises(SystemExit) as exc:
        _model_config(args("--crop-size", "30", "32", "32"))
    assert str(exc.value).startswith("error: --crop-size: ") and "divisible by" in str(exc.value)


def test_adjacent_share_centres_crops_on_lesion_voxels_beside_hot_uptake() -> None:
    """A lesion touching a hot organ and one far from it: the ``adjacent`` share centres crops only on
    the near lesion's voxels within 10 mm (4 mm voxels: 2.5 voxels) of the hot ball, measured by scipy's
    distance transform of the hot mask."""
    from scipy import ndimage

    grid = np.stack(np.meshgrid(*[np.arange(64)] * 3, indexing="ij"))
    ball = lambda c, r: ((grid - np.array(c)[:, None, None, None]) ** 2).sum(0) <= r * r  # noqa: E731
    hot, near, far = ball((32, 32, 20), 6), ball((32, 32, 31), 5), ball((32, 32, 52), 4)
    label = (near | far).astype(np.float32)
    pet = np.full((64, 64, 64), 0.05, np.float32)
    pet[hot | near | far] = 0.9
    adj_truth = (near | far) & (ndimage.distance_transform_edt(~hot, sampling=4.0) <= 10.0)
    train = train_preset("demo").with_(pos=0.0, neg=0.0, hot_neg=0.0, air=0.0, adjacent=1.0, hot_threshold=0.3)
    cropper = crop_transform(preset("demo").with_(crop_size=(32, 32, 32)), train.with_(samples_per_volume=100,
                                                                                        batch_size=100))
    cropper.set_random_state(seed=3)
    adj = np.flatnonzero(adj_truth.ravel())
    crops = cropper({"pet": pet[None], "label": label[None], "fg_idx": np.flatnonzero(label.ravel()),
                     "hot_idx": np.flatnonzero(hot.ravel()), "adj_idx": adj})
    centres = [tuple(int(v) for v in c["crop_center"]) for c in crops]
    assert all(adj_truth[c] for c in centres) and not any(far[c] for c in centres)
    assert 0 < adj_truth.sum() < near.sum()  # only the near lesion's side facing the organ


def test_adjacent_pool_is_the_lesion_voxels_near_other_hot_uptake(tmp_path) -> None:
    """CropDataset's adjacent pool against a brute-force nearest-neighbour distance (k-d trees over the
    voxels' millimetre positions): lesion voxels within 15 mm of hot voxels that lie more than two
    voxels from the lesion (its own blurred rim is not a neighbour). A lesion beside a hot ball has
    some; a lesion alone, with a hot rim of its own, has none."""
    from scipy.spatial import cKDTree

    grid = np.stack(np.meshgrid(*[np.arange(48)] * 3, indexing="ij"))
    ball = lambda c, r: ((grid - np.array(c)[:, None, None, None]) ** 2).sum(0) <= r * r  # noqa: E731
    organ, near, alone = ball((24, 24, 10), 6), ball((24, 24, 21), 5), ball((10, 10, 38), 4)
    label = (near | alone).astype(np.uint8)
    pet = np.full(label.shape, 0.05, np.float32)
    pet[organ | near | alone] = 3.0
    pet[ball((10, 10, 38), 5) & ~alone] = 2.0  # a hot rim around the lone lesion, as blur makes it
    cases = []
    for name, image in (("SUV", pet), ("SEG", label)):
        img = sitk.GetImageFromArray(np.ascontiguousarray(image.transpose(2, 1, 0)))
        img.SetSpacing((4.0, 4.0, 4.0))
        sitk.WriteImage(img, str(tmp_path / f"{name}.nii.gz"))
    cases.append(Case("c", tmp_path / "SUV.nii.gz", label=tmp_path / "SEG.nii.gz"))
    config = preset("demo").with_(crop_size=(32, 32, 32))
    train = train_preset("demo").with_(adjacent=0.3)
    store = CaseStore(cases, config, tmp_path / "cache")
    dataset = CropDataset(store, ["c"], config, train)
    pet_w, label_w, _ = store.load("c", mmap=False)
    spacing = np.asarray(config.spacing)
    lesion = np.argwhere(label_w > 0)
    hot = np.argwhere((pet_w > train.hot_threshold) & (label_w == 0))
    far = cKDTree(lesion * spacing).query(hot * spacing)[0] > 2 * spacing.max()
    near_hot = cKDTree(hot[far] * spacing).query(lesion * spacing)[0] <= train.adjacent_mm
    truth = np.sort(np.ravel_multi_index(lesion[near_hot].T, label_w.shape))
    pool = np.sort(dataset.index["c"][2])
    assert np.array_equal(pool, truth) and len(truth) > 0
    lone = np.unravel_index(pool, label_w.shape)[2] > 30  # the lone lesion lies at z 38
    assert not lone.any()


def test_a_shared_cache_serves_each_dataset_its_own_case(tmp_path) -> None:
    """Two datasets with a case of the same id in one --cache-dir (e.g. standard and wide phantoms both
    PHANTOM00000_0): each store serves the arrays of its own files, organ map included, as a cache of its
    own would, however the two take turns."""
    first = write_tcia_phantoms(tmp_path / "a", [0])[0]
    second = write_tcia_phantoms(tmp_path / "b", [2])[0]
    second = Case(first.case_id, second.pet, label=second.label, organs=second.organs)  # same id, other files
    shared = tmp_path / "shared"
    for case in (first, second, first):
        served = CaseStore([case], preset("tiny"), shared)
        alone = CaseStore([case], preset("tiny"), tmp_path / f"alone-{case.pet.parents[2].name}")
        pet, label, _ = served.load(case.case_id, mmap=False)
        ref_pet, ref_label, _ = alone.load(case.case_id, mmap=False)
        assert np.array_equal(pet, ref_pet) and np.array_equal(label, ref_label)
        assert np.array_equal(served.load_organs(case.case_id, mmap=False),
                              alone.load_organs(case.case_id, mmap=False))
    assert not np.array_equal(CaseStore([first], preset("tiny"), shared).load(first.case_id, mmap=False)[0],
                              CaseStore([second], preset("tiny"), tmp_path / "alone-b").load(first.case_id,
                                                                                              mmap=False)[0])
