"""Percentiles and orientation against numpy and MONAI."""

from __future__ import annotations

import numpy as np

from common.geometry import Orientation
from model.preprocessing import percentile_scale, percentiles
from tests.conftest import GRIDS


def test_percentiles_match_numpy_and_monai():
    from monai.transforms import ScaleIntensityRangePercentiles

    rng = np.random.default_rng(0)
    array = rng.gamma(1.5, 2.0, size=(37, 41, 29)).astype(np.float32)
    lo, hi = percentiles(array, 0.05, 99.95)
    assert np.allclose([lo, hi], np.percentile(array, [0.05, 99.95]), rtol=1e-6)
    monai = ScaleIntensityRangePercentiles(0.05, 99.95, 0.0, 1.0, clip=True)(array[None])[0]
    assert np.allclose(percentile_scale(array), np.asarray(monai), atol=1e-6)


def test_orientation_round_trip():
    rng = np.random.default_rng(0)
    array = rng.random((3, 4, 5))
    for direction in [GRIDS[k]["direction"] or (1, 0, 0, 0, 1, 0, 0, 0, 1) for k in GRIDS]:
        o = Orientation.of(direction)
        assert np.array_equal(o.from_ras(o.to_ras(array)), array)
