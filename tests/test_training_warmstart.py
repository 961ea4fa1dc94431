"""Warm start: a fold continues from an earlier run's checkpoint with a fresh optimizer and schedule."""

from __future__ import annotations

import pytest
import torch

from model.config import preset
from training.fit import fit
from training.recipe import train_preset


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["net"]


def test_warm_start_begins_from_the_given_checkpoint(tmp_path):
    from tests.test_training import write_tcia_phantoms

    sources = write_tcia_phantoms(tmp_path / "tcia", [0, 1])
    cache = tmp_path / "cache"
    first = fit(sources[:1], [], preset("tiny"), train_preset("tiny").with_(epochs=1, iters_per_epoch=1),
                tmp_path / "a", cache_dir=cache, progress=False)
    assert first.epochs_done == 1
    # learning rate 0: the warm-started network must come out exactly as it went in
    frozen = train_preset("tiny").with_(epochs=1, iters_per_epoch=1, lr=0.0, seed=7)
    fit(sources[:1], [], preset("tiny"), frozen, tmp_path / "b", cache_dir=cache, progress=False,
        init=tmp_path / "a" / "last.pt")
    a, b = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a if "running" not in k)
    with pytest.raises(SystemExit, match="different model config"):
        fit(sources[:1], [], preset("demo"), train_preset("demo").with_(epochs=1, iters_per_epoch=1),
            tmp_path / "c", cache_dir=cache, progress=False, init=tmp_path / "a" / "last.pt")
