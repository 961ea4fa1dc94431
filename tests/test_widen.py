"""Widening trained weights into a wider network (``python -m training widen``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import preset
from model.network import build_network, load_checkpoint, save_checkpoint
from training.cli import main as training_main
from training.widen import WidenError, channel_maps, widen_network, widen_weights

TINY = preset("tiny")
# level by level: unchanged, 1.5x (copies of some channels), 2x, 3x (every channel copied twice)
TINY_WIDE = TINY.with_(filters=(4, 12, 32, 48), name="tiny-wide")


def _trained_like(config, seed=0):
    """A network with random, non-degenerate weights (a fresh init has zero-mean outputs everywhere)."""
    torch.manual_seed(seed)
    net = build_network(config)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def test_widening_without_noise_computes_the_same_output():
    old = _trained_like(TINY)
    new = widen_network(old, TINY, TINY_WIDE, noise=0.0)
    blocks = [new.input_block, *new.downsamples, new.bottleneck]
    assert [b.conv2.conv.out_channels for b in blocks] == [4, 12, 32, 48]
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        a, b = old(x), new(x)
    assert a.abs().max() > 0.1  # a non-trivial output, so equality below means something
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_noise_breaks_the_symmetry_of_copied_channels_but_keeps_the_function_close():
    old = _trained_like(TINY)
    maps = channel_maps(TINY, TINY_WIDE, np.random.default_rng(0))
    original = int(maps[1][11])  # level 1's last channel is a copy (8 old channels, 12 new) of this one
    exact = widen_network(old, TINY, TINY_WIDE, noise=0.0)
    noisy = widen_network(old, TINY, TINY_WIDE, noise=0.01)
    w_exact, w_noisy = exact.downsamples[0].conv1.conv.weight, noisy.downsamples[0].conv1.conv.weight
    assert torch.equal(w_exact[original], w_exact[11])  # without noise the copy is identical: it could never diverge
    assert not torch.equal(w_noisy[original], w_noisy[11])
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        p_old, p_new = old(x).softmax(1), noisy(x).softmax(1)
    assert float((p_old - p_new).abs().max()) < 0.1


def test_widening_refuses_configs_that_differ_in_more_than_filters():
    old = _trained_like(TINY)
    with pytest.raises(WidenError, match="roi_size"):
        widen_network(old, TINY, TINY_WIDE.with_(roi_size=(64, 64, 64)))
    with pytest.raises(WidenError, match="do not widen"):
        widen_network(old, TINY, TINY.with_(filters=(4, 4, 16, 16)))


def test_widened_checkpoints_warm_start_a_fit_of_the_wider_network(tmp_path):
    """The path the demo uses: widen a checkpoint, then --init-from it with the wider config."""
    from tests.test_training import write_tcia_phantoms
    from training.fit import fit
    from training.recipe import train_preset

    sources = write_tcia_phantoms(tmp_path / "tcia", [0])
    save_checkpoint(tmp_path / "narrow" / "fold0.pt", _trained_like(TINY), TINY, fold=0)
    written = widen_weights(tmp_path / "narrow", TINY_WIDE, tmp_path / "wide", noise=0.0)
    assert [p.name for p in written] == ["fold0.pt"]
    loaded = load_checkpoint(written[0])
    assert loaded.config == TINY_WIDE and loaded.metadata["fold"] == 0
    frozen = train_preset("tiny").with_(epochs=1, iters_per_epoch=1, lr=0.0)
    fit(sources, [], TINY_WIDE, frozen, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False,
        init=written[0])
    after = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)["net"]
    before = loaded.network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_widen_command_writes_loadable_demo_wide_weights_and_names_a_bad_file(tmp_path, capsys):
    from model import Predictor

    demo = preset("demo")
    for k in range(2):
        save_checkpoint(tmp_path / "demo" / f"fold{k}.pt", _trained_like(demo, seed=k), demo, fold=k)
    assert training_main(["widen", "--weights", str(tmp_path / "demo"), "--preset", "demo-wide",
                          "--out", str(tmp_path / "wide")]) == 0
    assert "fold1.pt" in capsys.readouterr().out
    predictor = Predictor.from_weights(tmp_path / "wide", device="cpu")
    assert predictor.config.name == "demo-wide" and len(predictor.networks) == 2
    # a preset with another geometry cannot be a widening: one line naming the checkpoint, exit 2
    assert training_main(["widen", "--weights", str(tmp_path / "demo"), "--preset", "tiny",
                          "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "fold0.pt" in err and "kernel_size" in err and "\n" not in err
    assert not (tmp_path / "bad").exists()


def test_widening_refuses_what_it_cannot_preserve_and_never_overwrites_its_source(tmp_path):
    old = _trained_like(TINY)
    with pytest.raises(WidenError, match="already"):
        widen_network(old, TINY, TINY)
    batch = TINY.with_(norm_name="batch")
    with pytest.raises(WidenError, match="instance norm"):
        widen_network(build_network(batch), batch, batch.with_(filters=(4, 12, 32, 48)))
    # a stride-1 level 1 with as many channels as level 0 has no 1x1 projection; widened alone it would need one
    flat = TINY.with_(filters=(4, 4, 16, 16), strides=(1, 1, 2, 2))
    with pytest.raises(WidenError, match="level 1: .*projection"):
        widen_network(build_network(flat), flat, flat.with_(filters=(4, 8, 16, 16)))
    save_checkpoint(tmp_path / "w" / "fold0.pt", old, TINY, fold=0)
    with pytest.raises(WidenError, match="folder the weights come from"):
        widen_weights(tmp_path / "w", TINY_WIDE, tmp_path / "w")
