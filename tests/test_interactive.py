"""Clicks as guidance channels: their encoding, where they land, and a click costing only its windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from model import Predictor
from model.config import preset
from model.guidance import NO_CLICKS, Clicks, GuidanceVolume, encode, support_radius, to_voxels
from model.network import load_checkpoint
from model.preprocessing import prepare
from tests.conftest import GRIDS, HOTSPOT_WEIGHTS, body_with_lesion

SHAPE = (23, 19, 27)
VOXELS = {"tumor": [(5, 6, 7), (8, 6, 9), (20, 17, 25)], "background": [(12, 3, 20)]}


def _config(kind: str, **changes):
    return preset("tiny").with_guidance(kind, **changes)


def test_edt_encoding_is_the_truncated_distance_transform():
    config = _config("edt", guidance_radius=6.0)
    channels = encode(VOXELS, SHAPE, config)
    for k, label in enumerate(("tumor", "background")):
        seeds = np.ones(SHAPE, bool)
        for v in VOXELS[label]:
            seeds[v] = False
        expected = np.clip(1.0 - ndimage.distance_transform_edt(seeds) / 6.0, 0.0, 1.0)
        np.testing.assert_allclose(channels[k], expected, atol=1e-6)


def test_gaussian_encoding_is_the_direct_gaussian_cut_at_four_sigma():
    sigma = 1.7
    channels = encode(VOXELS, SHAPE, _config("gaussian", guidance_sigma=sigma))
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1).astype(float)
    for k, label in enumerate(("tumor", "background")):
        expected = np.zeros(SHAPE)
        for v in VOXELS[label]:
            d2 = ((grid - np.asarray(v)) ** 2).sum(-1)
            expected = np.maximum(expected, np.where(d2 <= (4 * sigma) ** 2, np.exp(-d2 / (2 * sigma ** 2)), 0.0))
        np.testing.assert_allclose(channels[k], expected, atol=1e-6)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_disk_encoding_is_the_authors_thresholded_heatmap(sigma):
    """SW-FastEdit: an impulse smoothed by a Gaussian of ``sigma`` voxels, scaled to a maximum of 1,
    then 1 where above 0.1; here for one click, by scipy's Gaussian filter (truncated at 4 sigma)."""
    impulse = np.zeros(SHAPE)
    impulse[10, 9, 13] = 1.0
    heat = ndimage.gaussian_filter(impulse, sigma, truncate=4.0)
    expected = (heat / heat.max() > 0.1).astype(np.float32)
    ours = encode({"tumor": [(10, 9, 13)]}, SHAPE, _config("disk", guidance_sigma=sigma))[0]
    np.testing.assert_array_equal(ours, expected)
    assert support_radius(_config("disk", guidance_sigma=sigma)) == pytest.approx(sigma * math.sqrt(2 * math.log(10)))


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_a_click_lands_on_its_physical_voxel_of_the_working_grid(grid):
    """A click on a PET voxel goes to the working-grid voxel SimpleITK finds for the same physical point,
    through orientation and resampling; and the guidance channel, taken back with the undo, peaks there."""
    config = _config("gaussian", guidance_sigma=1.0)
    pet, _ = body_with_lesion(size=(40, 36, 44), **{k: v for k, v in GRIDS[grid].items() if v is not None})
    volume = prepare(pet, config.spacing, *config.percentiles)
    reference = volume.work_grid.reference()  # the working grid as an ITK image (LPS world)
    for index in [(3, 5, 7), (20, 18, 22), (39, 35, 43), (0, 0, 0)]:
        point = pet.TransformIndexToPhysicalPoint(index)
        ours = tuple(int(v) for v in to_voxels([point], volume.work_grid)[0])
        assert ours == reference.TransformPhysicalPointToIndex(point), (grid, index)
    index = (20, 18, 22)
    guidance = GuidanceVolume(config, volume.work_grid)
    guidance.add(Clicks(tumor=[pet.TransformIndexToPhysicalPoint(index)]))
    from model.cropping import find_region

    region = find_region(volume, "none", config.roi_size, config.overlap)
    back = volume.undo([(region, guidance.channels[:1])])
    on_pet = back.full(back.scores[0], 0.0)
    peak = np.unravel_index(np.argmax(on_pet), on_pet.shape)
    spacing = np.asarray(pet.GetSpacing())
    offset_mm = np.abs((np.asarray(peak) - index) * spacing)
    # the click moves to the nearest working voxel (half a working voxel), and back to the nearest input
    # voxel of that one's centre (half an input voxel)
    work_spacing = np.asarray(volume.work_grid.spacing)[np.argsort(volume.orientation.perm)]
    assert np.all(offset_mm <= work_spacing / 2 + spacing / 2 + 1e-6), (grid, offset_mm)
    if not volume.resampled:
        assert tuple(int(v) for v in peak) == index


