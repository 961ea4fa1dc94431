"""scripts/train_demo_gpu.sh end to end on the CPU with the tiny preset: phantoms, folds side by side, export."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from model import Predictor

ROOT = Path(__file__).resolve().parents[1]


def test_trains_folds_side_by_side_and_exports_loadable_weights(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "CASES": "5",
           "SHAPE": "40 40 48", "PRESET": "tiny", "BUDGET_MIN": "0.05", "DEVICE": "cpu", "FOLDS": "0 2",
           "INIT": "", "SPLITS": "", "WORKERS": "0", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", str(ROOT / "scripts/train_demo_gpu.sh")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "phantoms: 5 in" in run.stdout and "0 failed" in run.stdout
    weights = tmp_path / "out/weights"
    manifest = json.loads((weights / "manifest.json").read_text())
    assert [m["fold"] for m in manifest["models"]] == [0, 2]
    splits = json.loads((weights / "splits.json").read_text())
    assert sorted(c for f in splits for c in f["val"]) == [f"PHANTOM{i:05d}_0" for i in range(5)]
    predictor = Predictor.from_weights(weights, device="cpu")
    assert len(predictor.networks) == 2
    assert (tmp_path / "out/metrics_fold2.csv").is_file()

    # warm start needs the folds those networks trained with
    refused = subprocess.run(["bash", str(ROOT / "scripts/train_demo_gpu.sh")], capture_output=True, text=True,
                             env={**env, "INIT": str(weights), "SPLITS": ""}, timeout=60)
    assert refused.returncode == 2 and "needs SPLITS" in refused.stderr
    # a second call: one more phantom, fold 0 warm-started, the old folds kept; no PRESET: INIT's manifest names it
    again = {**env, "OUT": str(tmp_path / "out2"), "CASES": "6", "FOLDS": "0", "INIT": str(weights),
             "SPLITS": str(weights / "splits.json")}
    del again["PRESET"]
    run = subprocess.run(["bash", str(ROOT / "scripts/train_demo_gpu.sh")], env=again, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "1 cases placed" in run.stdout
    assert f"warm start from {weights}/fold0.pt" in (tmp_path / "out2/fit_fold0.log").read_text()
    grown = json.loads((tmp_path / "out2/weights/splits.json").read_text())
    assert all(set(a["val"]) <= set(b["val"]) for a, b in zip(splits, grown, strict=True))
    # without CASES: as many phantoms as the folds file names, so nothing is missing and nothing new
    third = {k: v for k, v in again.items() if k != "CASES"}
    third.update(OUT=str(tmp_path / "out3"), INIT="", SPLITS=str(tmp_path / "out2/weights/splits.json"), PRESET="tiny")
    run = subprocess.run(["bash", str(ROOT / "scripts/train_demo_gpu.sh")], env=third, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "phantoms: 6 in" in run.stdout and "0 cases placed" in run.stdout
