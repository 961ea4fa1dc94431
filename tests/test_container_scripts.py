"""Fast static checks of the container files (no engine, no image build).

The container itself is exercised by ./test.sh; these tests only make sure the
Dockerfile, the shell scripts and scripts/compare_masks.py keep the properties
the challenge needs.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["build.sh", "test.sh", "export.sh", "scripts/build_standin_base.sh"]
LIBRARIES = ["scripts/container_lib.sh"]  # sourced, not run


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _pinned(requirements: Path, package: str) -> str | None:
    for line in requirements.read_text().splitlines():
        match = re.match(rf"^\s*{re.escape(package)}\s*==\s*([^\s;#]+)", line, flags=re.IGNORECASE)
        if match:
            return match.group(1)
    return None


def test_base_image_matches_torch_pin():
    match = re.search(r"^ARG BASE_IMAGE=(?:docker\.io/)?pytorch/pytorch:(\S+)$", _dockerfile(), flags=re.MULTILINE)
    assert match, "Dockerfile must default BASE_IMAGE to an official pytorch/pytorch tag"
    tag = match.group(1)
    torch_pin = _pinned(ROOT / "requirements-dev.txt", "torch")
    assert torch_pin, "requirements-dev.txt pins torch"
    assert tag.startswith(f"{torch_pin}-cuda"), f"base tag {tag} does not carry torch {torch_pin} with CUDA"
    assert "runtime" in tag, "use the smaller runtime flavour of the base image"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", _dockerfile(), flags=re.MULTILINE)


def test_runtime_requirements_do_not_install_torch():
    assert _pinned(ROOT / "requirements.txt", "torch") is None, "torch must come from the base image"
    text = _dockerfile()
    assert "--no-cache-dir" in text
    assert "-c /tmp/torch-constraint.txt" in text, "pip must be constrained to the base image's torch"


def test_runs_as_unprivileged_user_with_caches_in_tmp():
    text = _dockerfile()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    for var in ("HOME", "XDG_CACHE_HOME", "TORCH_HOME", "MPLCONFIGDIR"):
        assert re.search(rf"\b{var}=/tmp\b", text), f"{var} should point into /tmp"
    assert 'ENTRYPOINT ["python", "/opt/app/process.py"]' in text
    for source in ("process.py", "common/", "model/", "lesion_report/", "runner/", "weights/"):
        assert re.search(rf"^COPY {re.escape(source)} ", text, flags=re.MULTILINE), f"COPY {source} missing"


def test_dockerignore_keeps_context_small():
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", ".dockerignore should exclude everything, then allow what the image needs"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"process.py", "common", "model", "lesion_report", "runner", "weights", "requirements.txt"} <= allowed
    assert not allowed & {".venv", "data", "runs", "outputs", "tests", "test", ".git"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_shell_scripts_are_strict_and_parse(script):
    path = ROOT / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean():
    subprocess.run(["shellcheck", "-x", *(str(ROOT / s) for s in SCRIPTS + LIBRARIES)], check=True, cwd=ROOT)


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed")
def test_hadolint_clean():
    subprocess.run(["hadolint", str(ROOT / "Dockerfile")], check=True)


def test_test_sh_mirrors_the_organisers_run():
    text = (ROOT / "test.sh").read_text()
    for flag in (
        "--network none",
        "--cap-drop ALL",
        "--security-opt no-new-privileges",
        '--memory "$MEMORY" --memory-swap "$MEMORY"',
        "--pids-limit 256",
        '--shm-size "$SHM_SIZE"',
        "/input:ro",
    ):
        assert flag in text, f"test.sh lacks {flag}"
    assert "tests/test_container_native.py" in text


def _compare_module():
    spec = importlib.util.spec_from_file_location("compare_masks", ROOT / "scripts" / "compare_masks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_masks_geometry_and_dice(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    compare = _compare_module()
    mask = np.zeros((6, 8, 10), np.uint8)
    mask[2:4, 2:6, 3:7] = 1

    def write(name: str, array: np.ndarray, spacing=(2.0, 2.0, 3.0)) -> Path:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        image.SetOrigin((-10.0, 5.0, 100.0))
        folder = tmp_path / name
        folder.mkdir()
        sitk.WriteImage(image, str(folder / "case.mha"))
        return folder

    expected = write("expected", mask)
    assert compare.main([str(write("same", mask)), str(expected)]) == 0
    assert compare.main([str(write("spacing", mask, spacing=(2.0, 2.0, 3.5))), str(expected)]) == 1
    half = mask.copy()
    half[2] = 0
    assert compare.main([str(write("half", half)), str(expected)]) == 1
    assert compare.main([str(write("as_float", mask.astype(np.float32))), str(expected)]) == 1
    assert compare.main([str(tmp_path / "missing"), str(expected)]) == 1
    empty = np.zeros_like(mask)  # two empty masks agree (Dice 1), as the docstring says
    assert compare.main([str(write("empty_pred", empty)), str(write("empty_expected", empty))]) == 0
