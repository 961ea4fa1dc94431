"""autoPET IV's interactive protocol: a mask after 0, 1, ..., 10 clicks per label, scored at every step.

    python -m evaluation.interactive --weights W --pet PET --gt GT --steps 10 --out O

``--pet`` and ``--gt`` are files, or folders whose images are paired by name. At step 0 the network
runs without clicks; each later step adds at most one tumour and one background click, and the
mask is refined (``Predictor.refine``: only the windows the new clicks reach are run again). Per
step: Dice (over cases with lesions), FPV and FNV (ml, ``evaluation.metrics.aggregate``), and over
the steps their area under the curve (trapezoids, one unit per step, so a Dice of 1 at all 11
steps gives 10), as autoPET IV ranks by. Where the clicks go (``--clicks``):

- ``corrective`` (default): from the current mask's errors against the label, a tumour click at the
  centre of the largest missed lesion part and a background click at the centre of the largest
  false positive (the voxel deepest inside it, by a Euclidean distance transform);
- ``challenge``: fixed in advance from the label, as autoPET IV's click simulation describes it:
  tumour clicks at the centres of up to 10 lesions (26-connected, drawn at random, seed 42),
  background clicks at the centres of up to 10 components of high uptake outside lesions (PET above
  the 99.75th percentile of the non-lesion voxels); fewer components are topped up with edge voxels.

Writes ``<out>/interactive.json`` (per case and step, and the aggregate) and ``<out>/dice_by_clicks.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from common.atomic import write_atomic, write_json_atomic
from evaluation.cases import CaseError, images_by_stem, read_case_image
from evaluation.metrics import CaseMetrics, aggregate, evaluate_images
from model.guidance import NO_CLICKS, click_voxel

CLICK_MODES = ("corrective", "challenge")
#: autoPET IV: clicks drawn with this seed; background from uptake above this percentile of non-lesion voxels.
CHALLENGE_SEED, UPTAKE_PERCENTILE = 42, 99.75


@dataclass
class Step:
    """One step of one case: the clicks so far, the scores, and what the refinement cost."""

    step: int
    tumor_clicks: int
    background_clicks: int
    dice: float
    fpv_ml: float
    fnv_ml: float
    has_lesion: bool
    windows: int
    seconds: float
    #: The voxels (x, y, z) of the clicks this step added, None where none was.
    tumor_click: tuple[int, int, int] | None = None
    background_click: tuple[int, int, int] | None = None


def _xyz(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayViewFromImage(image).transpose(2, 1, 0)


def _centres(mask: np.ndarray, n: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Centres (deepest voxels) of up to ``n`` random 26-connected components, topped up with edge voxels."""
    labels, count = cc3d.connected_components(mask, connectivity=26, return_N=True)
    if count == 0:
        return []
    chosen = rng.choice(np.arange(1, count + 1), size=min(n, count), replace=False)
    out = [click_voxel(labels == k, "centre") for k in chosen]
    edges = np.argwhere(mask & ~ndimage.binary_erosion(mask))
    while len(out) < n and len(edges):
        out.append(tuple(int(v) for v in edges[rng.integers(len(edges))]))
    return out  # type: ignore[return-value]


def challenge_clicks(gt: np.ndarray, pet: np.ndarray, n: int = 10) -> dict[str, list[tuple[int, int, int]]]:
    """autoPET IV's pre-simulated clicks from the label (see the module's doc), as (x, y, z) voxels."""
    rng = np.random.default_rng(CHALLENGE_SEED)
    lesion = gt > 0
    outside = pet[~lesion]
    hot = (pet > np.percentile(outside, UPTAKE_PERCENTILE)) & ~lesion if outside.size else np.zeros_like(lesion)
    return {"tumor": _centres(lesion, n, rng), "background": _centres(hot, n, rng)}


def run_protocol(predictor: Any, pet: sitk.Image, gt: sitk.Image, steps: int = 10,
                 mode: str = "corrective") -> list[Step]:
    """Steps 0..``steps`` of one case: refine, score, place the next clicks."""
    if mode not in CLICK_MODES:
        raise ValueError(f"clicks must be one of {CLICK_MODES}, got {mode!r}")
    truth = _xyz(gt) > 0
    planned = challenge_clicks(truth, _xyz(pet), steps) if mode == "challenge" else None
    clicks, previous, out = NO_CLICKS, None, []
    added: dict[str, tuple[int, int, int] | None] = {"tumor": None, "background": None}
    for step in range(steps + 1):
        started = time.perf_counter()
        previous = predictor.refine(pet, clicks, previous)
        seconds = time.perf_counter() - started
        metrics: CaseMetrics = evaluate_images(gt, previous.mask)
        out.append(Step(step, len(clicks.tumor), len(clicks.background), metrics.dice, metrics.fpv_ml,
                        metrics.fnv_ml, metrics.has_lesion, previous.windows_run, round(seconds, 3),
                        added["tumor"], added["background"]))
        if step == steps:
            break
        mask = _xyz(previous.mask) > 0
        for label, error in (("tumor", truth & ~mask), ("background", mask & ~truth)):
            if planned is not None:
                voxel = planned[label][step] if step < len(planned[label]) else None
            else:
                voxel = click_voxel(error, "centre")
            added[label] = None if voxel is None else tuple(int(v) for v in voxel)
            if voxel is not None:
                clicks = clicks.plus(label, pet.TransformIndexToPhysicalPoint([int(v) for v in voxel]))
    return out


