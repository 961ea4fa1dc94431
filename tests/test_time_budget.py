"""The per-case time budget: its plan, and the predictor keeping it."""

from __future__ import annotations

import numpy as np
import pytest

from model import Predictor
from tests.conftest import as_xyz, body_with_lesion


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
