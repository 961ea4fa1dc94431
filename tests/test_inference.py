"""The fast inference path against MONAI's own pipeline, on grids of every kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from model import Predictor
from model.config import paper_config, tiny_config
from model.cropping import BACKGROUND_SCORE, at_least_roi, grid_aligned_box
from model.ensemble import vote
from model.manifest import write_manifest
from model.masks import dice
from model.network import CheckpointError, build_network, load_checkpoint, save_checkpoint
from model.preprocessing import Orientation, percentile_scale, percentiles
from model.window_grid import count_windows, window_step
from tests.conftest import HOTSPOT_WEIGHTS, body_with_lesion, centroid_mm
from tests.reference_pipeline import reference_predict

#: MONAI's DynUNet with the authors' arguments (facts.md: 31.0 M parameters).
PAPER_PARAMETERS = 30_999_490
#: Dice of the fast body crop (no extra context) against 'exact' with the fixture network, measured
#: 0.9946 (1380 vs 1395 voxels); below 0.99 the fast crop has changed.
FAST_DICE_MEASURED = 0.99

GRIDS = {
    "identity": dict(direction=None, spacing=(4.0, 4.0, 4.0)),
    "flipped": dict(direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1), spacing=(4.0, 4.0, 4.0)),
    "permuted-anisotropic": dict(direction=(0, 1, 0, 0, 0, -1, -1, 0, 0), spacing=(3.0, 4.5, 5.0)),
    "ras-like-fine": dict(direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1), spacing=(2.0364, 2.0364, 3.0)),
}


def as_xyz(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing()
            and a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection())


@pytest.mark.parametrize("name", ["identity", "flipped", "permuted-anisotropic"])
def test_agrees_with_monai_pipeline(name, tmp_path):
    """Same random networks, same volume: our masks and scores equal MONAI's."""
    torch.manual_seed(1)
    config = tiny_config()
    nets = [build_network(config).eval() for _ in range(3)]
    grid = GRIDS[name]
    size = (40, 36, 30) if name != "permuted-anisotropic" else (50, 30, 26)
    pet, _ = body_with_lesion(size=size, **grid)
    path = tmp_path / "pet.mha"
    sitk.WriteImage(pet, str(path))

    ref_mask, ref_scores = reference_predict(path, nets, config, sw_batch_size=4, return_scores=True)
    predictor = Predictor(nets, config, device="cpu", crop="none")
    ours = as_xyz(predictor.predict(pet))
    scores = predictor.predict_scores(pet)

    assert ours.shape == ref_mask.shape
    assert 0.05 < ref_mask.mean() < 0.95  # the comparison says something
    assert dice(ours, ref_mask) >= 0.999
    assert np.abs(scores - ref_scores).max() < 1e-3
    assert predictor.last_info.resampled == (grid["spacing"] != config.spacing)


def test_percentiles_match_numpy_and_monai():
    from monai.transforms import ScaleIntensityRangePercentiles

    rng = np.random.default_rng(0)
    array = rng.gamma(1.5, 2.0, size=(37, 41, 29)).astype(np.float32)
    lo, hi = percentiles(array, 0.05, 99.95)
    assert np.allclose([lo, hi], np.percentile(array, [0.05, 99.95]), rtol=1e-6)
    monai = ScaleIntensityRangePercentiles(0.05, 99.95, 0.0, 1.0, clip=True)(array[None])[0]
    assert np.allclose(percentile_scale(array), np.asarray(monai), atol=1e-6)


@pytest.mark.parametrize("name", list(GRIDS))
def test_geometry_and_physical_position(name, hotspot_predictor):
    """The mask has the input's exact geometry and the lesion where it physically is."""
    grid = GRIDS[name]
    size = tuple(int(round(190 / s)) for s in grid["spacing"])
    if grid["direction"] and grid["direction"][1] == 1:  # permuted axes: the sizes move with them
        size = (size[0], size[1], size[2])
    pet, lesion = body_with_lesion(size=size, **grid)
    mask = hotspot_predictor.predict(pet)
    assert same_geometry(mask, pet)
    assert mask.GetPixelID() == sitk.sitkUInt8
    values = np.unique(sitk.GetArrayViewFromImage(mask))
    assert set(values.tolist()) <= {0, 1} and 1 in values
    assert np.linalg.norm(centroid_mm(mask) - lesion) < 1.5 * max(grid["spacing"])


