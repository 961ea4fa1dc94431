"""``python -m evaluation.report``: the lesion report of any mask, for example a ground-truth label.

The same numbers ``process.py --report`` writes (lesion_report/lesions.py), for masks made elsewhere, so it
doubles as a dataset-statistics tool:

    python -m evaluation.report --pet pet.mha --mask label.mha --out report/case.json
    python -m evaluation.report --pet imagesTr/ --mask labelsTr/ --out stats/   # pairs by file name

A folder run writes one JSON and QA picture per case, ``cases.csv``, ``lesions.csv`` and
``index.html``; a case that cannot be read is named in one line and the others go on (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from common.errors import InputError
from common.images import image_stem, list_images, read_image
from lesion_report.writer import CaseEntry, write_case_report, write_run_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pet", type=Path, required=True, help="PET in SUV (a file, or a folder of them)")
    p.add_argument("--mask", type=Path, required=True,
                   help="lesion mask on the PET's grid, non-zero = lesion (a file, or a folder: same file names, "
                        "or an nnU-Net PET name's _0000 channel suffix dropped)")
    p.add_argument("--out", type=Path, required=True, help="JSON file (for one case) or folder (for folders)")
    return p


def _mask_for(pet: Path, masks: dict[str, Path]) -> Path | None:
    stem = image_stem(pet)
    return masks.get(stem) or masks.get(stem.removesuffix("_0000")) or masks.get(stem.removesuffix("_0001"))


def _explain(exc: Exception, mask: Path | None) -> str:
    """InputError names its file already; a grid mismatch (ValueError) is the mask's."""
    return str(exc) if isinstance(exc, InputError) else f"{mask}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.pet.is_file():
        try:
            summary = write_case_report(read_image(args.pet, "PET"), read_image(args.mask, "mask"),
                                        args.out.with_suffix(".json"), None, None, [])
        except (InputError, ValueError) as exc:
            print(f"error: {_explain(exc, args.mask)}", file=sys.stderr)
            return 1
        print(f"{args.out.with_suffix('.json')}: {summary['lesions']} lesion(s), TMTV {summary['tmtv_ml']:.1f} ml")
        return 0
    if not args.pet.is_dir() or not args.mask.is_dir():
        print(f"error: {args.pet if not args.pet.exists() else args.mask}: not found (give two files or two folders)",
              file=sys.stderr)
        return 2
    masks = {image_stem(m): m for m in list_images(args.mask)}
    entries, failed = [], 0
    for pet_path in tqdm(list_images(args.pet), desc="cases", unit="case"):
        name, mask_path = image_stem(pet_path), _mask_for(pet_path, masks)
        target = args.out / f"{name}.json"
        try:
            if mask_path is None:
                raise InputError(f"{pet_path}: no mask of that name in {args.mask}")
            write_case_report(read_image(pet_path, "PET"), read_image(mask_path, "mask"), target, None, None, [])
            entries.append(CaseEntry(name, target))
        except (InputError, ValueError) as exc:
            message = _explain(exc, mask_path)
            print(f"error: {message}", file=sys.stderr)
            entries.append(CaseEntry(name, None, (message,)))
            failed += 1
    if not entries:
        print(f"error: {args.pet}: no PET images in folder", file=sys.stderr)
        return 2
    written = write_run_report(args.out, entries, title=f"Lesion report of {args.mask}")
    print(f"{len(entries) - failed} of {len(entries)} case(s) reported: {', '.join(map(str, written))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
