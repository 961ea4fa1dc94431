"""Faults of the machine around a correct input: a full disk, a GPU out of memory, a hung case."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import process
import runner.case
import runner.folder
import runner.sharding
import runner.watchdog
from common.atomic import write_atomic
from common.cases import Case
from model import Predictor
from model.sliding_window import Attempt, out_of_memory_attempts
from runner.folder import run_case
from tests.conftest import HOTSPOT_WEIGHTS, body_with_lesion
from tests.test_process import OUT_SUB, make_input


def run(tmp_path: Path, *extra: str, output: Path | None = None) -> int:
    return process.main(["--input", str(tmp_path / "input"), "--output", str(output or tmp_path / "output"),
                         "--weights", str(HOTSPOT_WEIGHTS), "--device", "cpu", *extra])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


# -- a full disk ---------------------------------------------------------------------------------

def test_disk_full_at_one_mask_names_it_and_the_run_goes_on(tmp_path, monkeypatch, capsys, caplog):
    make_input(tmp_path / "input", names=("case_a", "case_b"))
    real = sitk.ImageFileWriter.Execute

    def full_for_case_a(self, *args):
        if "case_a" in self.GetFileName():
            raise RuntimeError("ITK ERROR: MetaImageIO(0x1): File cannot be written\nReason: No space left on device")
        return real(self, *args)

    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", full_for_case_a)
    assert run(tmp_path) == 1
    out = tmp_path / "output"
    assert sorted(p.name for p in (out / OUT_SUB).iterdir()) == ["case_b.mha"]
    assert leftovers(out) == []
    line = next(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "case_a" in r.getMessage())
    assert f"{out / OUT_SUB / 'case_a.mha'}: not written (no space left on device;" in line and "MB free on" in line
    results = {r["inputs"][0]["filename"]: r for r in json.loads((out / "results.json").read_text())}
    assert results["case_a.mha"]["error_messages"] == [line] and results["case_b.mha"]["error_messages"] == []


def test_a_file_cut_short_without_an_error_is_never_renamed_into_place(tmp_path, monkeypatch, caplog):
    """ITK's NIfTI writer reports a full disk on stderr only and leaves an empty file (seen on a full
    tmpfs); the read-back check turns that into the same clear error."""
    make_input(tmp_path / "input", names=("case_a",))
    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", lambda self, *args: Path(self.GetFileName()).write_bytes(b""))
    assert run(tmp_path) == 1
    assert not (tmp_path / "output" / OUT_SUB / "case_a.mha").exists()
    assert leftovers(tmp_path / "output") == []
    assert "does not read back whole; the disk may be full" in caplog.text


def test_results_json_on_a_full_disk_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    make_input(tmp_path / "input", names=("case_a",))

    def no_space(value, path):
        def fail(tmp: Path) -> None:
            tmp.write_text("[")  # a partial write first, as a real full disk gives
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        write_atomic(path, fail)

    monkeypatch.setattr(runner.sharding, "write_json_atomic", no_space)
    assert run(tmp_path) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'output' / 'results.json'}: not written (")
    assert "No space left on device" in err[0] and "MB free on" in err[0]
    assert (tmp_path / "output" / OUT_SUB / "case_a.mha").exists()  # the finished mask is kept
    assert not (tmp_path / "output" / "results.json").exists() and leftovers(tmp_path / "output") == []


def _small_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_really_full_file_system(tmp_path, capsys, caplog):
    """On a 512 KiB tmpfs filled to the last block (where this machine lets the tests mount one)."""
    out = tmp_path / "small"
    if not _small_tmpfs(out, "512k"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount)")
    try:
        make_input(tmp_path / "input", names=("case_a", "case_b"))
        (out / "images").mkdir()
        (out / OUT_SUB).mkdir()
        with open(out / "filler", "wb", buffering=0) as f:  # fill every block
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        assert run(tmp_path, output=out) == 1
        assert list((out / OUT_SUB).iterdir()) == [] and leftovers(out) == []
        assert caplog.text.count("not written (") >= 2 and "results.json: not written" in capsys.readouterr().err
        (out / "filler").unlink()  # space again: a rerun finishes the run
        assert run(tmp_path, output=out) == 0
        assert sorted(p.name for p in (out / OUT_SUB).iterdir()) == ["case_a.mha", "case_b.mha"]
    finally:
        subprocess.run(["umount", str(out)], check=False)


# -- out of memory in the network step -----------------------------------------------------------

class RunsOutOfMemory(torch.nn.Module):
    """The tiny network, failing as a full GPU does whenever more than ``limit`` windows come at once."""

    def __init__(self, net: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.net, self.limit = net, limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0]} windows")
        return self.net(x)


def test_out_of_memory_halves_the_window_batch_and_gives_the_same_mask(tmp_path, hotspot_predictor, caplog):
    net = hotspot_predictor.networks[0]
    faulty = Predictor([RunsOutOfMemory(net, limit=1)], hotspot_predictor.config, device="cpu", sw_batch_size=4)
    reference = Predictor([net], hotspot_predictor.config, device="cpu", sw_batch_size=1)
    pet, _ = body_with_lesion()
    expected = sitk.GetArrayFromImage(reference.predict(pet))
    assert expected.any()
    sitk.WriteImage(pet, str(tmp_path / "case.mha"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out2").mkdir()

    result, failed = run_case(faulty, Case("case", tmp_path / "case.mha"), tmp_path / "out")
    assert not failed
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out/case.mha"))), expected)
    assert result["inference"]["out_of_memory_fallbacks"] == [
        "out of memory with 4 window(s) per call on the CPU; retrying with 2 window(s) per call on the CPU",
        "out of memory with 2 window(s) per call on the CPU; retrying with 1 window(s) per call on the CPU"]
    assert caplog.text.count("out of memory with") >= 2

    hopeless = Predictor([RunsOutOfMemory(net, limit=0)], hotspot_predictor.config, device="cpu", sw_batch_size=2)
    result, failed = run_case(hopeless, Case("case", tmp_path / "case.mha"), tmp_path / "out2")
    assert failed and "OutOfMemoryError" in result["error_messages"][0] and not (tmp_path / "out2/case.mha").exists()


def test_on_a_gpu_the_steps_down_end_with_cpu_stitching_then_the_cpu():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert out_of_memory_attempts(cuda, 8) == [Attempt(8, cuda, cuda), Attempt(4, cuda, cuda), Attempt(2, cuda, cuda),
                                               Attempt(1, cuda, cuda), Attempt(1, cuda, cpu), Attempt(1, cpu, cpu)]
    assert [a.describe() for a in out_of_memory_attempts(cuda, 1)] == [
        "1 window(s) per call on cuda", "1 window(s) per call stitched on the CPU", "1 window(s) per call on the CPU"]


# -- a hung case -----------------------------------------------------------------------------------

def test_a_case_stuck_reading_is_abandoned_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    """ITK blocks in C reading case_a (here from a named pipe nobody writes to, as a dead network mount
    would leave it), where no signal reaches it; the watchdog gives the case up and the run goes on."""
    make_input(tmp_path / "input", names=("case_a", "case_b"), ct=False)
    fifo = tmp_path / "stuck.mha"
    os.mkfifo(fifo)
    real = runner.case.read_image

    def read(path: Path, what: str) -> sitk.Image:
        if "case_a" not in str(path):
            return real(path, what)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(fifo))
        reader.SetImageIO("MetaImageIO")
        return reader.Execute()

    monkeypatch.setattr(runner.case, "read_image", read)
    try:
        assert run(tmp_path, "--case-timeout", "10") == 1
        pet = tmp_path / "input/images/pet/case_a.mha"
        assert f"{pet}: no result after 10 s (--case-timeout); abandoned, the run goes on" in caplog.text
        assert sorted(p.name for p in (tmp_path / "output" / OUT_SUB).iterdir()) == ["case_b.mha"]
        assert [t for t in runner.watchdog.ABANDONED if t.is_alive()]  # still stuck, as a dead mount would be
    finally:
        release_readers(fifo)


def release_readers(fifo: Path) -> None:
    """Open and close the pipe until no abandoned reader is left (ITK opens it once per image format
    it tries): a thread still blocked in ITK when pytest exits would abort the interpreter."""
    for _ in range(400):
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader at this instant
            pass
        if not any(t.is_alive() for t in runner.watchdog.ABANDONED):
            return
        time.sleep(0.05)
    raise AssertionError("an abandoned reader did not end")


def test_an_abandoned_case_that_wakes_up_writes_nothing(tmp_path, monkeypatch, caplog):
    make_input(tmp_path / "input", names=("slow",), ct=False)
    release = threading.Event()
    real = runner.case.read_image

    def slow_read(path, what):
        release.wait(30)
        return real(path, what)

    monkeypatch.setattr(runner.case, "read_image", slow_read)
    assert run(tmp_path, "--case-timeout", "1") == 1
    release.set()
    for thread in threading.enumerate():
        if thread.name.startswith("case "):
            thread.join(60)
    assert list((tmp_path / "output" / OUT_SUB).iterdir()) == []
    assert leftovers(tmp_path / "output") == []
