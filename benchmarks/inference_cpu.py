"""CPU benchmark: process.py in its default (exact) and fast (body) crop against the seed-style pipeline.

Builds a whole-body phantom on the autoPET grid (400 x 400 in-plane, 2.0364 x 2.0364 x 3 mm),
runs the MONAI chain as the authors ran it (``benchmarks/monai_reference.py``) and ``process.py``
with ``--crop exact`` (the default) and ``--crop body`` on it with the same weights, each in its own
process so that its peak RSS is its own, and prints / writes per pipeline: seconds, peak RSS and
the mask's Dice against the seed style's.

    python -m benchmarks.inference_cpu --json benchmark_cpu.json [--weights weights] [--slices 326]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from model.network import add_weights_argument, weights_label

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_seed(pet: Path, weights: Path, out: Path, threads: int) -> dict:
    import numpy as np
    import SimpleITK as sitk
    import torch

    from benchmarks.monai_reference import reference_predict
    from model import Predictor

    torch.set_num_threads(threads)
    started = time.perf_counter()
    predictor = Predictor.from_weights(weights, device="cpu")  # only to load the same networks
    mask = reference_predict(pet, predictor.networks, predictor.config, device="cpu", sw_batch_size=8)
    seconds = time.perf_counter() - started
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)))
    image.CopyInformation(sitk.ReadImage(str(pet)))
    sitk.WriteImage(image, str(out), True)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def run_ours(pet: Path, weights: Path, out: Path, threads: int, crop: str) -> dict:
    import torch

    import process
    from common.errors import InputError

    torch.set_num_threads(threads)
    root = out.parent / "ours_io"
    (root / "input/images/pet").mkdir(parents=True, exist_ok=True)
    link = root / "input/images/pet" / pet.name
    if not link.exists():
        link.symlink_to(pet)
    started = time.perf_counter()
    code = process.main(["--input", str(root / "input"), "--output", str(root / "output"), "--weights", str(weights),
                         "--device", "cpu", "--overwrite", "--crop", crop, "--time-budget", "0"])
    seconds = time.perf_counter() - started
    if code != 0:
        raise InputError(f"process.py exited {code}")
    produced = root / "output/images/automated-petct-lesion-segmentation" / pet.name
    produced.replace(out)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def child(mode: str, pet: Path, weights: Path, out: Path, threads: int) -> dict:
    """Run one pipeline in a fresh interpreter so its peak RSS and start-up are its own."""
    cmd = [sys.executable, "-m", "benchmarks.inference_cpu", "--child", mode, "--pet", str(pet),
           "--weights", str(weights), "--mask-out", str(out), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{mode} pipeline failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mask_file_dice(a_path: Path, b_path: Path) -> float:
    import SimpleITK as sitk

    from common.masks import dice

    return dice(*(sitk.GetArrayFromImage(sitk.ReadImage(str(path))) for path in (a_path, b_path)), both_empty=1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the figures here")
    add_weights_argument(parser)
    parser.add_argument("--slices", type=int, default=326, help="slices of the phantom (>= 300 for the target)")
    parser.add_argument("--seed", type=int, default=3, help="phantom seed")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both pipelines")
    parser.add_argument("--child", choices=("seed", "exact", "body"), help=argparse.SUPPRESS)
    parser.add_argument("--pet", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mask-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        if args.child == "seed":
            result = run_seed(args.pet, args.weights, args.mask_out, args.threads)
        else:
            result = run_ours(args.pet, args.weights, args.mask_out, args.threads, args.child)
        print(json.dumps(result))
        return 0

    import SimpleITK as sitk

    from model import Predictor
    from training.phantoms import make_phantom

    predictor = Predictor.from_weights(args.weights, device="cpu")
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        tmp_path = Path(tmp)
        phantom = make_phantom(args.seed, shape=(400, 400, args.slices), lesions=True)
        pet = tmp_path / "pet.mha"
        sitk.WriteImage(phantom.pet, str(pet))
        print(f"phantom seed {args.seed}: {phantom.pet.GetSize()} at {phantom.pet.GetSpacing()} mm, "
              f"{len(phantom.info.get('lesions', []))} lesions; weights {args.weights} "
              f"({len(predictor.networks)} x '{predictor.config.name}')", flush=True)
        runs = {}
        for mode in ("seed", "exact", "body"):
            runs[mode] = child(mode, pet, args.weights, tmp_path / f"{mode}.mha", args.threads)
        for mode, run in runs.items():
            run["mask_dice_to_seed_style"] = round(mask_file_dice(tmp_path / f"{mode}.mha", tmp_path / "seed.mha"), 4)
            label = {"seed": "seed style (MONAI chain)", "exact": "process.py --crop exact (default)",
                     "body": "process.py --crop body (fast)"}[mode]
            print(f"{label:36s} {run['seconds']:7.1f} s  peak RSS {run['peak_rss_mb']:6.0f} MB  "
                  f"mask Dice to seed style {run['mask_dice_to_seed_style']}", flush=True)
    result = {
        "weights": weights_label(args.weights), "models": len(predictor.networks), "config": predictor.config.name,
        "roi": list(predictor.config.roi_size), "overlap": predictor.config.overlap, "shape": [400, 400, args.slices],
        "runs": {mode: {k: round(v, 4 if "dice" in k else 1) for k, v in run.items()} for mode, run in runs.items()},
        "speedup_exact": round(runs["seed"]["seconds"] / runs["exact"]["seconds"], 2),
        "speedup_body": round(runs["seed"]["seconds"] / runs["body"]["seconds"], 2),
        "threads": args.threads, "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
