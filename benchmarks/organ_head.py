"""How well a run's training-only organ head segments the organs, on phantoms made with ``--organs``.

    python -m benchmarks.organ_head --runs runs/organs/single/all/last.pt runs/organs/folds/fold0/last.pt \\
        --data runs/organs/test-organs --json docs/benchmarks/organ_head.json

Organ supervision (``--organ-weight``) is meant to teach the lesion network where physiological
uptake lives; its head is dropped at export, so only a run's ``last.pt`` keeps it. This scores that
head: each case's PET preprocessed as training preprocesses it, the network with its head run
through MONAI's sliding window over the whole working grid (the training window, overlap 0.5,
gaussian), the organ logits' argmax against the organ map resampled as training resamples it. Dice
per class over the cases where the class is in the map or the prediction; the share of voxels
right. A head that never learned scores near zero on every organ; one that did shows whether the
lesion network's decoder tells a kidney from a lesion.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def score_run(path: Path, cases: list[Any], cache: Path) -> dict[str, Any]:
    """Per-class Dice and voxel accuracy of one ``last.pt``'s organ head on ``cases``."""
    from monai.inferers import SlidingWindowInferer
    from tqdm import tqdm

    from common.masks import dice
    from model.network import load_checkpoint
    from training.data import CaseStore
    from training.organ_head import OrganHead, levels_of
    from training.phantoms.canvas import ORGAN_CLASSES

    loaded = load_checkpoint(path)
    head_state = loaded.metadata.get("organ_head")
    if head_state is None:
        raise SystemExit(f"{path}: no organ head (a run trained with --organ-weight keeps it in last.pt)")
    wrapped = OrganHead(loaded.network, int(head_state["weight"].shape[0]),
                        levels_of(loaded.network, int(head_state["weight"].shape[1])))
    wrapped.head.load_state_dict(head_state)
    wrapped.eval()
    store = CaseStore(cases, loaded.config, cache)
    inferer = SlidingWindowInferer(roi_size=loaded.config.roi_size, sw_batch_size=2, overlap=0.5, mode="gaussian")
    per_class: dict[str, list[float]] = {name: [] for name in ORGAN_CLASSES}
    right = total = 0
    started = time.perf_counter()
    for case in tqdm(cases, desc=path.name, unit="case"):
        pet, _, _ = store.load(case.case_id, mmap=False)
        truth = np.asarray(store.load_organs(case.case_id, mmap=False))
        with torch.no_grad():
            logits = inferer(torch.from_numpy(np.ascontiguousarray(pet, dtype=np.float32))[None, None], wrapped)
        pred = logits[0, 2:].argmax(0).numpy().astype(np.uint8)
        right += int((pred == truth).sum())
        total += truth.size
        for index, name in enumerate(ORGAN_CLASSES):
            value = dice(pred == index, truth == index)  # NaN: the class is in neither
            if not math.isnan(value):
                per_class[name].append(value)
    return {"checkpoint": str(path), "epoch": loaded.metadata.get("epoch"), "cases": [c.case_id for c in cases],
            "voxel_accuracy": right / total, "seconds": round(time.perf_counter() - started, 1),
            "dice": {name: (float(np.mean(v)) if v else None) for name, v in per_class.items()},
            "cases_per_class": {name: len(v) for name, v in per_class.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.organ_head", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="last.pt files of organ-supervised runs")
    p.add_argument("--data", type=Path, required=True, help="TCIA-layout phantoms made with --organs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from model.network import CheckpointError
    from training.data import as_sources
    from training.layouts import LayoutError, read_tcia

    torch.set_num_threads(args.threads)
    try:
        cases = as_sources(read_tcia(args.data))
    except LayoutError as exc:
        raise SystemExit(f"error: {exc}") from None
    if not cases or any(c.organs is None for c in cases):
        raise SystemExit(f"{args.data}: every case needs ORGANS.nii.gz (python -m training.phantoms ... --organs)")
    with tempfile.TemporaryDirectory(prefix="organ-head-") as tmp:
        try:
            results = [score_run(path, cases, Path(tmp)) for path in args.runs]
        except (CheckpointError, LayoutError) as exc:  # a missing or foreign checkpoint, an unreadable case
            raise SystemExit(f"error: {exc}") from None
    from training.phantoms.canvas import ORGAN_CLASSES

    print("| checkpoint | voxels right | " + " | ".join(ORGAN_CLASSES[1:]) + " |")
    print("| --- | --- |" + " --- |" * (len(ORGAN_CLASSES) - 1))
    for r in results:
        cells = ["n/a" if r["dice"][n] is None else f"{r['dice'][n]:.2f}" for n in ORGAN_CLASSES[1:]]
        print(f"| {r['checkpoint']} | {100 * r['voxel_accuracy']:.1f} % | " + " | ".join(cells) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        command = "python -m benchmarks.organ_head " + " ".join(argv if argv is not None else sys.argv[1:])
        args.json.write_text(json.dumps({"command": command, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
