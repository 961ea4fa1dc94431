"""Score weights on the held-out phantom sets, side by side: in-distribution and shifted.

    python -m scripts.evaluate_heldout --weights weights runs/new/weights --crop body \\
        --table docs/heldout/results.md --json-dir docs/heldout

Each ``--sets`` entry is ``NAME=FOLDER``, a TCIA-layout folder (``<patient>/<study>/SUV.nii.gz,
SEG.nii.gz``) that no fold trained on; by default ``standard`` (data/phantoms/test, seeds
50000-50019 of the standard profile, the shipped weights' own distribution) and ``shifted``
(data/phantoms/test-shifted, seeds 60000-60019 of the shifted profile, outside the training
ranges; docs/phantoms.md#ranges). Each case is run through ``process.py`` exactly as a user runs it
(same flags for every model), then scored with ``python -m evaluation``.

Prints one Markdown row per model with every set's figures; ``--table`` also writes them into a
results table (a row per model, replaced when the same weights are scored again), and
``--json-dir`` keeps the per-case scores as ``<json-dir>/<set>.json`` (for the shipped weights).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from model.cropping import CROP_MODES

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SETS = ("standard=data/phantoms/test", "shifted=data/phantoms/test-shifted")
COLUMNS = ("Dice", "FPV ml", "FNV ml")


def stage(data: Path, work: Path, limit: int | None = None) -> tuple[Path, Path]:
    """Challenge-style input (images/pet/<case>.nii.gz) and a ground-truth folder, as symlinks."""
    from training.layouts import read_tcia

    pet_dir, gt_dir = work / "input/images/pet", work / "gt"
    pet_dir.mkdir(parents=True)
    gt_dir.mkdir()
    for record in read_tcia(data)[:limit]:
        os.symlink(record.pet.resolve(), pet_dir / f"{record.case_id}.nii.gz")
        os.symlink(record.label.resolve(), gt_dir / f"{record.case_id}.nii.gz")
    return work / "input", gt_dir


def score(input_root: Path, gt: Path, weights: Path, out_json: Path, work: Path, crop: str | None) -> dict:
    """process.py on the staged cases, then the challenge metrics; returns the aggregate."""
    output = work / "output"
    command = [sys.executable, str(ROOT / "process.py"), "--input", str(input_root), "--output", str(output),
               "--weights", str(weights), "--device", "cpu"]
    subprocess.run(command + (["--crop", crop] if crop else []), check=True)
    subprocess.run([sys.executable, "-m", "evaluation", "--gt", str(gt), "--pred",
                    str(output / "images/automated-petct-lesion-segmentation"), "--out", str(out_json),
                    "--no-progress"], check=True, cwd=ROOT)
    return json.loads(out_json.read_text())["aggregate"]


def model_label(weights: Path) -> str:
    """The weights' path and, from their manifest, the run that made them."""
    manifest = weights / "manifest.json" if weights.is_dir() else weights.with_name("manifest.json")
    run = json.loads(manifest.read_text()).get("run") if manifest.is_file() else None
    return f"`{weights}`" + (f" ({run})" if run else "")


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def cells(agg: dict) -> list[str]:
    """Dice over the cases with lesions, mean FPV over all cases, mean FNV over the cases with lesions."""
    return [_fmt(agg["mean_dice"], 3), _fmt(agg["mean_fpv_ml"], 2), _fmt(agg["mean_fnv_ml"], 2)]


def header(sets: list[tuple[str, Path, int, int]]) -> list[str]:
    names = [f"{name} ({n} cases, {n_lesion} with lesions): {col}" for name, _, n, n_lesion in sets for col in COLUMNS]
    return ["| model | " + " | ".join(names) + " |", "|" + " --- |" * (1 + len(names))]


def table_sets(path: Path) -> list[str] | None:
    """The set names of an existing results table's header (None: no table yet)."""
    if not path.is_file():
        return None
    header_line = next((line for line in path.read_text().splitlines() if line.startswith("| model |")), "")
    names = [cell.split(" (")[0] for cell in header_line.strip("| ").split(" | ")[1:]]
    return list(dict.fromkeys(names))


