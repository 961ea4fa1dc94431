"""Checkpoints: the authors' format, this project's, errors that name the file, the manifest."""

from __future__ import annotations

import json

import pytest
import torch

from model import Predictor
from model.config import paper_config, tiny_config
from model.manifest import write_manifest
from model.network import CheckpointError, build_network, load_checkpoint, save_checkpoint
from tests.conftest import HOTSPOT_WEIGHTS

#: MONAI's DynUNet with the authors' arguments (facts.md: 31.0 M parameters).
PAPER_PARAMETERS = 30_999_490


def test_authors_checkpoint_format_loads(tmp_path):
    """The authors' files: {'net': state_dict, 'opt': ..., ...}, paper config unless config.json."""
    net = build_network(paper_config())
    folder = tmp_path / "authors"
    folder.mkdir()
    torch.save({"net": net.state_dict(), "opt": {"state": {}, "param_groups": []}, "lr": {"last_epoch": 3},
                "trainer": {"epoch": 400, "iteration": 1000}}, folder / "0.pt")
    loaded = load_checkpoint(folder / "0.pt")
    assert loaded.config == paper_config()
    assert sum(p.numel() for p in loaded.network.parameters()) == PAPER_PARAMETERS
    for a, b in zip(loaded.network.state_dict().values(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    small = tmp_path / "small"
    small.mkdir()
    tiny = build_network(tiny_config())
    for k in range(2):  # DDP-saved weights carry a 'module.' prefix
        torch.save({"net": {f"module.{n}": t for n, t in tiny.state_dict().items()}}, small / f"{k}.pt")
    (small / "config.json").write_text(tiny_config().to_json())
    predictor = Predictor.from_weights(small, device="cpu")
    assert len(predictor.networks) == 2 and predictor.config.name == "tiny"


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_checkpoint(corrupt)
    wrong = tmp_path / "wrong" / "0.pt"
    wrong.parent.mkdir()
    torch.save({"net": build_network(tiny_config()).state_dict()}, wrong)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(wrong)  # no config.json: the paper's network, which these weights don't fit
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint files"):
        Predictor.from_weights(tmp_path / "empty", device="cpu")


def test_manifest_is_checked(tmp_path):
    folder = tmp_path / "weights"
    save_checkpoint(folder / "fold0.pt", build_network(tiny_config()), tiny_config(), fold=0)
    save_checkpoint(folder / "fold1.pt", build_network(tiny_config()), tiny_config(), fold=1)
    write_manifest(folder, [{"file": "fold0.pt", "fold": 0}, {"file": "fold1.pt", "fold": 1}])
    assert len(Predictor.from_weights(folder, device="cpu").networks) == 2
    data = bytearray((folder / "fold1.pt").read_bytes())
    data[-10] ^= 0xFF
    (folder / "fold1.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fold1.pt.*sha256"):
        Predictor.from_weights(folder, device="cpu")
    (folder / "fold1.pt").unlink()
    with pytest.raises(CheckpointError, match="fold1.pt.*missing"):
        Predictor.from_weights(folder, device="cpu")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["models"][0]["sha256"]


def test_hotspot_fixture_is_a_project_checkpoint():
    loaded = load_checkpoint(HOTSPOT_WEIGHTS)
    assert loaded.config == tiny_config()
