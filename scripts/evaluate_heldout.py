"""Score shipped weights on a held-out phantom set: the ensemble and its best single network.

    python -m scripts.evaluate_heldout --data data/phantoms/test --weights weights --out docs/heldout

``--data`` is a TCIA-layout folder (``<patient>/<study>/SUV.nii.gz, SEG.nii.gz``) that no fold
trained on. Each case is run through ``process.py`` exactly as a user runs it, then scored with
``python -m evaluation``. Writes ``<out>/ensemble.json``, ``<out>/single.json`` and prints a
Markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from model.network import add_weights_argument

ROOT = Path(__file__).resolve().parents[1]


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


def best_single(weights: Path) -> Path:
    """The fold with the best validation Dice in the manifest (on the whole fold when export recorded it)."""
    manifest = json.loads((weights / "manifest.json").read_text())

    def score(entry: dict) -> float:
        value = entry.get("val_full_dice", entry.get("val_dice"))
        return float(value) if value is not None else -1.0

    return weights / max(manifest["models"], key=score)["file"]


def run(input_root: Path, gt: Path, weights: Path, out_json: Path, work: Path) -> dict:
    output = work / f"output-{out_json.stem}"
    subprocess.run([sys.executable, str(ROOT / "process.py"), "--input", str(input_root), "--output", str(output),
                    "--weights", str(weights), "--device", "cpu"], check=True)
    subprocess.run([sys.executable, "-m", "evaluation", "--gt", str(gt), "--pred",
                    str(output / "images/automated-petct-lesion-segmentation"), "--out", str(out_json),
                    "--no-progress"], check=True, cwd=ROOT)
    return json.loads(out_json.read_text())["aggregate"]


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data/phantoms/test")
    add_weights_argument(parser)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/heldout")
    parser.add_argument("--limit", type=int, help="only the first N cases (sorted by case id)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="heldout-") as tmp:
        work = Path(tmp)
        input_root, gt = stage(args.data, work, args.limit)
        single_path = best_single(args.weights)
        rows = {"ensemble": run(input_root, gt, args.weights, args.out / "ensemble.json", work),
                f"best single ({single_path.name})": run(input_root, gt, single_path, args.out / "single.json", work)}
    print("| model | Dice (cases with lesions) | leaderboard Dice | mean FPV ml | mean FNV ml | cases |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, agg in rows.items():
        print(f"| {name} | {_fmt(agg['mean_dice'], 3)} | {_fmt(agg['leaderboard_dice'], 3)} "
              f"| {_fmt(agg['mean_fpv_ml'], 2)} | {_fmt(agg['mean_fnv_ml'], 2)} "
              f"| {agg['n_cases']} ({agg['n_with_lesion']} with lesions) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
