"""The vote: per-network scores on the input's grid -> one mask."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

VOTE_RULES = ("majority", "soft")


def lesion_probability(score: np.ndarray) -> np.ndarray:
    """The lesion softmax of two classes from their logit difference: a logistic of the score."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(score, dtype=np.float32), -60, 60)))


def vote_counts(scores: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """uint8 count of networks whose argmax is lesion (score > 0), per voxel."""
    votes = np.zeros(np.shape(scores[0]), dtype=np.uint8)
    for s in scores:
        votes += np.asarray(s) > 0
    return votes


def mean_probability(scores: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """float32 mean over networks of the lesion softmax, per voxel."""
    total = np.zeros(np.shape(scores[0]), dtype=np.float32)
    for s in scores:
        total += lesion_probability(s)
    return total / len(scores)


def vote(scores: Sequence[np.ndarray] | np.ndarray, rule: str = "majority") -> np.ndarray:
    """Combine per-network lesion-minus-background scores into one boolean mask.

    majority: each network's argmax (score > 0), then lesion where more than half agree; a tie is
    background, as the authors' mean-then-round (MONAI ``VoteEnsemble``) gives. soft: mean of the
    lesion softmax above 0.5.
    """
    if rule == "majority":
        return vote_counts(scores).astype(np.int32) * 2 > len(scores)
    if rule == "soft":
        return mean_probability(scores) > 0.5
    raise ValueError(f"unknown vote rule {rule!r}")