def paper_windowed_pet(size=(160, 144, 136), spacing=(4.0, 4.0, 4.0), seed=0) -> sitk.Image:
    """A PET whose body fills the field of view (as a whole-body scan's does), with two hot balls."""
    rng = np.random.default_rng(seed)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1).astype(np.float32)
    values = 1.0 + rng.normal(0, 0.1, size).astype(np.float32)
    for centre, radius in (((50, 60, 40), 9), ((110, 90, 100), 14)):
        values += 5.0 * (np.linalg.norm(idx - np.array(centre, np.float32), axis=-1) <= radius)
    pet = sitk.GetImageFromArray(np.ascontiguousarray(values.transpose(2, 1, 0)))
    pet.SetSpacing(spacing)
    pet.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, -1))
    return pet


def test_default_mode_equals_monai_at_the_paper_windowing(tmp_path):
    """roi 128, overlap 0.75, sigma 0.125, the paper's depth and strides: the default is the authors' chain."""
    config = paper_config().with_(filters=(2, 4, 4, 4, 4, 4), spacing=(4.0, 4.0, 4.0), name="paper-small")
    assert (config.roi_size, config.overlap, config.sigma_scale) == ((128,) * 3, 0.75, 0.125)
    torch.manual_seed(3)
    nets = [build_network(config).eval() for _ in range(3)]
    pet = paper_windowed_pet()
    path = tmp_path / "pet.mha"
    sitk.WriteImage(pet, str(path))

    ref_mask, ref_scores = reference_predict(path, nets, config, sw_batch_size=4, return_scores=True)
    predictor = Predictor(nets, config, device="cpu")
    assert predictor.crop == "exact"
    scores = predictor.predict_scores(pet)
    mask = as_xyz(predictor.predict(pet))

    assert predictor.last_info.windows == predictor.last_info.windows_uncropped == 8  # overlapping windows
    assert 0.01 < ref_mask.mean() < 0.99  # the comparison says something
    assert dice(mask, ref_mask) >= 0.999
    assert np.abs(scores - ref_scores).max() < 1e-3


def test_exact_crop_keeps_the_uncropped_scores_in_the_body(hotspot_predictor):
    """A small body in a wide field of view: 'exact' computes fewer windows and the same scores."""
    pet, _ = body_with_lesion(size=(140, 120, 64), spacing=(4.0, 4.0, 4.0), lesion_radius_mm=28.0)
    nets, config = hotspot_predictor.networks, hotspot_predictor.config
    full = Predictor(nets, config, device="cpu", crop="none")
    full_scores = full.predict_scores(pet)
    assert (full_scores > 0).any()
    exact = Predictor(nets, config, device="cpu", crop="exact")
    exact_scores = exact.predict_scores(pet)
    inside = exact_scores != BACKGROUND_SCORE
    assert exact.last_info.windows < full.last_info.windows
    assert np.abs(exact_scores - full_scores)[inside].max() < 1e-4
    assert not (full_scores[~inside] > 0).any()  # the fixture network marks nothing in the air
    assert np.array_equal(as_xyz(exact.predict(pet)), as_xyz(full.predict(pet)))


def test_fast_body_crop_computes_fewer_windows(hotspot_predictor):
    pet, _ = body_with_lesion(size=(140, 120, 64), spacing=(4.0, 4.0, 4.0), lesion_radius_mm=28.0)
    nets, config = hotspot_predictor.networks, hotspot_predictor.config
    exact = Predictor(nets, config, device="cpu", crop="exact")
    reference = as_xyz(exact.predict(pet))
    body = Predictor(nets, config, device="cpu", crop="body", context_mm=0.0)
    fast = as_xyz(body.predict(pet))
    assert body.last_info.windows < exact.last_info.windows
    assert fast.sum() > 0 and dice(fast, reference) >= FAST_DICE_MEASURED


