"""scripts/train_demo_gpu.sh end to end on the CPU with the tiny preset: phantoms, folds side by side, export."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from model.inference import Predictor

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
