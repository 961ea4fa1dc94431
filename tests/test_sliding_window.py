"""Sliding-window scoring: test-time augmentation against a direct computation."""

from __future__ import annotations

import numpy as np
import torch


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