def _clicking_predictor(roi: int, overlap: float, crop: str = "none") -> Predictor:
    """The hotspot test network reading clicks, its click weights made non-zero so that clicks matter."""
    from training.widen import with_click_channels

    loaded = load_checkpoint(HOTSPOT_WEIGHTS)
    config = loaded.config.with_guidance("disk", guidance_sigma=2.0, roi_size=(roi,) * 3, overlap=overlap)
    net = with_click_channels(loaded.network, loaded.config, config)
    with torch.no_grad():
        conv = net.input_block.conv1.conv.weight
        gen = torch.Generator().manual_seed(0)
        conv[:, 1:] = 3.0 * conv[:, :1].std() * torch.randn(conv[:, 1:].shape, generator=gen)
    return Predictor([net], config, device="cpu", crop=crop)


def test_no_clicks_through_the_cached_window_equal_monai_inferer():
    """With no clicks the cached sliding window (own blend) and MONAI's inferer give the same scores to
    float precision and the same mask."""
    predictor = _clicking_predictor(32, 0.5)
    pet, _ = body_with_lesion(size=(70, 44, 56))
    refined = predictor.refine(pet, NO_CLICKS)
    automatic = predictor.predict_scores(pet)[0]
    state = refined.state
    ours = state.volume.undo([(state.region, state.windows.result())]).full(
        state.volume.undo([(state.region, state.windows.result())]).scores[0], 0.0)
    np.testing.assert_allclose(ours, automatic, rtol=0, atol=1e-4 * float(np.abs(automatic).max()))
    assert np.array_equal(sitk.GetArrayFromImage(refined.mask), sitk.GetArrayFromImage(predictor.predict(pet)))


def test_a_new_click_recomputes_only_its_windows_and_equals_a_full_pass_at_the_paper_windowing():
    """roi 128, overlap 0.75: a click in a corner region runs a fraction of the windows, and the mask and
    scores are bit-for-bit those of computing everything afresh with all clicks."""
    predictor = _clicking_predictor(128, 0.75)
    pet, _ = body_with_lesion(size=(200, 64, 72))
    first = Clicks(tumor=[pet.TransformIndexToPhysicalPoint((100, 30, 30))])
    both = first.plus("background", pet.TransformIndexToPhysicalPoint((190, 32, 36)))
    step1 = predictor.refine(pet, first)
    step2 = predictor.refine(pet, both, previous=step1)
    fresh = predictor.refine(pet, both)
    assert step1.windows_run == step1.windows_total == fresh.windows_run
    assert 0 < step2.windows_run < step2.windows_total
    assert np.array_equal(step2.state.windows.result(), fresh.state.windows.result())
    assert np.array_equal(sitk.GetArrayFromImage(step2.mask), sitk.GetArrayFromImage(fresh.mask))
    # the clicks did something: the masks with and without them differ
    assert not np.array_equal(sitk.GetArrayFromImage(fresh.mask),
                              sitk.GetArrayFromImage(predictor.refine(pet, NO_CLICKS).mask))


def test_a_click_goes_to_the_deepest_voxel_of_the_largest_error_or_anywhere_in_it():
    from model.guidance import click_voxel

    error = np.zeros((30, 30, 30), bool)
    error[2:6, 2:6, 2:6] = True  # small component
    error[10:25, 12:20, 5:28] = True  # the largest
    voxel = click_voxel(error, "centre")
    labels, _ = ndimage.label(error, structure=np.ones((3, 3, 3)))
    largest = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    depth = ndimage.distance_transform_edt(np.pad(largest, 1))[1:-1, 1:-1, 1:-1]  # brute force over the volume
    assert largest[voxel] and depth[voxel] == depth.max()
    np.random.seed(0)  # noqa: NPY002
    assert all(error[click_voxel(error, "uniform")] for _ in range(20))
    assert click_voxel(np.zeros((4, 4, 4), bool), "centre") is None


