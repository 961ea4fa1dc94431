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
