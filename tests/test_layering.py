"""The packages stand on each other in one direction only: no import runs up (or sideways).

    rank 0  common                  image files, grids, atomic writes, the case record
    rank 1  model, lesion_report    the pipeline and its weights; lesions, the report, the MIP drawing
    rank 2  runner, evaluation      folders of cases, formats, DICOM, shards; the challenge's metrics
    rank 3  training                recipes, fitting, phantoms
    rank 4  benchmarks, scripts     measurements and tools over all of the above
            process.py, tests       the entry point and the tests stand on top

Every import counts, the lazy ones inside functions too. Packages of one rank do not import each
other, so ``model`` never needs ``lesion_report`` to run and the other way round.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

RANKS = {"common": 0, "model": 1, "lesion_report": 1, "runner": 2, "evaluation": 2, "training": 3,
         "benchmarks": 4, "scripts": 4}
#: Packages whose modules must import neither torch nor MONAI (they load in light tools and tests).
NO_TORCH = ("common",)


def imports_of(source: str, module: str) -> set[str]:
    """Top-level names of every module ``source`` imports (relative imports resolved from ``module``)."""
    names: set[str] = set()
    package = module.split(".")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level]
                names.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.add(node.module)
    return {name.split(".")[0] for name in names if name}


def violations(source: str, module: str) -> list[str]:
    """The imports of ``module`` that run up or sideways (as "module -> package" lines)."""
    own = module.split(".")[0]
    rank = RANKS[own]
    out = [f"{module} -> {name}" for name in sorted(imports_of(source, module))
           if name in RANKS and name != own and RANKS[name] >= rank]
    if own in NO_TORCH:
        out += [f"{module} -> {name} (torch-free package)" for name in sorted(imports_of(source, module))
                if name in ("torch", "monai")]
    return out


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in RANKS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def test_the_checker_sees_an_upward_a_sideways_and_a_lazy_import():
    upward = "from runner.folder import FolderRun\n"
    sideways = "def f():\n    from lesion_report.mip import save_mip_png\n"
    relative_up = "from ..runner import folder\n"
    assert violations(upward, "model.predictor") == ["model.predictor -> runner"]
    assert violations(sideways, "model.predictor") == ["model.predictor -> lesion_report"]
    assert violations(relative_up, "model.sub.thing") == []  # resolves to model.runner, inside the package
    assert violations("import torch\n", "common.images") == ["common.images -> torch (torch-free package)"]
    assert violations("from common.images import read_image\nfrom model import Predictor\n", "runner.case") == []


def test_no_package_imports_one_above_or_beside_it():
    found = [line for module, path in project_modules().items()
             for line in violations(path.read_text(encoding="utf-8"), module)]
    assert not found, "imports against the layering:\n" + "\n".join(found)


def _closure(start: Path) -> set[str]:
    """The project packages ``start`` needs at run time, following every import (lazy ones too)."""
    modules = project_modules()
    seen: set[str] = set()
    todo = [("process", start)]
    while todo:
        module, path = todo.pop()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = module.split(".")[: len(module.split(".")) - node.level] if node.level else []
                head = ".".join(base + ([node.module] if node.module else []))
                targets = [head] + [f"{head}.{a.name}" for a in node.names]
            for target in targets:
                if target in modules and target not in seen:
                    seen.add(target)
                    todo.append((target, modules[target]))
    return {name.split(".")[0] for name in seen}


def test_the_container_copies_exactly_the_packages_process_py_imports():
    needed = _closure(ROOT / "process.py")
    assert {"common", "model", "runner", "lesion_report"} <= needed
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    copied = set(re.findall(r"^COPY (\w+)/ /opt/app/", dockerfile, flags=re.MULTILINE))
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    allowed = {line.strip()[1:].rstrip("/") for line in ignore.splitlines() if line.startswith("!")}
    assert copied - {"weights"} == needed, f"Dockerfile copies {sorted(copied)}, process.py needs {sorted(needed)}"
    assert needed <= allowed, f".dockerignore keeps out {sorted(needed - allowed)}"
