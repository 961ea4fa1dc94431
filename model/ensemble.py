"""The vote: per-network scores on the input's grid -> one mask."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

VOTE_RULES = ("majority", "soft")


def vote(scores: Sequence[np.ndarray] | np.ndarray, rule: str = "majority") -> np.ndarray:
    """Combine per-network lesion-minus-background scores into one boolean mask.

    majority: each network's argmax (score > 0), then lesion where more than half agree; a tie is
    background, as the authors' mean-then-round (MONAI ``VoteEnsemble``) gives. soft: mean of the
    lesion softmax above 0.5.
    """
    n = len(scores)
    if rule == "majority":
        votes = np.zeros(np.shape(scores[0]), dtype=np.uint8)
        for s in scores:
            votes += np.asarray(s) > 0
        return votes * 2 > n
    if rule == "soft":
        total = np.zeros(np.shape(scores[0]), dtype=np.float32)
        for s in scores:
            total += 1.0 / (1.0 + np.exp(-np.clip(np.asarray(s, dtype=np.float32), -60, 60)))
        return total / n > 0.5
    raise ValueError(f"unknown vote rule {rule!r}")
