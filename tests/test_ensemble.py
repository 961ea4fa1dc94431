"""The vote against MONAI's VoteEnsemble and constructed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.ensemble import vote


def test_majority_vote_on_constructed_scores():
    shape = (4,)
    # voxel 0: 3 of 5 lesion; voxel 1: 2 of 5; voxel 2: 5 of 5; voxel 3: none
    yes, no = 2.0, -2.0
    scores = np.array([
        [yes, yes, yes, no],
        [yes, yes, yes, no],
        [yes, no, yes, no],
        [no, no, yes, no],
        [no, no, yes, no],
    ], dtype=np.float32).reshape(5, *shape)
    assert vote(scores, "majority").tolist() == [True, False, True, False]
    # an even ensemble's tie is background (the authors' mean-then-round)
    assert vote(scores[:4, :2], "majority").tolist() == [True, False]
    assert not vote(np.array([[0.0]]), "majority")[0]  # a zero score is argmax background


@pytest.mark.parametrize("n_networks", [4, 5])
def test_majority_vote_equals_monai_vote_ensemble(n_networks):
    """The authors' vote is MONAI's VoteEnsemble over argmax masks; an even ensemble's ties included."""
    from monai.transforms import VoteEnsemble

    rng = np.random.default_rng(n_networks)
    scores = rng.normal(0, 1, size=(n_networks, 6, 7, 5)).astype(np.float32)
    masks = [torch.as_tensor(s > 0, dtype=torch.float32)[None] for s in scores]
    expected = VoteEnsemble()(masks)[0].numpy().astype(bool)
    votes = (scores > 0).sum(0)
    assert (votes * 2 == n_networks).any() == (n_networks % 2 == 0)  # ties present with four networks
    assert np.array_equal(vote(scores, "majority"), expected)


def test_soft_vote_uses_mean_probability():
    # two confident "no" against three weak "yes": majority says lesion, soft says background
    scores = np.array([[0.2], [0.2], [0.2], [-6.0], [-6.0]], dtype=np.float32)
    assert vote(scores, "majority")[0]
    assert not vote(scores, "soft")[0]
    assert vote(np.array([[4.0], [4.0], [-1.0]]), "soft")[0]
