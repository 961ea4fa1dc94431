"""Where this project's masks differ from the seed-style MONAI pipeline's, and why.

Runs the MONAI reference chain (``tests.reference_pipeline``) and ``Predictor`` with each crop mode
("none", "exact", "body") on one whole-body phantom with the same networks, and prints the Dice of
each mask against the reference, the voxels on which they disagree split into inside and outside
the body box, and how far the per-network scores differ. With ``--device cuda`` it also runs the
body-crop path on the CPU in fp32, so the GPU's fp16 masks are checked against it.
``--baseline cpu-none`` replaces the MONAI chain by ``Predictor(crop="none")`` on the CPU in fp32
(where ITK, which the reference's reader needs, is not installed): on the CPU the two give the same
scores (``tests/test_inference.py``; run without ``--baseline`` to see it here).

    python -m benchmarks.mask_agreement --weights weights --models 1 --json OUT.json [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git_revision() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=ROOT / "weights", help="checkpoint file or folder")
    parser.add_argument("--models", type=int, default=0, help="use the first N networks (0 = all)")
    parser.add_argument("--seed", type=int, default=3, help="phantom seed")
    parser.add_argument("--slices", type=int, default=326)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--baseline", choices=("reference", "cpu-none"), default="reference",
                        help="what the masks are compared with")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import numpy as np
    import SimpleITK as sitk
    import torch

    from model import Predictor
    from model.cropping import BACKGROUND_SCORE
    from model.ensemble import vote
    from model.masks import dice
    from model.network import CheckpointError
    from tests.reference_pipeline import reference_predict
    from training.phantoms import make_phantom

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        loaded = Predictor.from_weights(args.weights, device="cpu")
    except CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    networks = loaded.networks[: args.models or None]
    config = loaded.config
    phantom = make_phantom(args.seed, shape=(400, 400, args.slices), lesions=True)
    truth = sitk.GetArrayFromImage(phantom.label).transpose(2, 1, 0) > 0
    result: dict = {"code": _git_revision(), "weights": str(args.weights), "models": len(networks),
                    "config": config.name, "device": args.device, "shape": list(phantom.pet.GetSize()),
                    "truth_voxels": int(truth.sum())}
    print(f"phantom seed {args.seed} {phantom.pet.GetSize()}, {len(networks)} x '{config.name}' on {args.device}",
          flush=True)

    started = time.perf_counter()
    if args.baseline == "reference":
        with tempfile.TemporaryDirectory(prefix="agreement-") as tmp:
            pet_path = Path(tmp) / "pet.mha"
            sitk.WriteImage(phantom.pet, str(pet_path))
            _, ref_scores = reference_predict(pet_path, networks, config, device=args.device, return_scores=True)
    else:
        ref_scores = Predictor(networks, config, device="cpu", crop="none").predict_scores(phantom.pet)
    ref = vote(ref_scores, config.vote)
    result["baseline"] = args.baseline
    result["reference_s"] = round(time.perf_counter() - started, 2)
    result["reference_voxels"] = int(ref.sum())
    result["reference_dice_to_truth"] = round(dice(ref, truth), 4)
    print(f"reference: {result['reference_s']} s, {int(ref.sum())} voxels", flush=True)

    runs = [("none", args.device), ("exact", args.device), ("body", args.device)]
    if args.device != "cpu":
        runs.append(("body", "cpu"))
    masks = {}
    for crop, device in runs:
        predictor = Predictor(networks, config, device=device, crop=crop)
        if device != "cpu" and not masks:  # first GPU call: cuDNN autotuning, not part of the timing
            predictor.predict_scores(phantom.pet)
        started = time.perf_counter()
        scores = predictor.predict_scores(phantom.pet)
        seconds = time.perf_counter() - started
        mask = vote(scores, config.vote)
        outside = (scores == BACKGROUND_SCORE).all(axis=0)  # voxels the crop never computed
        differ = mask != ref
        finite = ~outside
        row = {
            "crop": crop, "device": device, "seconds": round(seconds, 2), "windows": predictor.last_info.windows,
            "voxels": int(mask.sum()), "dice_to_reference": round(dice(mask, ref), 4),
            "dice_to_truth": round(dice(mask, truth), 4),
            "differ_inside_box": int((differ & finite).sum()), "differ_outside_box": int((differ & outside).sum()),
            "reference_lesion_outside_box": int((ref & outside).sum()),
            "score_max_abs_diff_inside": round(float(np.abs(scores - ref_scores)[:, finite].max()), 4),
            "score_sign_flips_inside": int(((scores > 0) != (ref_scores > 0))[:, finite].sum()),
        }
        masks[(crop, device)] = mask
        if device == "cpu" and (crop, args.device) in masks and args.device != "cpu":
            row["dice_to_same_crop_on_" + args.device] = round(dice(mask, masks[(crop, args.device)]), 4)
        result.setdefault("runs", []).append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
