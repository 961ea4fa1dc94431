"""Peak memory of process.py on the longest autoPET scan (400 x 400 x 677 voxels) on the CPU, and
what the paper's networks would do with it on the challenge's T4.

The platform runs a job with ``--memory 15g``; here the child process.py runs under the same cap as
an address-space limit (``RLIMIT_AS``, so an allocation past it fails in the child instead of the
machine swapping). Prints its peak resident memory (measured by the kernel), its time and windows.

The projection takes the paper preset's window counts for this scan (exact and body crop, computed
by the container's own cropping code, no network run) and the H100's measured seconds per window
(docs/benchmarks/gpu_h100.json) scaled by the two cards' fp16 throughput, and asks the time
budget (model/time_budget.py) what it would do with a case like that.

    python -m benchmarks.memory_longest [--weights weights] [--slices 677] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from model.network import add_weights_argument

ROOT = Path(__file__).resolve().parents[1]

LIMIT_GIB = 16.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_weights_argument(parser)
    parser.add_argument("--slices", type=int, default=677)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--memory-limit-gib", type=float, default=15.0, help="address-space cap of the child")
    parser.add_argument("--h100-s-per-window", type=float, default=0.0102, help="measured (gpu_h100.json)")
    parser.add_argument("--t4-slowdown", type=float, default=450 / 65,
                        help="H100 measured fp16 conv TFLOP/s over the T4's 65 on paper (default 6.9)")
    args = parser.parse_args(argv)

    import SimpleITK as sitk

    from training.phantoms import make_phantom

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        (root / "input/images/pet").mkdir(parents=True)
        phantom = make_phantom(args.seed, shape=(400, 400, args.slices))
        sitk.WriteImage(phantom.pet, str(root / "input/images/pet/long.mha"))
        del phantom
        projection = t4_projection(root / "input/images/pet/long.mha", args.h100_s_per_window * args.t4_slowdown)
        limit = int(args.memory_limit_gib * 2**30)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "process.py"), "--input", str(root / "input"),
                               "--output", str(root / "output"), "--weights", str(args.weights), "--device", "cpu",
                               "--time-budget", "0"],
                              capture_output=True, text=True,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-3000:])
            return 1
        inference = json.loads((root / "output/results.json").read_text())[0]["inference"]
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    result = {"shape": [400, 400, args.slices], "weights": str(args.weights), "seconds": round(seconds, 1),
              "crop": inference["crop"], "steps": inference["steps"],
              "peak_rss_gib": round(peak_gib, 2), "address_space_cap_gib": args.memory_limit_gib,
              "limit_gib": LIMIT_GIB, "within_limit": peak_gib < LIMIT_GIB, "t4_projection_paper_preset": projection}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["within_limit"] else 1


def t4_projection(pet_path: Path, t4_s_per_window: float, networks: int = 5, budget_s: float = 540.0) -> dict:
    """The paper preset's windows on this scan and what the time budget would decide on a T4."""
    import SimpleITK as sitk

    from model.config import preset
    from model.cropping import FAST_CONTEXT_MM, MARGIN_MM, fast_region, find_region
    from model.preprocessing import prepare
    from model.time_budget import Step, plan_rest
    from model.window_grid import count_windows

    cfg = preset("paper")
    volume = prepare(sitk.ReadImage(str(pet_path)), cfg.spacing, *cfg.percentiles)
    exact = find_region(volume, "exact", cfg.roi_size, cfg.overlap, MARGIN_MM, FAST_CONTEXT_MM)
    body = fast_region(volume, exact, cfg.roi_size, cfg.overlap, FAST_CONTEXT_MM)
    windows = count_windows(volume.work[exact.work_box].shape, cfg.roi_size, cfg.overlap)
    fast = count_windows(volume.work[body.work_box].shape, cfg.roi_size, cfg.overlap)
    first_s = windows * t4_s_per_window
    _, decision = plan_rest(Step((0,), "exact"), first_s, first_s, budget_s, networks, windows, fast)
    return {"windows_exact": windows, "windows_body": fast,
            "windows_uncropped": count_windows(volume.work.shape, cfg.roi_size, cfg.overlap),
            "t4_s_per_window": round(t4_s_per_window, 4), "t4_s_per_network_exact": round(first_s, 1),
            "t4_s_five_networks_exact": round(networks * first_s, 1), "time_budget_decision": decision}


if __name__ == "__main__":
    sys.exit(main())
