"""``python -m evaluation.mip``: a QA picture of one case, with the case's metrics in its title.

The drawing itself is ``lesion_report.mip`` (the lesion report draws the same picture).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from evaluation.metrics import CaseMetrics
from lesion_report.mip import save_mip_png


def metrics_title(name: str, m: CaseMetrics) -> str:
    """One-line title with the case's metrics."""
    dice = "n/a" if m.dice != m.dice else f"{m.dice:.3f}"
    return f"{name}   Dice {dice}   FPV {m.fpv_ml:.2f} ml   FNV {m.fnv_ml:.2f} ml   GT {m.gt_ml:.1f} ml"



def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m evaluation.mip``."""
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.mip",
        description="Write a QA picture: coronal and sagittal PET MIPs (SUV 0-10, inverted grey, head up) "
        "with the prediction in red and, if given, the ground truth in green. With --gt the title shows "
        "the case's Dice, false-positive and false-negative volume.",
    )
    parser.add_argument("--pet", type=Path, required=True, help="PET (SUV) image, .mha/.nii.gz/.nii")
    parser.add_argument("--pred", type=Path, required=True, help="predicted lesion mask (non-zero = lesion)")
    parser.add_argument("--gt", type=Path, help="ground-truth mask on the prediction's grid (optional)")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--title", default=None, help="title text (default: the PET file name + metrics)")
    parser.add_argument("--height", type=int, default=800, help="picture height in pixels (default 800)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (1 when an input cannot be read or grids differ)."""
    from evaluation.cases import CaseError, read_case_image
    from evaluation.metrics import evaluate_images

    args = build_parser().parse_args(argv)
    try:
        pet = read_case_image(args.pet)
        pred = read_case_image(args.pred)
        gt = read_case_image(args.gt) if args.gt is not None else None
        title = args.title if args.title is not None else args.pet.name
        if gt is not None and args.title is None:
            title = metrics_title(args.pet.name, evaluate_images(gt, pred))
        save_mip_png(pet, args.out, pred=pred, gt=gt, title=title, height_px=args.height)
    except (CaseError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
