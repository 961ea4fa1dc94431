"""The README's quick start is what CI runs: the two stay the same commands."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def quick_start_blocks() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [[line for line in block.splitlines() if line.strip()] for block in blocks]


def test_quick_start_has_exactly_two_blocks():
    assert len(quick_start_blocks()) == 2


def test_ci_runs_the_readme_test_command():
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    test_block = quick_start_blocks()[1]
    assert ci[-len(test_block):] == test_block


def test_demo_block_uses_the_bundled_case_and_weights():
    demo = " ".join(quick_start_blocks()[0])
    assert "test/input" in demo and "process.py" in demo and "evaluation.mip" in demo
    assert (ROOT / "test/input/images/pet").is_dir()
