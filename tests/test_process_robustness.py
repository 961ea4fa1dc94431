"""process.py on unusual but plausible inputs: every bad input gives a mask or a one-line error naming it.

Small images only (one 32³ window of the tiny test network), so the whole file runs in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import process
from common import atomic, images
from tests.conftest import HOTSPOT_WEIGHTS, ROOT, body_with_lesion
from tests.unprivileged import as_nobody, nobody_command

OUT_SUB = Path("images/automated-petct-lesion-segmentation")
SIZE = (24, 22, 28)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One 32³ window per case: a second thread only waits on it (and on whatever else runs)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_pet(seed: int = 0, **kwargs) -> sitk.Image:
    return body_with_lesion(size=kwargs.pop("size", SIZE), seed=seed, **kwargs)[0]


def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    pet_dir, ct_dir = tmp_path / "input/images/pet", tmp_path / "input/images/ct"
    pet_dir.mkdir(parents=True)
    ct_dir.mkdir(parents=True)
    return pet_dir, ct_dir, tmp_path / "output" / OUT_SUB


def write(image: sitk.Image, path: Path, compress: bool = True) -> Path:
    """Write under any name: ITK picks its writer by a lower-case suffix, so rename afterwards."""
    suffix = images.image_suffix(path) or ".mha"
    tmp = path.parent / f"tmp-{os.getpid()}{suffix}"
    sitk.WriteImage(image, str(tmp), compress)
    if suffix == ".mhd":  # the header names its data file: keep the stem
        data = tmp.with_suffix(".zraw" if compress else ".raw")
        header = tmp.read_text().replace(data.name, f"{images.image_stem(path)}{data.suffix}")
        data.rename(path.parent / f"{images.image_stem(path)}{data.suffix}")
        tmp.unlink()
        path.write_text(header)
    else:
        tmp.rename(path)
    return path


def run(tmp_path: Path, *extra: str, input_root: Path | None = None, output_root: Path | None = None) -> int:
    argv = ["--input", str(input_root or tmp_path / "input"), "--output", str(output_root or tmp_path / "output"),
            "--weights", str(HOTSPOT_WEIGHTS), "--device", "cpu", *extra]
    return process.main(argv)


def results(tmp_path: Path) -> dict[str, list[str]]:
    data = json.loads((tmp_path / "output/results.json").read_text())
    return {r["inputs"][0]["filename"]: r["error_messages"] for r in data}


def assert_mask_for(mask_path: Path, pet_path: Path) -> np.ndarray:
    mask = images.read_image(mask_path, "mask")
    pet = images.read_image(pet_path, "PET")
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSize() == pet.GetSize()
    np.testing.assert_allclose(mask.GetSpacing(), pet.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(mask.GetOrigin(), pet.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(mask.GetDirection(), pet.GetDirection(), atol=1e-6)
    array = sitk.GetArrayFromImage(mask)
    assert set(np.unique(array)) <= {0, 1}
    return array


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_other_formats_mixed_case_suffixes_odd_names_and_links(tmp_path, caplog):
    pet_dir, _, out = folders(tmp_path)
    names = ["a.nii.gz", "b.nii", "c.nrrd", "d.mhd", "E.MHA", "F.NII.GZ", "my scan é.mha"]
    for i, name in enumerate(names):
        write(small_pet(seed=i), pet_dir / name)
    write(small_pet(seed=9), tmp_path / "elsewhere.mha")
    (pet_dir / "linked.mha").symlink_to(tmp_path / "elsewhere.mha")
    assert run(tmp_path) == 0
    for name in [*names, "linked.mha"]:
        assert_mask_for(out / name, pet_dir / name)
    # the .mhd mask is whole: its data file is the visible d.zraw, not a temp name
    assert "ElementDataFile = d.zraw" in (out / "d.mhd").read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "linked.mha", "d.zraw"])
    assert "Could not load" not in caplog.text  # d.zraw beside d.mhd is no stray file
    caplog.clear()
    with caplog.at_level("INFO"):
        assert run(tmp_path) == 0
    assert caplog.text.count("mask exists, skipped") == len(names) + 1


def test_odd_geometry_values_and_types_all_give_masks(tmp_path):
    pet_dir, _, out = folders(tmp_path)
    base = small_pet()
    a = np.deg2rad(25)
    oblique = (np.cos(a), -np.sin(a), 0, np.sin(a), np.cos(a), 0, 0, 0, 1)
    rng = np.random.default_rng(0)
    pets = {
        "oblique.mha": small_pet(direction=oblique),
        "one_voxel.mha": sitk.GetImageFromArray(np.full((1, 1, 1), 3.0, np.float32)),
        "three.mha": sitk.GetImageFromArray(rng.random((3, 3, 3)).astype(np.float32)),
        "one_slice.mha": sitk.GetImageFromArray(rng.random((1, 40, 40)).astype(np.float32)),
        "negative.mha": base - 5.0,
        "constant.mha": base * 0 + 2.5,
        "all_zero.nii.gz": base * 0,
    }
    hot = np.zeros((20, 20, 20), np.float32)
    hot[10, 10, 10] = 20.0
    pets["hot_voxel.mha"] = sitk.GetImageFromArray(hot)
    for ptype, name in ((sitk.sitkInt8, "int8"), (sitk.sitkUInt8, "uint8"), (sitk.sitkInt32, "int32"),
                        (sitk.sitkFloat64, "float64")):
        pets[f"{name}.mha"] = sitk.Cast(base * 10, ptype)
    for name, spacing in (("fine.mha", 0.1), ("coarse.mha", 20.0)):
        image = sitk.GetImageFromArray(rng.random((5, 5, 5)).astype(np.float32))
        image.SetSpacing((spacing,) * 3)
        pets[name] = image
    for name, image in pets.items():
        write(image, pet_dir / name)
    assert run(tmp_path) == 0
    for name in pets:
        array = assert_mask_for(out / name, pet_dir / name)
        if name in ("one_voxel.mha", "constant.mha", "all_zero.nii.gz", "hot_voxel.mha"):
            assert array.max() == 0, name


def test_broken_pet_entries_fail_named_and_strays_are_listed(tmp_path, caplog):
    pet_dir, _, out = folders(tmp_path)
    write(small_pet(), pet_dir / "good.mha")
    write(small_pet(), pet_dir / "noraw.mhd")
    (pet_dir / "noraw.zraw").unlink()
    (pet_dir / "empty.mha").write_bytes(b"")
    (pet_dir / "folder.mha").mkdir()
    (pet_dir / "dangling.mha").symlink_to(tmp_path / "nowhere.mha")
    (pet_dir / "notes.txt").write_text("scanned on a Tuesday")
    (pet_dir / "sub").mkdir()
    write(small_pet(), pet_dir / "sub/nested.mha")
    (pet_dir / ".DS_Store").write_bytes(b"\x00")
    with caplog.at_level("WARNING"):
        assert run(tmp_path) == 1
    errors = results(tmp_path)
    assert errors.pop("good.mha") == []
    expected = {"noraw.mhd": "data file noraw.zraw named in the PET header is missing",
                "empty.mha": "PET file is empty (0 bytes)", "folder.mha": "PET is a folder",
                "dangling.mha": "broken symbolic link"}
    assert sorted(errors) == sorted(expected)
    for name, phrase in expected.items():
        (message,) = errors[name]
        assert name in message and phrase in message and "\n" not in message
    assert sorted(p.name for p in out.iterdir()) == ["good.mha"]
    assert "notes.txt, sub/" in caplog.text  # named once, not taken for cases
    assert "nested" not in json.dumps(errors)


@as_nobody
@pytest.mark.parametrize("locked", ["file", "folder"])
def test_unreadable_pet_says_permission_denied(locked):
    base = Path(tempfile.mkdtemp(prefix="robustness-"))  # pytest's tmp_path is private to root
    try:
        folder = base / "pets"
        folder.mkdir()
        write(small_pet(), folder / "locked.mha")
        base.chmod(0o755)
        (folder / "locked.mha").chmod(0 if locked == "file" else 0o644)
        folder.chmod(0o755 if locked == "file" else 0o700)
        code = ("import sys; from pathlib import Path; from common.images import InputError, read_image\n"
                "try: read_image(Path(sys.argv[1]), 'PET')\nexcept InputError as e: print(e)")
        done = subprocess.run(nobody_command(base, ["-c", code, str(folder / "locked.mha")]), capture_output=True,
                              text=True, timeout=60)
        assert "locked.mha: cannot open PET file (Permission denied)" in done.stdout, done.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_bad_cts_only_warn(tmp_path, caplog):
    pet_dir, ct_dir, out = folders(tmp_path)
    for name in ("corrupt", "flat", "truncated", "empty", "folder"):
        write(small_pet(), pet_dir / f"{name}.mha")
    (ct_dir / "corrupt.mha").write_bytes(b"ObjectType = Image\nNDims = 3\ngarbage")
    write(sitk.GetImageFromArray(np.zeros((20, 20), np.int16)), ct_dir / "flat.mha")
    ct = sitk.Cast(small_pet() * 0 - 1000, sitk.sitkInt16)
    data = sitk.GetArrayFromImage(ct)
    write(ct, ct_dir / "truncated.mha", compress=False)
    raw = (ct_dir / "truncated.mha").read_bytes()
    (ct_dir / "truncated.mha").write_bytes(raw[: len(raw) - data.nbytes // 2])
    (ct_dir / "empty.mha").write_bytes(b"")
    (ct_dir / "folder.mha").mkdir()
    with caplog.at_level("WARNING"):
        assert run(tmp_path) == 0
    assert sorted(p.name for p in out.iterdir()) == ["corrupt.mha", "empty.mha", "flat.mha", "folder.mha",
                                                     "truncated.mha"]
    for name in ("corrupt", "flat", "truncated", "empty", "folder"):
        assert f"ct/{name}.mha: CT" in caplog.text
    assert "(size (20, 20) vs" in caplog.text and "may be truncated" in caplog.text


def test_two_pets_three_cts_warns_and_segments_both(tmp_path, caplog):
    pet_dir, ct_dir, out = folders(tmp_path)
    for name in ("a", "b"):
        write(small_pet(), pet_dir / f"{name}.mha")
    for name in ("x", "y", "z"):
        write(sitk.Cast(small_pet() * 0 - 1000, sitk.sitkInt16), ct_dir / f"{name}.mha")
    with caplog.at_level("WARNING"):
        assert run(tmp_path) == 0
    assert "3 CT file(s)" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["a.mha", "b.mha"]


def test_stale_temp_files_of_a_killed_run_are_removed_not_counted(tmp_path, caplog):
    pet_dir, _, out = folders(tmp_path)
    write(small_pet(), pet_dir / "a.mha")
    out.mkdir(parents=True)
    (out / ".a.mha.k3j2h1.tmp.mha").write_bytes(b"ObjectType = Image\n")  # the old temp name
    (out / ".a.mha.k3j2h1.tmp.zraw").write_bytes(b"x")
    (out / ".a.mha.q9w8e7.tmp").mkdir()  # the current temp folder
    (out / ".a.mha.q9w8e7.tmp/a.mha").write_bytes(b"partial")
    (tmp_path / "output/.results.json.abc.tmp").write_text("[")
    (tmp_path / "output/.keep").write_text("not ours")
    with caplog.at_level("WARNING"):
        assert run(tmp_path) == 0
    assert "removed 4 temp file(s)" in caplog.text
    assert hidden(out) == [] and hidden(tmp_path / "output") == [".keep"]
    assert_mask_for(out / "a.mha", pet_dir / "a.mha")


def test_existing_masks_are_checked_before_being_skipped(tmp_path, caplog):
    pet_dir, _, out = folders(tmp_path)
    names = ("kept", "garbage", "truncated", "other_grid", "float", "labels")
    for name in names:
        write(small_pet(), pet_dir / f"{name}.mha")
    out.mkdir(parents=True)
    pet = sitk.ReadImage(str(pet_dir / "kept.mha"))
    good = sitk.Cast(pet * 0 + 1, sitk.sitkUInt8)
    write(good, out / "kept.mha")
    (out / "garbage.mha").write_bytes(b"ObjectType = Image\n")
    write(good, out / "truncated.mha", compress=False)
    (out / "truncated.mha").write_bytes((out / "truncated.mha").read_bytes()[:-100])
    write(sitk.Image([5, 5, 5], sitk.sitkUInt8), out / "other_grid.mha")
    write(sitk.Cast(good, sitk.sitkFloat32), out / "float.mha")
    write(good * 2, out / "labels.mha")
    kept = (out / "kept.mha").read_bytes()
    with caplog.at_level("WARNING"):
        assert run(tmp_path) == 0
    assert (out / "kept.mha").read_bytes() == kept
    for name in names[1:]:
        assert f"{name}.mha: " in caplog.text
        assert sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{name}.mha"))).max() <= 1
        assert_mask_for(out / f"{name}.mha", pet_dir / f"{name}.mha")
    assert caplog.text.count("recomputing it") == len(names) - 1


@pytest.mark.parametrize("problem", ["empty-folder", "one-corrupt", "manifest-lists-missing"])
def test_bad_weights_folders_exit_2_naming_the_file(tmp_path, capsys, problem):
    pet_dir, _, _ = folders(tmp_path)
    write(small_pet(), pet_dir / "a.mha")
    weights = tmp_path / "weights"
    weights.mkdir()
    if problem in ("one-corrupt", "manifest-lists-missing"):
        shutil.copy(HOTSPOT_WEIGHTS, weights / "fold0.pt")
    if problem == "one-corrupt":
        shutil.copy(HOTSPOT_WEIGHTS, weights / "fold1.pt")
        (weights / "fold2.pt").write_bytes(HOTSPOT_WEIGHTS.read_bytes()[:1000])
    if problem == "manifest-lists-missing":
        (weights / "manifest.json").write_text(json.dumps({"models": [{"file": "fold0.pt"}, {"file": "fold1.pt"}]}))
    assert run(tmp_path, "--weights", str(weights)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    expected = {"empty-folder": "no checkpoint files", "one-corrupt": "fold2.pt: not a readable",
                "manifest-lists-missing": "fold1.pt: checkpoint listed in manifest.json is missing"}[problem]
    assert expected in err[0]


def test_input_equal_to_output(tmp_path, caplog):
    pet_dir, _, _ = folders(tmp_path)
    write(small_pet(), pet_dir / "a.mha")
    root = tmp_path / "input"
    assert run(tmp_path, input_root=root, output_root=root) == 0
    assert_mask_for(root / OUT_SUB / "a.mha", pet_dir / "a.mha")
    with caplog.at_level("INFO"):
        assert run(tmp_path, input_root=root, output_root=root) == 0
    assert "a.mha: mask exists, skipped" in caplog.text
    # output nested inside the PET folder: its masks are never taken for PETs
    assert run(tmp_path, input_root=root, output_root=pet_dir) == 0
    assert run(tmp_path, input_root=root, output_root=pet_dir) == 0
    assert sorted(p.name for p in (pet_dir / OUT_SUB).iterdir()) == ["a.mha"]


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "a.mhd"
    real_execute = sitk.ImageFileWriter.Execute

    def execute_then_interrupt(self, *args):
        real_execute(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", execute_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_image_atomic(small_pet(), target)
    assert list(tmp_path.iterdir()) == []


def test_sigint_in_process_stops_with_130_and_restores_handlers(tmp_path, capsys, monkeypatch):
    pet_dir, _, out = folders(tmp_path)
    for name in ("a", "b", "c"):
        write(small_pet(), pet_dir / f"{name}.mha")
    import runner.folder

    real = runner.folder.segment_file

    def segment_then_signal(predictor, pet_path, ct_path, mask_path, *extras):
        if pet_path.name == "b.mha":
            os.kill(os.getpid(), signal.SIGINT)
        return real(predictor, pet_path, ct_path, mask_path, *extras)

    monkeypatch.setattr(runner.folder, "segment_file", segment_then_signal)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert run(tmp_path) == 130
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: interrupted by SIGINT while segmenting b.mha; 1 mask(s) written this run; "
                       "no partial mask left, rerun to go on")
    assert sorted(p.name for p in out.iterdir()) == ["a.mha"]


def test_sigterm_mid_run_exits_143_without_partial_masks(tmp_path):
    pet_dir, _, out = folders(tmp_path)
    for name in ("a", "b", "c", "d"):
        write(small_pet(size=(48, 44, 56)), pet_dir / f"{name}.mha")
    cmd = [sys.executable, "process.py", "--input", str(tmp_path / "input"), "--output", str(tmp_path / "output"),
           "--weights", str(HOTSPOT_WEIGHTS), "--device", "cpu", "--crop", "none"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = []
    deadline = time.monotonic() + 300
    # Signal once the first case is written: the next one is then certainly under way, however
    # loaded the machine is (signalling at the "case(s) in" line raced with start-up under load; a
    # 60 s deadline was passed once on a machine shared by four other runs, before a.mha existed).
    for line in proc.stderr:
        lines.append(line)
        if "a.mha: " in line or time.monotonic() > deadline:
            break
    assert any("a.mha: " in line for line in lines), "the first case was not written in 300 s:\n" + "".join(lines)
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, "".join(lines) + rest
    last = rest.strip().splitlines()[-1]
    assert last.startswith("error: interrupted by SIGTERM") and "Traceback" not in rest
    assert hidden(out) == []
    written = sorted(mask.name for mask in out.iterdir())
    assert "a.mha" in written and len(written) < 4, written
    for mask in out.iterdir():
        assert_mask_for(mask, pet_dir / mask.name)