def _monai_window_starts(shape, roi, overlap):
    """Window corners as MONAI's SlidingWindowInferer computes them (its own helpers)."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    padded = [max(n, r) for n, r in zip(shape, roi, strict=True)]
    interval = _get_scan_interval(padded, roi, len(roi), [overlap] * len(roi))
    return {tuple(sl.start for sl in win) for win in dense_patch_slices(padded, roi, interval)}


@pytest.mark.parametrize("seed", range(8))
def test_body_crop_windows_are_windows_of_the_uncropped_run(seed):
    """Every window MONAI visits inside a grid-aligned crop is one it visits in the whole volume."""
    rng = np.random.default_rng(seed)
    roi, overlap = (64, 48, 32), (0.75, 0.5, 0.6, 0.25)[seed % 4]
    # one axis no longer than its window on some draws; boxes that reach the volume's end on others
    shape = tuple(int(rng.integers(r // 2 if seed % 2 else r + 1, 5 * r)) for r in roi)
    lo = [int(rng.integers(0, n - 2)) for n in shape]
    box = tuple(slice(a, n if seed % 3 == 0 else int(rng.integers(a + 1, n + 1)))
                for a, n in zip(lo, shape, strict=True))
    grown = at_least_roi(box, shape, roi)
    aligned = grid_aligned_box(grown, shape, roi, overlap)
    for sl, big, n, r in zip(aligned, grown, shape, roi, strict=True):
        assert sl.start <= big.start and sl.stop >= big.stop and 0 <= sl.start and sl.stop <= n
        step = window_step(r, overlap)
        assert big.start - sl.start < step and (sl.stop == n or sl.stop - big.stop < step)
    whole = _monai_window_starts(shape, roi, overlap)
    crop_shape = [sl.stop - sl.start for sl in aligned]
    inside = {tuple(sl.start + c for sl, c in zip(aligned, corner, strict=True))
              for corner in _monai_window_starts(crop_shape, roi, overlap)}
    assert inside <= whole, sorted(inside - whole)[:3]


def test_input_smaller_than_roi_is_padded(hotspot_predictor):
    pet, _ = body_with_lesion(size=(12, 9, 7), spacing=(4.0, 4.0, 4.0), lesion_offset_mm=(0, 0, 0))
    mask = hotspot_predictor.predict(pet)
    assert same_geometry(mask, pet)


def test_nonfinite_and_flat_inputs(hotspot_predictor):
    pet, lesion = body_with_lesion(size=(48, 44, 56))
    clean = as_xyz(hotspot_predictor.predict(pet))
    arr = sitk.GetArrayFromImage(pet)
    arr[0, 0, :5] = np.nan
    arr[1, 2, 3] = np.inf
    arr[2, 2, 3] = -np.inf
    dirty = sitk.GetImageFromArray(arr)
    dirty.CopyInformation(pet)
    out = as_xyz(hotspot_predictor.predict(dirty))
    assert hotspot_predictor.last_info.nonfinite_voxels == 7
    assert dice(out, clean) >= 0.99

    flat = sitk.Image(pet.GetSize(), sitk.sitkFloat32)
    flat.CopyInformation(pet)
    empty = hotspot_predictor.predict(flat)
    assert same_geometry(empty, pet)
    assert sitk.GetArrayViewFromImage(empty).max() == 0


def test_integer_pet_is_accepted(hotspot_predictor):
    pet, _ = body_with_lesion(size=(48, 44, 56))
    as_int = sitk.Cast(pet * 1000, sitk.sitkInt16)
    mask_int = as_xyz(hotspot_predictor.predict(as_int))
    mask_float = as_xyz(hotspot_predictor.predict(pet))
    assert dice(mask_int, mask_float) >= 0.99


def test_majority_vote_on_constructed_scores():
    shape = (4,)
    # voxel 0: 3 of 5 lesion; voxel 1: 2 of 5; voxel 2: 5 of 5; voxel 3: none
    yes, no = 2.0, -2.0
    scores = np.array([
        [yes, yes, yes, no],
        [yes, yes, yes, no],
        [yes, no, yes, no],
        [no, no, yes, no],
        [no, no, yes, no],
    ], dtype=np.float32).reshape(5, *shape)
    assert vote(scores, "majority").tolist() == [True, False, True, False]
    # an even ensemble's tie is background (the authors' mean-then-round)
    assert vote(scores[:4, :2], "majority").tolist() == [True, False]
    assert not vote(np.array([[0.0]]), "majority")[0]  # a zero score is argmax background


@pytest.mark.parametrize("n_networks", [4, 5])
def test_majority_vote_equals_monai_vote_ensemble(n_networks):
    """The authors' vote is MONAI's VoteEnsemble over argmax masks; an even ensemble's ties included."""
    from monai.transforms import VoteEnsemble

    rng = np.random.default_rng(n_networks)
    scores = rng.normal(0, 1, size=(n_networks, 6, 7, 5)).astype(np.float32)
    masks = [torch.as_tensor(s > 0, dtype=torch.float32)[None] for s in scores]
    expected = VoteEnsemble()(masks)[0].numpy().astype(bool)
    votes = (scores > 0).sum(0)
    assert (votes * 2 == n_networks).any() == (n_networks % 2 == 0)  # ties present with four networks
    assert np.array_equal(vote(scores, "majority"), expected)


