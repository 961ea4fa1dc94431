#!/usr/bin/env python3
"""Compare predicted segmentation masks with expected ones.

Used by test.sh (inside the built image, so the host needs no SimpleITK) to
check the container's output against ``test/expected_output``:

* every expected mask has a predicted mask with the same file name
  (when both sides hold exactly one file, the names may differ);
* identical geometry: size, spacing, origin and direction;
* identical pixel type (the challenge expects uint8);
* Dice of the foreground (voxels > 0) >= ``--min-dice`` (default 0.99); two
  empty masks count as Dice 1.

Exit status: 0 when every pair passes, 1 when any check fails, 2 on usage errors
(missing files or folders). Needs SimpleITK, numpy and the project's ``model`` package on the path
(test.sh runs it in the image with PYTHONPATH=/opt/app).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from common.images import is_image_file
from common.masks import dice


def collect(path: Path) -> list[Path]:
    """The mask files at ``path``: the file itself, or the files in the folder."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if is_image_file(p))
    if path.is_file():
        return [path]
    return []


def pair_up(predicted: list[Path], expected: list[Path]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Match predicted to expected files by name; report what is missing or extra."""
    if len(predicted) == 1 and len(expected) == 1:
        return [(predicted[0], expected[0])], []
    by_name = {p.name: p for p in predicted}
    pairs, problems = [], []
    for exp in expected:
        pred = by_name.pop(exp.name, None)
        if pred is None:
            problems.append(f"missing prediction for {exp.name}")
        else:
            pairs.append((pred, exp))
    problems.extend(f"unexpected prediction {name}" for name in sorted(by_name))
    return pairs, problems


def compare_pair(pred_path: Path, exp_path: Path, min_dice: float, atol: float) -> tuple[bool, dict]:
    pred = sitk.ReadImage(str(pred_path))
    exp = sitk.ReadImage(str(exp_path))
    failures: list[str] = []

    if pred.GetSize() != exp.GetSize():
        failures.append(f"size {pred.GetSize()} != expected {exp.GetSize()}")
    for name, getter in (("spacing", "GetSpacing"), ("origin", "GetOrigin"), ("direction", "GetDirection")):
        got, want = getattr(pred, getter)(), getattr(exp, getter)()
        if len(got) != len(want) or not np.allclose(got, want, rtol=0.0, atol=atol):
            got_text = tuple(round(v, 6) for v in got)
            want_text = tuple(round(v, 6) for v in want)
            failures.append(f"{name} {got_text} != expected {want_text}")
    pred_type, exp_type = pred.GetPixelIDTypeAsString(), exp.GetPixelIDTypeAsString()
    if pred_type != exp_type:
        failures.append(f"pixel type {pred_type} != expected {exp_type}")

    report = {
        "predicted": str(pred_path),
        "expected": str(exp_path),
        "pixel_type": pred_type,
        "size": list(pred.GetSize()),
    }
    if pred.GetSize() == exp.GetSize():
        p = sitk.GetArrayViewFromImage(pred)
        e = sitk.GetArrayViewFromImage(exp)
        score = dice(p, e, both_empty=1.0)
        report.update(
            dice=round(score, 6),
            predicted_voxels=int((p > 0).sum()),
            expected_voxels=int((e > 0).sum()),
        )
        if score < min_dice:
            failures.append(f"Dice {score:.4f} < {min_dice}")
    else:
        report["dice"] = None
    report["failures"] = failures
    return not failures, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predicted", type=Path, help="predicted mask file or folder of masks")
    parser.add_argument("expected", type=Path, help="expected mask file or folder of masks")
    parser.add_argument("--min-dice", type=float, default=0.99, help="lowest acceptable Dice (default 0.99)")
    parser.add_argument(
        "--atol", type=float, default=1e-4, help="tolerance for spacing/origin/direction (default 1e-4)"
    )
    parser.add_argument(
        "--results-json", type=Path, help="also require this file to exist and hold valid JSON"
    )
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = parser.parse_args(argv)

    expected = collect(args.expected)
    predicted = collect(args.predicted)
    if not expected:
        print(f"compare_masks: no expected masks at {args.expected}", file=sys.stderr)
        return 2
    if not predicted:
        print(f"compare_masks: FAIL: no predicted masks at {args.predicted}", file=sys.stderr)
        return 1

    pairs, problems = pair_up(predicted, expected)
    reports = []
    ok = not problems
    for pred_path, exp_path in pairs:
        passed, report = compare_pair(pred_path, exp_path, args.min_dice, args.atol)
        ok &= passed
        reports.append(report)
        status = "OK  " if passed else "FAIL"
        dice_text = "n/a" if report["dice"] is None else f"{report['dice']:.4f}"
        counts = f"{report.get('predicted_voxels', '?')} predicted / {report.get('expected_voxels', '?')}"
        print(
            f"{status} {pred_path.name}: Dice {dice_text} "
            f"({counts} expected foreground voxels), {report['pixel_type']}"
        )
        for failure in report["failures"]:
            print(f"     - {failure}")

    if args.results_json is not None:
        try:
            json.loads(args.results_json.read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"results file {args.results_json}: {exc}")
            ok = False

    for problem in problems:
        print(f"FAIL {problem}")
    if args.json:
        print(json.dumps({"ok": ok, "pairs": reports, "problems": problems}, indent=2))
    print("compare_masks: " + ("all masks match" if ok else "MISMATCH"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
