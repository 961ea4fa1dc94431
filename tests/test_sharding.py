"""Cases split over processes: job-array shards and torchrun ranks (gloo on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import process
from common.cases import Case
from runner.sharding import Shard, parse_shard, shard_cases
from tests.conftest import HOTSPOT_WEIGHTS, ROOT, body_with_lesion

OUT_SUB = Path("images/automated-petct-lesion-segmentation")
SIZES = {"a": (48, 44, 56), "b": (40, 40, 30), "c": (48, 44, 80), "d": (36, 36, 36), "e": (48, 44, 40),
         "f": (40, 36, 64)}


@pytest.fixture(scope="module")
def six_cases(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("six") / "input"
    (root / "images/pet").mkdir(parents=True)
    for i, (name, size) in enumerate(SIZES.items()):
        pet, _ = body_with_lesion(size=size, seed=i)
        sitk.WriteImage(pet, str(root / "images/pet" / f"{name}.mha"))
    return root


def _masks(output: Path) -> dict[str, np.ndarray]:
    return {p.stem: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted((output / OUT_SUB).glob("*.mha"))}


def _run(input_root: Path, output: Path, *extra: str) -> int:
    return process.main(["--input", str(input_root), "--output", str(output), "--weights", str(HOTSPOT_WEIGHTS),
                         "--device", "cpu", *extra])


def test_shards_cover_every_case_once_balanced_by_size(tmp_path):
    cases = []
    for name, size in SIZES.items():
        path = tmp_path / f"{name}.mha"
        sitk.WriteImage(sitk.Image(list(size), sitk.sitkFloat32), str(path))
        cases.append(Case(name, path))
    for count in (1, 2, 3, 4):
        parts = [shard_cases(cases, Shard(k, count)) for k in range(count)]
        names = [c.case_id for part in parts for c in part]
        assert sorted(names) == sorted(SIZES) and len(names) == len(set(names))
        loads = [sum(int(np.prod(SIZES[c.case_id])) for c in part) for part in parts]
        biggest = max(int(np.prod(s)) for s in SIZES.values())
        assert max(loads) - min(loads) <= biggest  # greedy largest-first: within one case of even
    assert [c.case_id for c in shard_cases(cases, Shard(0, 2))] == [c.case_id for c in shard_cases(cases, Shard(0, 2))]
    assert parse_shard("2/4") == Shard(1, 4)
    for bad in ("0/2", "3/2", "1", "a/b"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_job_array_shards_together_give_the_single_run(six_cases, tmp_path):
    assert _run(six_cases, tmp_path / "single") == 0
    for k in (1, 2):
        assert _run(six_cases, tmp_path / "sharded", "--shard", f"{k}/2") == 0
    single, sharded = _masks(tmp_path / "single"), _masks(tmp_path / "sharded")
    assert sorted(sharded) == sorted(SIZES)
    assert all(np.array_equal(single[k], sharded[k]) for k in SIZES)
    listed = [e["inputs"][0]["filename"] for k in (1, 2)
              for e in json.loads((tmp_path / f"sharded/results.shard-{k}-of-2.json").read_text())]
    assert sorted(listed) == sorted(f"{k}.mha" for k in SIZES)
    assert not (tmp_path / "sharded/results.json").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun over gloo on the loopback")
def test_two_torchrun_ranks_split_the_cases_and_merge_one_results_json(six_cases, tmp_path):
    """Two ranks over gloo: each case once, the single process's masks, one results.json; a rerun after
    three masks were lost (a killed rank) computes only those three."""
    assert _run(six_cases, tmp_path / "single") == 0
    output = tmp_path / "ranks"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "process.py"), "--input", str(six_cases), "--output", str(output),
           "--weights", str(HOTSPOT_WEIGHTS), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    single, ranks = _masks(tmp_path / "single"), _masks(output)
    assert sorted(ranks) == sorted(SIZES) and all(np.array_equal(single[k], ranks[k]) for k in SIZES)
    results = json.loads((output / "results.json").read_text())
    assert [e["inputs"][0]["filename"] for e in results] == [f"{k}.mha" for k in sorted(SIZES)]
    assert all("inference" in e for e in results)  # every case computed, by exactly one rank
    assert "shard 1 of 2" in done.stderr and "shard 2 of 2" in done.stderr
    assert not list(output.glob(".results.rank-*"))

    for name in ("a", "c", "e"):
        (output / OUT_SUB / f"{name}.mha").unlink()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    results = json.loads((output / "results.json").read_text())
    assert sorted(e["inputs"][0]["filename"] for e in results if "inference" in e) == ["a.mha", "c.mha", "e.mha"]
    assert all(np.array_equal(single[k], m) for k, m in _masks(output).items()) and len(_masks(output)) == 6


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find the ranks")
def test_a_rank_killed_mid_run_loses_only_its_case_in_progress(tmp_path):
    """SIGKILL one torchrun rank once the first mask is written: the run stops, nothing partial is
    left, and the same command again finishes exactly the cases that are missing."""
    import signal
    import time

    root = tmp_path / "input"
    (root / "images/pet").mkdir(parents=True)
    for i in range(4):
        pet, _ = body_with_lesion(size=(80, 80, 80), seed=i)
        sitk.WriteImage(pet, str(root / "images/pet" / f"big{i}.mha"))
    assert _run(root, tmp_path / "single", "--crop", "none") == 0
    output = tmp_path / "ranks"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "process.py"), "--input", str(root), "--output", str(output),
           "--weights", str(HOTSPOT_WEIGHTS), "--device", "cpu", "--crop", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not list((output / OUT_SUB).glob("*.mha")) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    ranks = [pid for agent in _children(run.pid) for pid in [agent, *_children(agent)]]
    workers = [pid for pid in ranks if "process.py" in Path(f"/proc/{pid}/cmdline").read_text(errors="ignore")]
    assert workers, "no rank found to kill"
    os.kill(workers[-1], signal.SIGKILL)
    run.communicate(timeout=300)
    assert run.returncode != 0
    before = sorted(p.name for p in (output / OUT_SUB).glob("*.mha"))
    assert 1 <= len(before) < 4, before  # killed mid-run

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    results = json.loads((output / "results.json").read_text())
    redone = sorted(e["inputs"][0]["filename"] for e in results if "inference" in e)
    assert redone == sorted(set(f"big{i}.mha" for i in range(4)) - set(before))
    single, ranks_masks = _masks(tmp_path / "single"), _masks(output)
    assert sorted(ranks_masks) == sorted(single) and all(np.array_equal(single[k], ranks_masks[k]) for k in single)
    assert not [p.name for p in (output / OUT_SUB).iterdir() if p.name.startswith(".")]
