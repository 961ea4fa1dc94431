"""GPU check: the default (exact) mode in fp16 on CUDA against the CPU fp32 uncropped pipeline.

One prepared command for a lent GPU machine without network (about 3-5 minutes there):

    bash benchmarks/fetch_gpu_wheels.sh            # here: monai + SimpleITK wheels into .whl/
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
        PYTHONPATH=/tmp/site:. python3 -m benchmarks.gpu_agreement --json $OUT/gpu_agreement.json

The networks are the paper's (``--weights`` for the authors' 0.pt ... 4.pt or your own; else
seeded random paper-size networks, whose near-zero logits make the mask figures a lower bound),
run at the paper's windowing (roi 128, overlap 0.75, gaussian sigma 0.125) on a phantom cut to
``--shape`` on autoPET's grid, so that the CPU fp32 run (``crop="none"``, equal to MONAI's chain in
tests/test_predictor.py) stays within minutes. Prints per device: seconds, windows, peak GPU
memory; then score and mask agreement (Dice, voxels that differ, the largest score difference).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from model.network import add_weights_argument


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_weights_argument(parser, None, note="; without it, seeded random paper-size networks")
    parser.add_argument("--models", type=int, default=2, help="networks (random ones) or the first N of --weights")
    parser.add_argument("--shape", type=int, nargs=3, default=[192, 192, 160], help="phantom size (x y z voxels)")
    parser.add_argument("--seed", type=int, default=50000, help="phantom seed")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from common.masks import dice
    from model import Predictor
    from model.config import paper_config
    from model.ensemble import vote
    from model.network import build_network
    from training.phantoms import make_phantom

    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU here; this check compares CUDA fp16 with CPU fp32")
    if args.weights:
        loaded = Predictor.from_weights(args.weights, device="cpu")
        networks, config = loaded.networks[: args.models], loaded.config
    else:
        torch.manual_seed(0)
        config = paper_config()
        networks = [build_network(config).eval() for _ in range(args.models)]
    config = config.with_(roi_size=(128, 128, 128), overlap=0.75, sigma_scale=0.125)
    pet = make_phantom(args.seed, shape=tuple(args.shape), lesions=True).pet
    result: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "models": len(networks),
                    "weights": str(args.weights or "random paper networks"), "shape": list(pet.GetSize())}

    gpu = Predictor(networks, config, device="cuda")
    gpu.predict_scores(pet)  # warm-up: cudnn.benchmark picks its kernels
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    started = time.perf_counter()
    gpu_scores = gpu.predict_scores(pet)
    result["cuda_fp16_s"] = round(time.perf_counter() - started, 2)
    result["cuda_peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    result["windows"] = gpu.last_info.windows
    print(json.dumps(result), flush=True)

    cpu = Predictor([n.float() for n in networks], config, device="cpu", crop="none")
    started = time.perf_counter()
    cpu_scores = cpu.predict_scores(pet)
    result["cpu_fp32_s"] = round(time.perf_counter() - started, 1)
    a, b = vote(gpu_scores, config.vote), vote(cpu_scores, config.vote)
    spread = float(np.percentile(np.abs(cpu_scores), 99))
    result.update({
        "mask_dice": round(dice(a, b, both_empty=1.0), 5),
        "voxels_differ": int((a != b).sum()), "lesion_voxels_cpu": int(b.sum()),
        "score_max_abs_diff": round(float(np.abs(gpu_scores - cpu_scores).max()), 4),
        "score_abs_p99_cpu": round(spread, 4),
    })
    print(json.dumps(result, indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
