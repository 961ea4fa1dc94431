"""Peak memory of process.py on the longest autoPET scan (400 x 400 x 677 voxels) on the CPU.

The platform gives a job 16 GiB of RAM; this prints the peak resident memory of one process.py run
(a child process, measured by the kernel) and its time.

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
    args = parser.parse_args(argv)

    import SimpleITK as sitk

    from training.phantoms import make_phantom

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        (root / "input/images/pet").mkdir(parents=True)
        phantom = make_phantom(args.seed, shape=(400, 400, args.slices))
        sitk.WriteImage(phantom.pet, str(root / "input/images/pet/long.mha"))
        del phantom
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "process.py"), "--input", str(root / "input"),
                               "--output", str(root / "output"), "--weights", str(args.weights), "--device", "cpu"],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-3000:])
            return 1
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    result = {"shape": [400, 400, args.slices], "weights": str(args.weights), "seconds": round(seconds, 1),
              "peak_rss_gib": round(peak_gib, 2), "limit_gib": LIMIT_GIB, "within_limit": peak_gib < LIMIT_GIB}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["within_limit"] else 1


if __name__ == "__main__":
    sys.exit(main())