def test_simulated_clicks_correct_the_network_s_own_errors():
    """A network that finds nothing gets a tumour click inside the missed lesion and none for background;
    one that marks everything gets a background click outside the lesion as well."""
    from training.clicks import ClickSimulator

    config = _config("disk", guidance_sigma=1.0)
    label = torch.zeros(1, 1, 24, 24, 24)
    label[0, 0, 8:16, 8:16, 8:16] = 1
    pet = torch.rand(1, 1, 24, 24, 24)

    def finds(value: float):
        def forward(x):
            out = torch.zeros(x.shape[0], 2, *x.shape[2:])
            out[:, 1] = value
            return out
        return forward

    simulator = ClickSimulator(config, rounds=1, random_rounds=False, where="centre")
    nothing = simulator.guidance(finds(-1.0), pet, label)
    assert nothing[0, 0].sum() > 0 and nothing[0, 1].sum() == 0
    assert (nothing[0, 0] > 0)[label[0, 0] == 0].sum() == 0  # the disk lies inside the lesion
    everything = simulator.guidance(finds(1.0), pet, label)
    assert everything[0, 0].sum() == 0 and everything[0, 1].sum() > 0


def test_an_interactive_fit_warm_starts_from_automatic_weights_and_refines(tmp_path):
    """The interactive recipe trains (clicks simulated every step) from the automatic hotspot network,
    and its checkpoint loads in Predictor and refines with a click."""
    from tests.test_training import write_tcia_phantoms
    from training.fit import fit
    from training.recipe import train_preset

    sources = write_tcia_phantoms(tmp_path / "tcia", [0, 1])
    config = load_checkpoint(HOTSPOT_WEIGHTS).config.with_guidance("disk")
    train = train_preset("tiny").with_(epochs=1, iters_per_epoch=2, click_rounds=2)
    result = fit(sources[:1], sources[1:], config, train, tmp_path / "run", cache_dir=tmp_path / "cache",
                 progress=False, init=HOTSPOT_WEIGHTS)
    assert result.epochs_done == 1
    predictor = Predictor.from_weights(tmp_path / "run" / "last.pt", device="cpu")
    assert predictor.config.interactive and predictor.config.in_channels == 3
    pet, centre = body_with_lesion(size=(48, 44, 56))
    refined = predictor.refine(pet, Clicks(tumor=[centre]))
    assert refined.mask.GetSize() == pet.GetSize() and len(refined.clicks) == 1


# -- the clicks file (autoPET IV) and the container ------------------------------------------------

def _clicks_json(points: list[tuple[list[int], str]]) -> str:
    import json

    return json.dumps({"version": {"major": 1, "minor": 0}, "type": "Multiple points",
                       "points": [{"point": p, "name": n} for p, n in points]})


@pytest.mark.parametrize("grid", ["identity", "permuted-anisotropic"])
def test_the_clicks_file_holds_voxel_indices_of_the_pet(tmp_path, grid):
    """autoPET IV's lesion-clicks.json: (x, y, z) indices of the PET's voxels; each becomes that voxel's
    physical point as SimpleITK computes it, whatever the PET's direction and spacing."""
    from runner.clicks_file import read_clicks

    pet, _ = body_with_lesion(size=(40, 36, 44), **{k: v for k, v in GRIDS[grid].items() if v is not None})
    path = tmp_path / "lesion-clicks.json"
    path.write_text(_clicks_json([([21, 17, 30], "tumor"), ([3, 4, 5], "background"), ([39, 35, 43], "tumor")]))
    clicks = read_clicks(path, pet)
    assert clicks.tumor == (pet.TransformIndexToPhysicalPoint((21, 17, 30)),
                            pet.TransformIndexToPhysicalPoint((39, 35, 43)))
    assert clicks.background == (pet.TransformIndexToPhysicalPoint((3, 4, 5)),)


@pytest.mark.parametrize("content, message", [
    (_clicks_json([([40, 1, 1], "tumor")]), "lies outside the PET's (40, 36, 44) voxels"),
    (_clicks_json([([1, 1, 1], "lesion")]), "is named 'lesion'; clicks are named 'tumor' or 'background'"),
    (_clicks_json([([1, 1], "tumor")]), "has no point of three numbers"),
    ('{"type": "Multiple boxes", "boxes": []}', "annotation type 'Multiple boxes'"),
    ("{not json", "not a readable JSON file"),
])
def test_a_bad_clicks_file_is_one_clear_line(tmp_path, content, message):
    from common.errors import InputError
    from runner.clicks_file import read_clicks

    pet, _ = body_with_lesion(size=(40, 36, 44))
    path = tmp_path / "lesion-clicks.json"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        read_clicks(path, pet)
    assert message in str(err.value) and str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_a_scribble_is_the_voxels_its_line_passes():
    from runner.clicks_file import rasterise

    voxels = rasterise([(0, 0, 0), (10, 5, 0), (10, 5, 6)])
    assert voxels[0] == (0, 0, 0) and voxels[-1] == (10, 5, 6) and (10, 5, 0) in voxels
    steps = np.abs(np.diff(np.asarray(voxels), axis=0))
    assert steps.max() == 1 and len(set(voxels)) == len(voxels)  # 26-connected, no voxel twice


