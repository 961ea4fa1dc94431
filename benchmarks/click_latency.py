"""What one more click costs against computing everything afresh, on a whole-body phantom on the CPU.

    python -m benchmarks.click_latency --json docs/benchmarks/click_latency.json

An interactive network (``--weights``; by default the shipped ``weights/interactive``, or else the
shipped automatic fold 0 with two zero-weighted click channels, which costs the same) refines a
whole-body phantom (autoPET's grid, 400 x 400 x ~330 voxels) with one tumour click on its largest
lesion, then a background click far from it. The second refinement reuses the first's windows
(``Predictor.refine(..., previous=...)``); it is compared with a fresh refinement with both clicks:
seconds, windows run, and whether the masks are identical (they must be).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parents[1]


def interactive_predictor(weights: Path | None, crop: str):
    from model import Predictor
    from model.network import DEFAULT_INTERACTIVE_WEIGHTS, DEFAULT_WEIGHTS, load_checkpoint
    from training.widen import with_click_channels

    path = weights or (DEFAULT_INTERACTIVE_WEIGHTS if DEFAULT_INTERACTIVE_WEIGHTS.exists() else None)
    if path is not None:
        return Predictor.from_weights(path, device="cpu", crop=crop), str(path)
    loaded = load_checkpoint(DEFAULT_WEIGHTS / "fold0.pt")
    config = loaded.config.with_guidance("disk", name="fold0-with-click-channels")
    return Predictor([with_click_channels(loaded.network, loaded.config, config)], config, device="cpu",
                     crop=crop), "weights/fold0.pt + zero click channels"


def main(argv: list[str] | None = None) -> int:
    from model.guidance import Clicks
    from training.phantoms import make_phantom

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--seed", type=int, default=50000, help="phantom seed (default: the first held-out one)")
    p.add_argument("--crop", default="exact")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    predictor, label = interactive_predictor(args.weights, args.crop)
    phantom = make_phantom(args.seed, lesions=True)
    pet = phantom.pet
    lesion = phantom.info["lesions"][0]["centre_mm"]
    size = np.asarray(pet.GetSize())
    far = pet.TransformIndexToPhysicalPoint([int(v) for v in (size * [0.5, 0.5, 0.15]).astype(int)])
    first, both = Clicks(tumor=[lesion]), Clicks(tumor=[lesion], background=[far])

    started = time.perf_counter()
    one = predictor.refine(pet, first)
    full_one_s = time.perf_counter() - started
    started = time.perf_counter()
    incremental = predictor.refine(pet, both, previous=one)
    click_s = time.perf_counter() - started
    started = time.perf_counter()
    fresh = predictor.refine(pet, both)
    full_s = time.perf_counter() - started
    same = bool(np.array_equal(sitk.GetArrayViewFromImage(incremental.mask), sitk.GetArrayViewFromImage(fresh.mask)))
    record = {
        "command": "python -m benchmarks.click_latency" + (f" --weights {args.weights}" if args.weights else ""),
        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
        "threads": args.threads, "weights": label, "phantom_seed": args.seed, "shape": list(pet.GetSize()),
        "crop": args.crop, "windows_total": fresh.windows_total,
        "first_click_full_pass_s": round(full_one_s, 2),
        "second_click_s": round(click_s, 2), "second_click_windows": incremental.windows_run,
        "both_clicks_afresh_s": round(full_s, 2), "speedup": round(full_s / click_s, 2),
        "masks_identical": same,
    }
    print(json.dumps(record, indent=2))
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
