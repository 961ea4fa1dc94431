"""Predictor against MONAI's own pipeline, on grids of every kind and at the paper's windowing."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from benchmarks.monai_reference import reference_predict
from common.masks import dice
from model import Predictor
from model.config import paper_config, tiny_config
from model.network import build_network
from tests.conftest import GRIDS, as_xyz, body_with_lesion, centroid_mm, same_grid_exactly


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


@pytest.mark.parametrize("name", list(GRIDS))
def test_geometry_and_physical_position(name, hotspot_predictor):
    """The mask has the input's exact geometry and the lesion where it physically is."""
    grid = GRIDS[name]
    size = tuple(int(round(190 / s)) for s in grid["spacing"])
    if grid["direction"] and grid["direction"][1] == 1:  # permuted axes: the sizes move with them
        size = (size[0], size[1], size[2])
    pet, lesion = body_with_lesion(size=size, **grid)
    mask = hotspot_predictor.predict(pet)
    assert same_grid_exactly(mask, pet)
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


def test_exact_crop_drops_windows_of_a_wide_field_and_keeps_monais_scores_inside_the_box(tmp_path):
    """A field of view much wider than the body (448 x 128 x 128 voxels of 4 mm, the body 100 voxels wide
    in the middle) with a thin hot line in the air: at the paper's windowing the exact crop runs fewer
    windows than the uncropped run, every score inside the body's box equals MONAI's chain, and outside
    the box the mask is background (where the whole-field run may mark the line)."""
    config = paper_config().with_(filters=(2, 4, 4, 4, 4, 4), spacing=(4.0, 4.0, 4.0), name="paper-small")
    torch.manual_seed(5)
    net = build_network(config).eval()
    rng = np.random.default_rng(2)
    values = np.zeros((448, 128, 128), np.float32)  # x, y, z
    values[180:280, 20:108, 10:118] = 1.0 + rng.normal(0, 0.1, (100, 88, 108))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in (100, 88, 108)], indexing="ij"), axis=-1)
    values[180:280, 20:108, 10:118] += 5.0 * (np.linalg.norm(idx - np.array([40, 50, 60]), axis=-1) <= 10)
    values[330:440, 64, 64] = 8.0  # an injection line off the table, in the air
    pet = sitk.GetImageFromArray(np.ascontiguousarray(values.transpose(2, 1, 0)))
    pet.SetSpacing((4.0, 4.0, 4.0))
    path = tmp_path / "wide.mha"
    sitk.WriteImage(pet, str(path))

    _, ref_scores = reference_predict(path, [net], config, sw_batch_size=4, return_scores=True)
    predictor = Predictor([net], config, device="cpu")
    assert predictor.crop == "exact"
    scores = predictor.predict_scores(pet)[0]
    mask = as_xyz(predictor.predict(pet))
    info = predictor.last_info
    assert info.windows < info.windows_uncropped == 11  # x: (448 - 128) / 32 + 1 windows, one along y and z
    inside = scores > -1000  # the box; outside it the fill that makes background
    xs = np.flatnonzero(inside.any(axis=(1, 2)))
    assert xs[0] <= 180 - 2 and xs[-1] >= 279 + 2 and xs[-1] < 330  # body + 10 mm, not the line
    assert np.abs(scores[inside] - ref_scores[0][inside]).max() < 1e-3
    assert not mask[~inside].any()


def test_input_smaller_than_roi_is_padded(hotspot_predictor):
    pet, _ = body_with_lesion(size=(12, 9, 7), spacing=(4.0, 4.0, 4.0), lesion_offset_mm=(0, 0, 0))
    mask = hotspot_predictor.predict(pet)
    assert same_grid_exactly(mask, pet)


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
    assert same_grid_exactly(empty, pet)
    assert sitk.GetArrayViewFromImage(empty).max() == 0


def test_integer_pet_is_accepted(hotspot_predictor):
    pet, _ = body_with_lesion(size=(48, 44, 56))
    as_int = sitk.Cast(pet * 1000, sitk.sitkInt16)
    mask_int = as_xyz(hotspot_predictor.predict(as_int))
    mask_float = as_xyz(hotspot_predictor.predict(pet))
    assert dice(mask_int, mask_float) >= 0.99