def update_table(path: Path, head: list[str], rows: dict[str, str], note: str) -> None:
    """Write ``rows`` into the Markdown table at ``path``: same model label replaces its row, others stay,
    and so do the remarks written under the table (what each row is, when it was measured)."""
    kept: dict[str, str] = {}
    remarks: list[str] = []
    if path.is_file():
        lines = path.read_text().splitlines()
        last_row = max((i for i, line in enumerate(lines) if line.startswith("|")), default=len(lines))
        for line in lines:
            if line.startswith("| `"):
                kept[line.split(" | ")[0][2:]] = line
        remarks = lines[last_row + 1:]
    kept.update(rows)
    while remarks and not remarks[0].strip():
        remarks.pop(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["# Held-out phantoms", "", note, "", *head, *kept.values(),
                               *(["", *remarks] if remarks else [])]) + "\n")


def parse_sets(items: list[str]) -> list[tuple[str, Path]]:
    out = []
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"error: --sets takes NAME=FOLDER, got {item!r}")
        path = Path(folder) if Path(folder).is_absolute() else ROOT / folder
        if not path.is_dir():
            raise SystemExit(f"error: {path}: no such folder (make it with python -m training.phantoms, "
                             "docs/training.md#held-out-sets)")
        out.append((name, path))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, nargs="+", default=[ROOT / "weights"],
                        help="one or more weight folders (or checkpoint files), each scored as one model")
    parser.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS), metavar="NAME=FOLDER")
    parser.add_argument("--crop", choices=CROP_MODES, help="process.py's --crop (default: process.py's own)")
    parser.add_argument("--limit", type=int, help="only the first N cases of each set (sorted by case id)")
    parser.add_argument("--table", type=Path, help="write the rows into this Markdown results table")
    parser.add_argument("--json-dir", type=Path, help="keep the per-case scores as <dir>/<set>.json")
    args = parser.parse_args(argv)
    if args.json_dir and len(args.weights) > 1:
        parser.error("--json-dir keeps one model's per-case scores: give one --weights with it")
    sets = parse_sets(args.sets)
    existing = table_sets(args.table) if args.table else None
    if existing is not None and existing != [name for name, _ in sets]:
        parser.error(f"{args.table} compares the sets {existing}; score those (--sets) or write another --table")
    rows: dict[str, str] = {}
    counts: list[tuple[str, Path, int, int]] = []
    for weights in args.weights:
        label, row = model_label(weights), []
        counts = []
        for name, folder in sets:
            with tempfile.TemporaryDirectory(prefix="heldout-") as tmp:
                work = Path(tmp)
                input_root, gt = stage(folder, work, args.limit)
                out_json = (args.json_dir / f"{name}.json") if args.json_dir else work / f"{name}.json"
                out_json.parent.mkdir(parents=True, exist_ok=True)
                agg = score(input_root, gt, weights, out_json, work, args.crop)
            counts.append((name, folder, agg["n_cases"], agg["n_with_lesion"]))
            row += cells(agg)
        rows[label] = f"| {label} | " + " | ".join(row) + " |"
    head = header(counts)
    print("\n".join([*head, *rows.values()]))
    if args.table:
        crop = args.crop or "process.py's default"
        cases = f"the first {args.limit} cases of each set" if args.limit else "every case"
        flags = " ".join([f"--sets {' '.join(args.sets)}", *([f"--crop {args.crop}"] if args.crop else []),
                          *([f"--limit {args.limit}"] if args.limit else []), f"--table {args.table}"])
        note = (f"Written by `python -m scripts.evaluate_heldout --weights MODEL {flags}` (crop: {crop}; {cases}). "
                "Dice: mean over the cases "
                "with lesions; FPV: mean over all cases; FNV: mean over the cases with lesions (ml). Sets: "
                + ", ".join(f"{name} = `{folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder}`"
                            for name, folder, _, _ in counts) + ".")
        update_table(args.table, head, rows, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