def test_soft_vote_uses_mean_probability():
    # two confident "no" against three weak "yes": majority says lesion, soft says background
    scores = np.array([[0.2], [0.2], [0.2], [-6.0], [-6.0]], dtype=np.float32)
    assert vote(scores, "majority")[0]
    assert not vote(scores, "soft")[0]
    assert vote(np.array([[4.0], [4.0], [-1.0]]), "soft")[0]


def test_orientation_round_trip():
    rng = np.random.default_rng(0)
    array = rng.random((3, 4, 5))
    for direction in [GRIDS[k]["direction"] or (1, 0, 0, 0, 1, 0, 0, 0, 1) for k in GRIDS]:
        o = Orientation.of(direction)
        assert np.array_equal(o.from_ras(o.to_ras(array)), array)


def test_window_count_matches_facts():
    # facts.md: 400x400x326 with a 128^3 ROI gives 64 / 180 / 800 windows at 0.25 / 0.5 / 0.75
    shape = (400, 400, 326)
    assert [count_windows(shape, (128,) * 3, o) for o in (0.25, 0.5, 0.75)] == [64, 180, 800]


def test_authors_checkpoint_format_loads(tmp_path):
    """The authors' files: {'net': state_dict, 'opt': ..., ...}, paper config unless config.json."""
    net = build_network(paper_config())
    folder = tmp_path / "authors"
    folder.mkdir()
    torch.save({"net": net.state_dict(), "opt": {"state": {}, "param_groups": []}, "lr": {"last_epoch": 3},
                "trainer": {"epoch": 400, "iteration": 1000}}, folder / "0.pt")
    loaded = load_checkpoint(folder / "0.pt")
    assert loaded.config == paper_config()
    assert sum(p.numel() for p in loaded.network.parameters()) == PAPER_PARAMETERS
    for a, b in zip(loaded.network.state_dict().values(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    small = tmp_path / "small"
    small.mkdir()
    tiny = build_network(tiny_config())
    for k in range(2):  # DDP-saved weights carry a 'module.' prefix
        torch.save({"net": {f"module.{n}": t for n, t in tiny.state_dict().items()}}, small / f"{k}.pt")
    (small / "config.json").write_text(tiny_config().to_json())
    predictor = Predictor.from_weights(small, device="cpu")
    assert len(predictor.networks) == 2 and predictor.config.name == "tiny"


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_checkpoint(corrupt)
    wrong = tmp_path / "wrong" / "0.pt"
    wrong.parent.mkdir()
    torch.save({"net": build_network(tiny_config()).state_dict()}, wrong)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(wrong)  # no config.json: the paper's network, which these weights don't fit
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint files"):
        Predictor.from_weights(tmp_path / "empty", device="cpu")


def test_manifest_is_checked(tmp_path):
    folder = tmp_path / "weights"
    save_checkpoint(folder / "fold0.pt", build_network(tiny_config()), tiny_config(), fold=0)
    save_checkpoint(folder / "fold1.pt", build_network(tiny_config()), tiny_config(), fold=1)
    write_manifest(folder, [{"file": "fold0.pt", "fold": 0}, {"file": "fold1.pt", "fold": 1}])
    assert len(Predictor.from_weights(folder, device="cpu").networks) == 2
    data = bytearray((folder / "fold1.pt").read_bytes())
    data[-10] ^= 0xFF
    (folder / "fold1.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fold1.pt.*sha256"):
        Predictor.from_weights(folder, device="cpu")
    (folder / "fold1.pt").unlink()
    with pytest.raises(CheckpointError, match="fold1.pt.*missing"):
        Predictor.from_weights(folder, device="cpu")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["models"][0]["sha256"]


def test_hotspot_fixture_is_a_project_checkpoint():
    loaded = load_checkpoint(HOTSPOT_WEIGHTS)
    assert loaded.config == tiny_config()


def test_tta_averages_flipped_logits(hotspot_predictor):
    """One window (volume = ROI): TTA's scores are the mean of the network on each flip, flipped back."""
    from model.sliding_window import sliding_window_scores

    net, config = hotspot_predictor.networks[0], hotspot_predictor.config
    rng = np.random.default_rng(0)
    volume = torch.as_tensor(rng.random(config.roi_size, dtype=np.float32))
    with torch.inference_mode():
        expected = torch.zeros(config.roi_size)
        flips = [(), (0,), (2,), (0, 2)]
        for dims in flips:
            x = torch.flip(volume, dims) if dims else volume
            logits = net(x[None, None])[0]
            diff = logits[1] - logits[0]
            expected += torch.flip(diff, dims) if dims else diff
        expected /= len(flips)
    got = sliding_window_scores(volume, [net], config, tta_axes=(0, 2))[0]
    plain = sliding_window_scores(volume, [net], config)[0]
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)  # the flips changed something


@pytest.mark.parametrize("budget, action, steps", [
    (300.0, "as asked", [((1, 2, 3, 4), "exact", (0, 1))]),
    (150.0, "test-time augmentation dropped", [((1, 2, 3, 4), "exact", ())]),
    (70.0, "fast body crop for the networks after the first", [((1, 2, 3, 4), "body", ())]),
    (55.0, "only 3 of 5 networks vote (fast body crop for the rest)", [((1, 2), "body", ())]),
    (40.0, "only 1 of 5 networks vote (fast body crop for the rest)", []),
])
def test_time_budget_gives_up_tta_then_the_exact_crop_then_networks(budget, action, steps):
    """First network: 4 mirrored passes over 100 windows in 40 s (0.1 s a pass), 45 s into the case.
    10 % of the budget is kept for the rest, so 0.9 * budget - 45 s is left for networks 1-4:
    as asked 160 s, without TTA 40 s, fast crop (20 windows) 8 s, 2 s a network after that."""
    from model.time_budget import Step, plan_rest

    planned, record = plan_rest(Step((0,), "exact", (0, 1)), 40.0, 45.0, budget, 5, windows=100, fast_windows=20)
    assert record["action"] == action
    assert [(s.networks, s.crop, s.tta_axes) for s in planned] == steps
    assert record["networks_run"] == 1 + sum(len(s.networks) for s in planned)


def test_time_budget_in_the_predictor(hotspot_predictor):
    """A budget nothing fits in: the first network alone votes, and the record says so."""
    pet, _ = body_with_lesion(size=(48, 44, 56))
    net, config = hotspot_predictor.networks[0], hotspot_predictor.config
    single = as_xyz(Predictor([net], config, device="cpu").predict(pet))
    rushed = Predictor([net, net, net], config, device="cpu", time_budget_s=1e-6)
    mask = as_xyz(rushed.predict(pet))
    assert np.array_equal(mask, single) and single.sum() > 0
    assert rushed.last_info.budget["action"] == "only 1 of 3 networks vote (fast body crop for the rest)"
    assert [s["networks"] for s in rushed.last_info.steps] == [[0]]
    relaxed = Predictor([net, net, net], config, device="cpu", time_budget_s=3600)
    assert np.array_equal(as_xyz(relaxed.predict(pet)), single)
    assert relaxed.last_info.budget["action"] == "as asked"
    assert [s["networks"] for s in relaxed.last_info.steps] == [[0], [1, 2]]
