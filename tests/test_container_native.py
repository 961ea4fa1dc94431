"""The container's runtime, natively: non-root user, read-only input, no network, scratch in TMPDIR only.

No Docker engine runs on these machines, so this test runs the same entry point as the image
does under the platform's constraints (no network, an unprivileged user, the checkout reached
through ``tests/unprivileged.py`` so that a clone in a private home works too) and compares the
bundled case with ``test/expected_output`` as ``test.sh`` compares the container's output:
identical geometry, Dice >= 0.99.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.unprivileged import NOBODY, as_nobody, nobody_command

OUT_SUB = Path("images/automated-petct-lesion-segmentation")
TEST_INPUT = ROOT / "test" / "input"
EXPECTED = ROOT / "test" / "expected_output" / OUT_SUB

pytestmark = as_nobody


@pytest.fixture
def sandbox():
    """World-traversable scratch folders (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="native-container-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def confined(args: list[str], tmpdir: Path, home: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TMPDIR": str(tmpdir),
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "2"}
    cmd = nobody_command(tmpdir.parent, [str(tmpdir.parent / "app" / "process.py"), *args])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def prepare(sandbox: Path) -> tuple[Path, Path, Path, Path]:
    """Read-only input copy, an output folder and a scratch TMPDIR the user owns, a home it cannot write."""
    inp = sandbox / "input"
    shutil.copytree(TEST_INPUT, inp)
    for path in [inp, *inp.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    out, tmp, home = sandbox / "output", sandbox / "tmp", sandbox / "home"
    for folder in (out, tmp):
        folder.mkdir()
        os.chown(folder, NOBODY, NOBODY)
    home.mkdir(mode=0o555)
    return inp, out, tmp, home


def test_bundled_case_as_unprivileged_user_without_network(sandbox):
    assert EXPECTED.is_dir(), "test/expected_output is missing: run scripts/make_test_case.py"
    inp, out, tmp, home = prepare(sandbox)
    result = confined(["--input", str(inp), "--output", str(out), "--device", "cpu"], tmp, home)
    assert result.returncode == 0, result.stderr[-3000:]
    from scripts.compare_masks import main as compare

    assert compare([str(out / OUT_SUB), str(EXPECTED), "--min-dice", "0.99"]) == 0
    assert (out / "results.json").is_file()
    assert not any(home.iterdir()), "nothing may be written to HOME"
    assert sorted(p.name for p in inp.rglob("*")) == sorted(p.name for p in TEST_INPUT.rglob("*"))


def test_unwritable_output_fails_before_any_compute(sandbox):
    inp, out, tmp, home = prepare(sandbox)
    os.chown(out, 0, 0)
    out.chmod(0o755)  # owned by root: the unprivileged user cannot write there
    result = confined(["--input", str(inp), "--output", str(out), "--device", "cpu"], tmp, home)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "not writable" in last and str(out) in last
    assert "loaded" not in result.stderr  # it stopped before loading the networks
