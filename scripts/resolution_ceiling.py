"""Label round trip: the Dice of a lesion label taken to a working spacing and back.

    python -m scripts.resolution_ceiling --data data/phantoms/test --spacing 4 4 4

Why: the demo networks work at 4 mm and their masks are mapped back to the PET's 2.04 x 2.04 x 3 mm
grid, so small lesions lose boundary voxels. This script takes each lesion study's label onto the
working grid (the RAS grid at that spacing that preprocessing builds) as training does (nearest
neighbour: ``label``) or linearly interpolated (``soft``), maps it back as ``process.py`` maps
logits (linear, then > 0) and scores it with ``evaluation``. It estimates what a network that
reproduced its training labels exactly would score; it is not an upper bound, since a network's
logits can place a boundary between the voxel centres differently from the resampled label.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from common.geometry import Grid, Orientation
from evaluation.metrics import case_metrics
from model.preprocessing import resample_back, target_grid
from training.layouts import LayoutError, read_tcia

ROOT = Path(__file__).resolve().parents[1]


def round_trip(label: sitk.Image, spacing: tuple[float, float, float], interpolator: int) -> np.ndarray:
    """label (input grid) -> working grid -> input grid as a 0/1 array (z, y, x)."""
    source = Grid.of(label)
    work = target_grid(Orientation.of(source.direction).ras_grid(source), spacing)  # as preprocessing builds it
    low = sitk.Resample(sitk.Cast(label, sitk.sitkFloat32), work.reference(), sitk.Transform(), interpolator, 0.0)
    score = sitk.GetArrayFromImage(low).transpose(2, 1, 0) - 0.5  # a logit-like score: > 0 is lesion
    back = resample_back(score, work, source, default=-0.5)
    return (back > 0).transpose(2, 1, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="TCIA layout: <patient>/<study>/SEG.nii.gz")
    parser.add_argument("--spacing", type=float, nargs=3, default=(4.0, 4.0, 4.0), help="working spacing, mm")
    args = parser.parse_args(argv)
    spacing = tuple(float(s) for s in args.spacing)
    try:
        records = read_tcia(args.data)
    except LayoutError as err:
        raise SystemExit(f"error: {err}") from None
    rows = []
    for record in records:
        try:
            label = sitk.ReadImage(str(record.label), sitk.sitkUInt8)
        except RuntimeError as err:  # SimpleITK's message is many lines; keep its first
            first = (str(err).strip().splitlines() or ["?"])[0][:200]
            raise SystemExit(f"error: {record.label}: unreadable label ({first})") from None
        gt = sitk.GetArrayFromImage(label) > 0
        if not gt.any():
            continue
        dice = [case_metrics(gt, round_trip(label, spacing, interp), label.GetSpacing()).dice
                for interp in (sitk.sitkNearestNeighbor, sitk.sitkLinear)]
        rows.append(dice)
        print(f"{record.case_id}: {int(gt.sum())} lesion voxels, Dice label {dice[0]:.3f}, soft {dice[1]:.3f}",
              flush=True)
    if not rows:
        raise SystemExit(f"{args.data}: no study with a lesion")
    mean = np.mean(rows, axis=0)
    print(f"mean over {len(rows)} lesion studies at {spacing} mm: Dice label {mean[0]:.3f}, soft {mean[1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