def auc(values: Sequence[float]) -> float:
    """Area under a per-step curve, trapezoids one unit wide (NaN steps left out of neither side)."""
    values = np.asarray(values, dtype=float)
    return float(np.sum((values[1:] + values[:-1]) / 2.0))


def summarise(cases: dict[str, list[Step]]) -> dict[str, Any]:
    """Per step the test-set figures (``evaluation.metrics.aggregate``) and their AUCs over the steps."""
    n_steps = min(len(s) for s in cases.values())
    rows = []
    for k in range(n_steps):
        agg = aggregate([CaseMetrics(dice=s[k].dice, fpv_ml=s[k].fpv_ml, fnv_ml=s[k].fnv_ml, gt_ml=float("nan"),
                                     pred_ml=float("nan"), has_lesion=s[k].has_lesion) for s in cases.values()])
        rows.append({"step": k, "dice": agg.mean_dice, "fpv_ml": agg.mean_fpv_ml, "fnv_ml": agg.mean_fnv_ml,
                     "windows": float(np.mean([s[k].windows for s in cases.values()])),
                     "seconds": float(np.mean([s[k].seconds for s in cases.values()]))})
    return {"steps": rows, "auc": {key: auc([r[key] for r in rows]) for key in ("dice", "fpv_ml", "fnv_ml")},
            "cases": len(cases), "cases_with_lesions": sum(s[0].has_lesion for s in cases.values())}


def plot(summaries: dict[str, dict[str, Any]], path: Path) -> None:
    """Dice against the number of clicks per label, one line per set or model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, summary in summaries.items():
        ax.plot([r["step"] for r in summary["steps"]], [r["dice"] for r in summary["steps"]], marker="o", label=name)
    ax.set_xlabel("clicks per label (tumour and background)")
    ax.set_ylabel("Dice (cases with lesions)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))


def _pairs(pet: Path, gt: Path) -> list[tuple[str, Path, Path]]:
    if pet.is_file() and gt.is_file():
        return [(pet.name, pet, gt)]
    pets, gts = images_by_stem(pet, "PET"), images_by_stem(gt, "ground-truth")
    missing = sorted(set(gts) - set(pets))
    if missing:
        raise CaseError(f"{pet}: no PET for {', '.join(missing[:5])}")
    return [(stem, pets[stem][0], gts[stem][0]) for stem in sorted(gts)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation.interactive", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, required=True, help="an interactive checkpoint or folder")
    p.add_argument("--pet", type=Path, required=True, help="a PET file, or a folder of them")
    p.add_argument("--gt", type=Path, required=True, help="its label, or a folder of labels named as the PETs")
    p.add_argument("--steps", type=int, default=10, help="clicks per label at the last step (default 10)")
    p.add_argument("--clicks", choices=CLICK_MODES, default="corrective", help="where clicks go (default corrective)")
    p.add_argument("--crop", default="exact", help="process.py's crop mode (default exact)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True, help="folder for interactive.json and dice_by_clicks.png")
    return p


def evaluate(weights: Path, pairs: list[tuple[str, Path, Path]], steps: int, mode: str, crop: str = "exact",
             device: str = "cpu") -> tuple[dict[str, list[Step]], dict[str, Any]]:
    """The protocol over cases; per case its steps, and the summary."""
    from tqdm import tqdm

    from model import Predictor

    predictor = Predictor.from_weights(weights, device=device, crop=crop)
    cases = {}
    for name, pet_path, gt_path in tqdm(pairs, desc="cases", unit="case", disable=len(pairs) < 2):
        cases[name] = run_protocol(predictor, read_case_image(pet_path, "PET"), read_case_image(gt_path, "label"),
                                   steps, mode)
    return cases, summarise(cases)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cases, summary = evaluate(args.weights, _pairs(args.pet, args.gt), args.steps, args.clicks, args.crop,
                                  args.device)
    except (CaseError, ValueError, RuntimeError, OSError) as err:  # one line, whatever the case or the network
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    write_json_atomic({"weights": str(args.weights), "clicks": args.clicks, "summary": summary,
                       "cases": {name: [asdict(s) for s in steps] for name, steps in cases.items()}},
                      args.out / "interactive.json")
    plot({args.clicks: summary}, args.out / "dice_by_clicks.png")
    for row in summary["steps"]:
        print(f"step {row['step']:2d}: Dice {row['dice']:.3f}  FPV {row['fpv_ml']:.2f} ml  FNV {row['fnv_ml']:.2f} ml")
    print("AUC: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["auc"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
