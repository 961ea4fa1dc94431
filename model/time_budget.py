"""The per-case time budget: what the networks after the first may cost.

Grand-Challenge stops a case at its phase's time limit (10 minutes on a T4 for autoPET II), and
a stopped case is a lost case. Once the first network has run, its seconds say what each further
network costs in each crop mode, so the rest of the ensemble is planned to end inside the budget,
giving up accuracy in this order: test-time augmentation, then the exact crop (the remaining
networks run in the fast ``body`` crop), then networks (fewer vote). Every decision is recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Share of the budget kept free for what follows the networks (resampling back, vote, writing).
RESERVE = 0.1


@dataclass(frozen=True)
class Step:
    """A group of networks scored together, in one crop mode, with these TTA axes."""

    networks: tuple[int, ...]
    crop: str
    tta_axes: tuple[int, ...] = ()


def plan_rest(first: Step, first_seconds: float, elapsed: float, budget: float, n_networks: int,
              windows: int, fast_windows: int) -> tuple[list[Step], dict]:
    """Steps for networks 1 .. n-1 that fit in ``budget`` seconds, and a record of the decision.

    ``first_seconds`` is the first network's scoring time over ``windows`` windows with
    ``first.tta_axes``; ``elapsed`` the case's time so far; ``fast_windows`` the window count of
    the fast crop. Costs scale with windows and with the number of mirrored passes.
    """
    rest = tuple(range(1, n_networks))
    mirrors = 2 ** len(first.tta_axes)
    per_window = first_seconds / max(1, windows * mirrors)
    left = budget * (1.0 - RESERVE) - elapsed
    options = [(first.crop, first.tta_axes, "as asked")]
    if first.tta_axes:
        options.append((first.crop, (), "test-time augmentation dropped"))
    if first.crop != "body":
        options.append(("body", (), "fast body crop for the networks after the first"))
    record = {"budget_s": budget, "first_network_s": round(first_seconds, 2), "elapsed_s": round(elapsed, 2),
              "projected_full_s": round(elapsed + len(rest) * first_seconds, 1)}
    for crop, tta, action in options:
        n_windows = fast_windows if crop == "body" else windows
        cost = per_window * n_windows * 2 ** len(tta)
        if len(rest) * cost <= left:
            record.update(action=action, networks_run=n_networks)
            return [Step(rest, crop, tta)], record
    crop, tta, _ = options[-1]
    fits = max(0, min(len(rest), math.floor(left / max(per_window * fast_windows, 1e-9))))
    record.update(action=f"only {1 + fits} of {n_networks} networks vote (fast body crop for the rest)",
                  networks_run=1 + fits)
    return ([Step(rest[:fits], crop, tta)] if fits else []), record