def test_process_refines_a_case_with_a_clicks_file(tmp_path):
    """A case with lesion-clicks.json goes to the interactive network; the written mask is its refinement,
    under autoPET IV's output interface, and results.json counts the clicks."""
    import json

    import process
    from model.network import save_checkpoint

    predictor = _clicking_predictor(32, 0.5, crop="exact")
    save_checkpoint(tmp_path / "interactive.pt", predictor.networks[0], predictor.config)
    pet, centre = body_with_lesion(size=(48, 44, 56))
    (tmp_path / "input/images/pet").mkdir(parents=True)
    sitk.WriteImage(pet, str(tmp_path / "input/images/pet/case.mha"))
    index = pet.TransformPhysicalPointToIndex(centre)
    (tmp_path / "input/lesion-clicks.json").write_text(
        _clicks_json([(list(index), "tumor"), ([5, 5, 5], "background")]))
    code = process.main(["--input", str(tmp_path / "input"), "--output", str(tmp_path / "out"), "--weights",
                         str(HOTSPOT_WEIGHTS), "--interactive-weights", str(tmp_path / "interactive.pt"),
                         "--device", "cpu", "--output-slug", "tumor-lesion-segmentation"])
    assert code == 0
    written = sitk.ReadImage(str(tmp_path / "out/images/tumor-lesion-segmentation/case.mha"))
    clicks = Clicks(tumor=[pet.TransformIndexToPhysicalPoint(index)],
                    background=[pet.TransformIndexToPhysicalPoint((5, 5, 5))])
    expected = Predictor.from_weights(tmp_path / "interactive.pt", device="cpu").refine(pet, clicks).mask
    assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(expected))
    step = json.loads((tmp_path / "out/results.json").read_text())[0]["inference"]["steps"][0]
    assert step["tumor_clicks"] == 1 and step["background_clicks"] == 1


# -- the interactive protocol (evaluation.interactive) ---------------------------------------------

