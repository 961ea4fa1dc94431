"""``python -m evaluation``: score a folder of predictions against a folder of ground truth.

A thin layer over evaluation.cases (pairing, grid checks, JSON) and evaluation.metrics (the numbers).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from common.atomic import write_json_atomic
from common.images import IMAGE_SUFFIXES, image_stem
from evaluation.cases import CaseError, check_grids, pair_cases, read_case_image
from evaluation.metrics import Aggregate, CaseMetrics, aggregate, evaluate_images

EPILOG = """\
metrics (autoPET II definitions; lesion = voxel > 0; components use 18-connectivity):
  dice     2|G and P| / (|G| + |P|); null (NaN) when both masks are empty, 0 when only one is
  fpv_ml   volume of predicted components that share no voxel with the ground truth
  fnv_ml   volume of ground-truth components that share no voxel with the prediction
aggregate:
  mean_dice         mean Dice over cases whose ground truth has a lesion
  leaderboard_dice  mean Dice over all cases, lesion-free cases counted as 0
  mean_fpv_ml       mean FPV over all cases
  mean_fnv_ml       mean FNV over cases with a lesion

exit codes: 0 done; 1 a prediction/PET is missing, unreadable or on another grid; 2 bad arguments.
"""


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m evaluation``."""
    parser = argparse.ArgumentParser(
        prog="python -m evaluation",
        description="Evaluate lesion segmentations with the autoPET II metrics (Dice, false-positive\n"
        "and false-negative volume). Files are paired by name: ground truth abc.nii.gz pairs with\n"
        f"prediction abc.nii.gz or abc.mha (extensions: {', '.join(IMAGE_SUFFIXES)}). Every pair must\n"
        "share its voxel grid (size, spacing, origin, direction); all pairs are checked before any\n"
        "metric is computed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--gt", type=Path, required=True, help="folder of ground-truth masks")
    parser.add_argument("--pred", type=Path, required=True, help="folder of predicted masks")
    parser.add_argument("--out", type=Path, help="write per-case metrics and the aggregate to this JSON file")
    parser.add_argument(
        "--pictures", type=Path, help="write a QA picture (PET MIPs with prediction and ground truth) "
        "per case into this folder as <case>.png; needs --pet",
    )
    parser.add_argument("--pet", type=Path, help="folder of PET (SUV) images named like the ground truth")
    parser.add_argument(
        "--pet-suffix", default="", help="suffix of PET stems, e.g. _0001 for nnU-Net style abc_0001.nii.gz",
    )
    parser.add_argument(
        "--tolerance", type=float, default=1e-3, help="grid tolerance: spacing/origin as a fraction of the "
        "smallest spacing, direction cosines absolute (default 1e-3)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the aggregate, no per-case table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _num(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def format_table(results: dict[str, CaseMetrics]) -> str:
    """Per-case table, one line per case."""
    width = max([4, *(len(name) for name in results)])
    lines = [f"{'case':<{width}}  {'dice':>6}  {'fpv_ml':>9}  {'fnv_ml':>9}  {'gt_ml':>9}  {'pred_ml':>9}"]
    for name, m in results.items():
        lines.append(
            f"{name:<{width}}  {_num(m.dice, 4):>6}  {m.fpv_ml:>9.3f}  {m.fnv_ml:>9.3f}  "
            f"{m.gt_ml:>9.3f}  {m.pred_ml:>9.3f}"
        )
    return "\n".join(lines)


def format_aggregate(agg: Aggregate) -> str:
    """The summary block."""
    return "\n".join(
        [
            f"cases: {agg.n_cases} ({agg.n_with_lesion} with lesion, {agg.n_without_lesion} lesion-free, "
            f"{agg.n_true_negative} of those with an empty prediction)",
            f"mean Dice (cases with lesion):           {_num(agg.mean_dice, 4)}",
            f"leaderboard Dice (lesion-free = 0):      {_num(agg.leaderboard_dice, 4)}",
            f"mean false-positive volume (all, ml):    {_num(agg.mean_fpv_ml, 3)}",
            f"mean false-negative volume (lesion, ml): {_num(agg.mean_fnv_ml, 3)}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pictures is not None and args.pet is None:
        parser.error("--pictures needs --pet (the PET images to project)")
    try:
        pairs, extra = pair_cases(args.gt, args.pred, args.pet, args.pet_suffix)
        if extra:
            print(f"warning: {len(extra)} prediction(s) without ground truth ignored: {', '.join(extra[:10])}"
                  + (" ..." if len(extra) > 10 else ""), file=sys.stderr)
        check_grids(pairs, args.tolerance)
        results: dict[str, CaseMetrics] = {}
        for case in tqdm(pairs, desc="evaluating", unit="case", disable=True if args.no_progress else None):
            gt, pred = read_case_image(case.label), read_case_image(case.prediction)
            metrics = evaluate_images(gt, pred, args.tolerance)
            results[case.case_id] = metrics
            if args.pictures is not None and case.pet is not None:
                from evaluation.mip import metrics_title  # matplotlib only when needed
                from lesion_report.mip import save_mip_png

                save_mip_png(read_case_image(case.pet), args.pictures / f"{image_stem(case.label)}.png", pred=pred,
                             gt=gt, title=metrics_title(case.case_id, metrics))
    except (CaseError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    agg = aggregate(results.values())
    if not args.quiet:
        print(format_table(results))
        print()
    print(format_aggregate(agg))
    if args.out is not None:
        report = {"cases": {k: v.to_dict() for k, v in results.items()}, "aggregate": agg.to_dict()}
        write_json_atomic(report, args.out)
        print(f"wrote {args.out}")
    return 0
