"""Regenerate the container's bundled test case and its expected mask.

    python -m scripts.make_test_case              # expected output from the shipped weights
    python -m scripts.make_test_case --input-too  # also rebuild test/input (new phantom files)

The case is a phantom on the autoPET voxel grid (2.0364 x 2.0364 x 3 mm) with a smaller field
of view (192 x 160 x 128 voxels) so that it stays a few MB; SUVs are rounded to 1/64 so the
file compresses. PET and CT get different uuids, as the challenge gives them. The expected mask
is what ``process.py`` writes with the given weights; ``test.sh`` and the native container test
compare against it (same geometry, Dice >= 0.99).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from model.network import add_weights_argument

ROOT = Path(__file__).resolve().parents[1]

SEED = 0
SHAPE = (192, 160, 128)
NAMESPACE = uuid.UUID("6f1d6a52-3c1e-4b8e-9a57-5d1c3e2f7a10")


def write_input(test_dir: Path) -> None:
    from training.phantoms import make_phantom

    phantom = make_phantom(SEED, shape=SHAPE, lesions=True)
    pet = sitk.GetArrayFromImage(phantom.pet)
    quantised = sitk.GetImageFromArray((np.round(pet * 64) / 64).astype(np.float32))
    quantised.CopyInformation(phantom.pet)
    pet_id, ct_id = (uuid.uuid5(NAMESPACE, f"{kind}-{SEED}") for kind in ("pet", "ct"))
    for sub in ("input/images/pet", "input/images/ct", "labels"):
        folder = test_dir / sub
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    sitk.WriteImage(quantised, str(test_dir / f"input/images/pet/{pet_id}.mha"), True)
    sitk.WriteImage(phantom.ct, str(test_dir / f"input/images/ct/{ct_id}.mha"), True)
    sitk.WriteImage(phantom.label, str(test_dir / f"labels/{pet_id}.mha"), True)
    print(f"wrote phantom seed {SEED} {SHAPE} as PET {pet_id} / CT {ct_id}")


def write_expected(test_dir: Path, weights: Path) -> None:
    out = test_dir / "expected_output"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(ROOT / "process.py"), "--input", str(test_dir / "input"), "--output", str(out),
           "--weights", str(weights), "--device", "cpu"]
    subprocess.run(cmd, check=True)
    (out / "results.json").unlink(missing_ok=True)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-dir", type=Path, default=ROOT / "test")
    add_weights_argument(parser)
    parser.add_argument("--input-too", action="store_true", help="rebuild test/input as well")
    args = parser.parse_args(argv)
    if args.input_too or not (args.test_dir / "input/images/pet").is_dir():
        write_input(args.test_dir)
    write_expected(args.test_dir, args.weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