def test_the_protocol_clicks_into_the_current_errors_and_scores_every_step(tmp_path):
    """Corrective clicks: step k + 1's tumour click is the deepest voxel of the largest missed part of
    step k's mask (checked with scipy's labelling and distance transform); the CLI writes every step,
    the AUC by trapezoids (numpy's) and the plot."""
    import json

    from evaluation.interactive import auc, main, run_protocol

    predictor = _clicking_predictor(32, 0.5, crop="exact")
    pet, _ = body_with_lesion(size=(48, 44, 56), lesion_radius_mm=22.0)
    gt = sitk.Cast(pet > 0.5 * float(sitk.GetArrayViewFromImage(pet).max()), sitk.sitkUInt8)
    steps = run_protocol(predictor, pet, gt, steps=2)
    assert [s.step for s in steps] == [0, 1, 2] and steps[0].tumor_clicks == 0
    truth = sitk.GetArrayFromImage(gt).transpose(2, 1, 0) > 0
    first = sitk.GetArrayFromImage(predictor.refine(pet, NO_CLICKS).mask).transpose(2, 1, 0) > 0
    missed = truth & ~first
    if missed.any():
        labels, _ = ndimage.label(missed, structure=np.ones((3, 3, 3)))
        largest = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
        depth = ndimage.distance_transform_edt(np.pad(largest, 1))[1:-1, 1:-1, 1:-1]
        assert steps[1].tumor_clicks == 1 and depth[steps[1].tumor_click] == depth.max() > 0
    values = [0.2, 0.5, float("nan"), 0.9]
    assert auc(values[:2] + values[3:]) == pytest.approx(np.trapezoid([0.2, 0.5, 0.9]))
    sitk.WriteImage(pet, str(tmp_path / "pet.mha"))
    sitk.WriteImage(gt, str(tmp_path / "gt.mha"))
    save = tmp_path / "interactive.pt"
    from model.network import save_checkpoint

    save_checkpoint(save, predictor.networks[0], predictor.config)
    assert main(["--weights", str(save), "--pet", str(tmp_path / "pet.mha"), "--gt", str(tmp_path / "gt.mha"),
                 "--steps", "2", "--clicks", "challenge", "--out", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out/interactive.json").read_text())
    assert len(data["summary"]["steps"]) == 3 and (tmp_path / "out/dice_by_clicks.png").stat().st_size > 0
    dice = [r["dice"] for r in data["summary"]["steps"]]
    assert data["summary"]["auc"]["dice"] == pytest.approx(np.trapezoid(dice))


def test_challenge_clicks_sit_in_lesions_and_in_hot_uptake_outside_them():
    from evaluation.interactive import challenge_clicks

    gt = np.zeros((40, 40, 40), np.uint8)
    gt[5:12, 5:12, 5:12] = 1
    gt[25:30, 25:33, 20:30] = 1
    pet = np.ones((40, 40, 40), np.float32)
    pet[gt > 0] = 8.0
    pet[30:34, 2:6, 30:35] = 12.0  # a hot organ, 0.13 % of the non-lesion voxels
    clicks = challenge_clicks(gt, pet, n=3)
    assert len(clicks["tumor"]) == 3 and all(gt[v] for v in clicks["tumor"])
    assert {bool(gt[v]) for v in clicks["background"]} == {False}
    assert all(pet[v] == 12.0 for v in clicks["background"])


def test_a_refinement_of_another_scan_on_the_same_grid_starts_afresh():
    predictor = _clicking_predictor(32, 0.5)
    pet, centre = body_with_lesion(size=(48, 44, 56))
    other, _ = body_with_lesion(size=(48, 44, 56), seed=3, lesion_offset_mm=(-15.0, 0.0, 10.0))
    clicks = Clicks(tumor=[centre])
    first = predictor.refine(pet, clicks)
    again = predictor.refine(other, clicks.plus("background", centre), previous=first)
    assert again.windows_run == again.windows_total  # not the first scan's windows
    fresh = predictor.refine(other, clicks.plus("background", centre))
    assert np.array_equal(sitk.GetArrayFromImage(again.mask), sitk.GetArrayFromImage(fresh.mask))


def test_without_room_for_a_cache_each_batch_is_blended_as_it_comes_and_gives_the_same_scores():
    from model.windows import CachedSlidingWindow

    predictor = _clicking_predictor(32, 0.5)
    volume = np.random.default_rng(0).random((3, 70, 40, 50)).astype(np.float32)
    cached = CachedSlidingWindow(predictor.networks, predictor.config, predictor.device, 2)
    uncached = CachedSlidingWindow(predictor.networks, predictor.config, predictor.device, 2, max_cache_bytes=0)
    a, b = cached.run(volume), uncached.run(volume)
    assert np.array_equal(a, b) and cached.outputs and not uncached.outputs
    volume[1, 5:9, 5:9, 5:9] = 1.0
    changed = [(slice(5, 9),) * 3]
    (a2, run_a), (b2, run_b) = cached.update(volume, changed), uncached.update(volume, changed)
    assert run_a < run_b == len(uncached.windows) and np.array_equal(a2, b2)


def test_click_channels_started_as_uptake_keep_the_automatic_output_without_clicks():
    """gain 2: the tumour channel's first weights are twice the PET's, the background's minus that; with
    empty click channels the network computes exactly what the automatic one did, and a tumour click
    raises the lesion score where it lies."""
    from training.widen import with_click_channels

    loaded = load_checkpoint(HOTSPOT_WEIGHTS)
    config = loaded.config.with_guidance("disk")
    net = with_click_channels(loaded.network, loaded.config, config, gain=2.0)
    conv = net.input_block.conv1.conv.weight
    assert torch.equal(conv[:, 1], 2.0 * conv[:, 0]) and torch.equal(conv[:, 2], -2.0 * conv[:, 0])
    x = torch.rand(1, 1, 32, 32, 32)
    empty = torch.cat([x, torch.zeros(1, 2, 32, 32, 32)], 1)
    with torch.no_grad():
        assert torch.equal(loaded.network(x), net(empty))
        click = empty.clone()
        click[0, 1, 12:20, 12:20, 12:20] = 1.0
        before, after = net(empty), net(click)
    lesion = lambda out: (out[0, 1] - out[0, 0])[12:20, 12:20, 12:20].mean()  # noqa: E731
    assert lesion(after) > lesion(before)
