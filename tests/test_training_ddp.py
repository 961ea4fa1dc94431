"""Two-process DistributedDataParallel on CPU (gloo) through torchrun and the real CLI."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_training import REPO, write_tcia_phantoms


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    data = tmp_path / "tcia"
    write_tcia_phantoms(data, [0, 1, 2, 3, 4, 5, 6])
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = [*torchrun, "-m", "training", "fit", "--data", str(data), "--layout", "tcia",
           "--splits", str(tmp_path / "splits.json"), "--fold", "0", "--preset", "tiny", "--out", str(run),
           "--epochs", "2", "--iters-per-epoch", "2", "--val-every", "1", "--val-max-cases", "0",
           "--threads", "1", "--quiet"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("network 'tiny'") == 1  # only rank 0 logs
    state = torch.load(run / "fold0" / "last.pt", map_location="cpu", weights_only=True)
    assert state["world"] == 2 and state["epoch"] == 2
    assert not any(k.startswith("module.") for k in state["net"])  # saved unwrapped
    rows = list(csv.DictReader(open(run / "fold0" / "metrics.csv")))
    assert [int(r["steps"]) for r in rows] == [2, 2]
    assert all(r["loss_lesion"] for r in rows)  # a column (a number, or nan when no batch held a lesion)
    n_val = len(state["val_cases"])
    assert n_val >= 1 and all(int(r["val_cases"]) == n_val for r in rows)  # gathered from both ranks
    assert {p.name for p in (run / "fold0").iterdir() if p.suffix == ".pt"} <= {"best.pt", "last.pt"}
    assert (tmp_path / "splits.json").is_file()
