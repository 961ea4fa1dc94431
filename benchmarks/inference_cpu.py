"""CPU benchmark: this project's process.py path against the seed-style MONAI pipeline.

Builds a whole-body phantom on the autoPET grid (400 x 400 in-plane, 2.0364 x 2.0364 x 3 mm),
runs both pipelines on it with the same weights, each in its own process so that its peak RSS is
its own, and prints / writes: seed_style_s, ours_s, speedup, mask_dice, and the peak RSS of each.

    python benchmarks/inference_cpu.py --json benchmark_cpu.json [--weights weights] [--slices 326]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_seed(pet: Path, weights: Path, out: Path, threads: int) -> dict:
    import numpy as np
    import SimpleITK as sitk
    import torch

    from model.inference import Predictor
    from model.reference import reference_predict

    torch.set_num_threads(threads)
    started = time.perf_counter()
    predictor = Predictor.from_weights(weights, device="cpu")  # only to load the same networks
    mask = reference_predict(pet, predictor.networks, predictor.config, device="cpu", sw_batch_size=8)
    seconds = time.perf_counter() - started
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)))
    image.CopyInformation(sitk.ReadImage(str(pet)))
    sitk.WriteImage(image, str(out), True)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def run_ours(pet: Path, weights: Path, out: Path, threads: int) -> dict:
    import torch

    import process
    from model.io import InputError

    torch.set_num_threads(threads)
    root = out.parent / "ours_io"
    (root / "input/images/pet").mkdir(parents=True, exist_ok=True)
    link = root / "input/images/pet" / pet.name
    if not link.exists():
        link.symlink_to(pet)
    started = time.perf_counter()
    code = process.main(["--input", str(root / "input"), "--output", str(root / "output"), "--weights", str(weights),
                         "--device", "cpu", "--overwrite"])
    seconds = time.perf_counter() - started
    if code != 0:
        raise InputError(f"process.py exited {code}")
    produced = root / "output/images/automated-petct-lesion-segmentation" / pet.name
    produced.replace(out)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def child(mode: str, pet: Path, weights: Path, out: Path, threads: int) -> dict:
    """Run one pipeline in a fresh interpreter so its peak RSS and start-up are its own."""
    cmd = [sys.executable, __file__, "--child", mode, "--pet", str(pet), "--weights", str(weights),
           "--mask-out", str(out), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{mode} pipeline failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mask_file_dice(a_path: Path, b_path: Path) -> float:
    import SimpleITK as sitk

    from scripts.compare_masks import dice

    return dice(*(sitk.GetArrayFromImage(sitk.ReadImage(str(path))) for path in (a_path, b_path)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--weights", type=Path, default=ROOT / "weights", help="checkpoint file or folder")
    parser.add_argument("--slices", type=int, default=326, help="slices of the phantom (>= 300 for the target)")
    parser.add_argument("--seed", type=int, default=3, help="phantom seed")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both pipelines")
    parser.add_argument("--child", choices=("seed", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--pet", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mask-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        runner = run_seed if args.child == "seed" else run_ours
        print(json.dumps(runner(args.pet, args.weights, args.mask_out, args.threads)))
        return 0

    import SimpleITK as sitk

    from model.inference import Predictor
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
        ours = child("ours", pet, args.weights, tmp_path / "ours.mha", args.threads)
        print(f"ours:       {ours['seconds']:.1f} s, peak RSS {ours['peak_rss_mb']:.0f} MB", flush=True)
        seed = child("seed", pet, args.weights, tmp_path / "seed.mha", args.threads)
        print(f"seed style: {seed['seconds']:.1f} s, peak RSS {seed['peak_rss_mb']:.0f} MB", flush=True)
        agreement = mask_file_dice(tmp_path / "ours.mha", tmp_path / "seed.mha")
    result = {
        "weights": str(args.weights), "models": len(predictor.networks), "config": predictor.config.name,
        "shape": [400, 400, args.slices],
        "seed_style_s": round(seed["seconds"], 2), "ours_s": round(ours["seconds"], 2),
        "speedup": round(seed["seconds"] / ours["seconds"], 2), "mask_dice": round(agreement, 4),
        "seed_style_peak_rss_mb": round(seed["peak_rss_mb"]), "ours_peak_rss_mb": round(ours["peak_rss_mb"]),
        "threads": args.threads, "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
