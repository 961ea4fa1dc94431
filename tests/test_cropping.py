"""The crop modes: the exact crop keeps the uncropped scores, the fast one keeps the uncropped run's windows."""

from __future__ import annotations

import numpy as np
import pytest

from common.masks import dice
from model import Predictor
from model.cropping import at_least_roi, grid_aligned_box
from model.preprocessing import BACKGROUND_SCORE
from model.window_grid import count_windows, window_step
from tests.conftest import as_xyz, body_with_lesion

#: Dice of the fast body crop (no extra context) against 'exact' with the fixture network, measured
#: 0.9946 (1380 vs 1395 voxels); below 0.99 the fast crop has changed.
FAST_DICE_MEASURED = 0.99


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


def test_window_count_matches_facts():
    # facts.md: 400x400x326 with a 128^3 ROI gives 64 / 180 / 800 windows at 0.25 / 0.5 / 0.75
    shape = (400, 400, 326)
    assert [count_windows(shape, (128,) * 3, o) for o in (0.25, 0.5, 0.75)] == [64, 180, 800]
