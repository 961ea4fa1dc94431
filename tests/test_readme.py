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


def test_readme_points_to_help_and_names_only_real_flags():
    """The README sends users to --help for the full list, and every process.py flag it names exists."""
    import process

    text = (ROOT / "README.md").read_text()
    assert "python process.py --help" in text
    parser_flags = {flag for action in process.build_parser()._actions for flag in action.option_strings}
    section = text.split("## Run the container", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(--[a-z][a-z-]+)", section))
    assert named and named <= parser_flags, named - parser_flags


def test_readme_is_a_short_guide_that_links_the_method():
    """A user's guide, not a notebook: at most 6.5 KB, and it says where the paper, the challenge, the
    authors' code and their weights are; the entry point stays thin glue."""
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 6656, len(text.encode())
    for link in ("arxiv.org/abs/2309.12114", "autopet-ii.grand-challenge.org", "github.com/matt3o/AutoPET2-Submission",
                 "bwsyncandshare.kit.edu"):
        assert link in text, link
    assert len((ROOT / "process.py").read_text().splitlines()) <= 130
