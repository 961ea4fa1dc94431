"""The ablation's Table 4 design: its two training forward passes place different windows (counted on
MONAI's own SlidingWindowInferer), where the paper's 224^3 crops with 128^3 windows do not."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SlidingWindowInferer

from benchmarks.paper_ablation import VARIANT_SETTINGS
from model.window_grid import window_starts


def _windows_visited(side: int, roi: int, overlap: float) -> int:
    """Windows MONAI's inferer runs over a side^3 crop (a network that counts its inputs)."""
    seen = []

    def network(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return torch.zeros(x.shape[0], 2, *x.shape[2:])

    SlidingWindowInferer(roi_size=(roi,) * 3, sw_batch_size=64, overlap=overlap, mode="gaussian")(
        torch.zeros(1, 1, side, side, side), network)
    return sum(seen)


@pytest.mark.parametrize("side, roi, windows_0, windows_025", [(128, 64, 8, 27), (224, 128, 8, 8), (96, 64, 8, 8)])
def test_training_overlaps_separate_only_where_the_crop_allows(side, roi, windows_0, windows_025) -> None:
    assert _windows_visited(side, roi, 0.0) == windows_0 == len(window_starts(side, roi, 0.0)) ** 3
    assert _windows_visited(side, roi, 0.25) == windows_025 == len(window_starts(side, roi, 0.25)) ** 3


def test_the_table4_variants_use_the_separating_crop() -> None:
    (_, o0, side0), (_, o25, side25) = VARIANT_SETTINGS["window-overlap-0"], VARIANT_SETTINGS["window-overlap-0.25"]
    assert (o0, o25) == (0.0, 0.25) and side0 == side25 == 128
    assert window_starts(side0, 64, o0) != window_starts(side25, 64, o25)


@pytest.mark.parametrize("variant", sorted(VARIANT_SETTINGS))
def test_a_variant_can_warm_start_from_its_presets_weights(variant) -> None:
    """--preset demo-wide --init-from weights/fold0.pt: the variant's network is the preset's, only the
    training crop differs (the warm start refuses any other difference)."""
    from benchmarks.paper_ablation import configs
    from model.config import preset

    config, train = configs(variant, epochs=1, iters=1, preset_name="demo-wide")
    assert config.same_network(preset("demo-wide")) and config.crop_size == (VARIANT_SETTINGS[variant][2],) * 3
    assert (train.train_inferer, train.train_sw_overlap) == VARIANT_SETTINGS[variant][:2]
