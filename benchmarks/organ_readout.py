"""Can a head read the organs from a trained lesion network's decoder? Heads trained on frozen features.

    python -m benchmarks.organ_readout --weights weights/fold0.pt --data data/phantoms/train-mix-organs \\
        --cache-dir runs/organs/cache --json docs/benchmarks/organ_readout.json

Organ supervision (``--organ-weight``) puts a 1x1x1 head on the lesion network's decoder; it can only
shape the network if the head can read organs from the decoder in the first place. This freezes a
network, takes organ-centred 64³ crops of phantoms made with ``--organs`` (the first ``--train-cases``
cases for training the heads, the last ``--test-cases`` for scoring them), and trains one fresh linear
head per ``--levels`` value (Adam, ``--lr``, ``--steps`` crops) on the decoder's last 1, 2, ... levels
(``training.organ_head.OrganHead.decoder_features``). Per-class Dice over the test crops' voxels
together, and their cross-entropy. Why the default head reads three levels: on the shipped fold 0 a
head on the last level (8 channels) found no organ.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

CROP = 64


def organ_crops(store: Any, case_ids: list[str], per_case: int, rng: np.random.Generator,
                lesion_class: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``per_case`` crops of each case, each centred on a random organ voxel (not background, not lesion)."""
    from tqdm import tqdm

    crops = []
    for case_id in tqdm(case_ids, desc="crops", unit="case"):  # a case not cached yet is preprocessed first
        pet, _, _ = store.load(case_id, mmap=False)
        organs = np.asarray(store.load_organs(case_id, mmap=False))
        inside = np.argwhere((organs > 0) & (organs != lesion_class))
        for _ in range(per_case):
            centre = inside[rng.integers(len(inside))]
            starts = [int(np.clip(c - CROP // 2, 0, max(n - CROP, 0)))
                      for c, n in zip(centre, organs.shape, strict=True)]
            box = tuple(slice(start, start + CROP) for start in starts)
            crops.append((torch.from_numpy(np.ascontiguousarray(pet[box], dtype=np.float32))[None, None],
                          torch.from_numpy(organs[box].astype(np.int64))[None]))
    return crops


def train_and_score(features: list[torch.Tensor], truths: list[torch.Tensor], train_n: int, classes: int,
                    steps: int, lr: float) -> dict[str, Any]:
    """A fresh 1x1x1 head on ``features`` (the first ``train_n`` crops train it); Dice per class and
    cross-entropy on the rest."""
    from common.masks import dice
    from training.organ_head import organ_loss

    head = torch.nn.Conv3d(features[0].shape[1], classes, kernel_size=1)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for step in range(steps):
        k = step % train_n
        loss = organ_loss(head(features[k]), truths[k][:, None])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = [head(f) for f in features[train_n:]]
        ce = float(np.mean([float(organ_loss(lg, t[:, None])) for lg, t in zip(logits, truths[train_n:], strict=True)]))
        pred = torch.cat([lg.argmax(1).flatten() for lg in logits]).numpy()
    truth = torch.cat([t.flatten() for t in truths[train_n:]]).numpy()
    return {"cross_entropy": ce, "dice": [dice(pred == c, truth == c) for c in range(classes)]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.organ_readout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, required=True, help="a lesion network checkpoint (frozen)")
    p.add_argument("--data", type=Path, required=True, help="TCIA-layout phantoms made with --organs")
    p.add_argument("--cache-dir", type=Path, required=True, help="the training cache for these phantoms")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 3])
    p.add_argument("--train-cases", type=int, default=80)
    p.add_argument("--test-cases", type=int, default=10)
    p.add_argument("--crops-per-case", type=int, default=2)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from model.network import CheckpointError, load_checkpoint
    from training.data import CaseStore, as_sources
    from training.layouts import LayoutError, read_tcia
    from training.organ_head import OrganHead
    from training.phantoms.canvas import ORGAN_CLASSES

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        cases = [c for c in as_sources(read_tcia(args.data)) if c.organs is not None]
        loaded = load_checkpoint(args.weights)
    except (LayoutError, CheckpointError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if len(cases) < args.train_cases + args.test_cases:
        raise SystemExit(f"{args.data}: {len(cases)} cases with ORGANS.nii.gz, {args.train_cases} + "
                         f"{args.test_cases} needed")
    net = loaded.network.eval()
    try:
        wrapper = OrganHead(net, len(ORGAN_CLASSES), max(args.levels)).eval()
    except ValueError as exc:  # more levels than the decoder has
        raise SystemExit(f"--levels: {exc}") from None
    store = CaseStore(cases, loaded.config, args.cache_dir)
    rng = np.random.default_rng(args.seed)
    ids = [c.case_id for c in cases]
    started = time.perf_counter()
    crops = (organ_crops(store, ids[:args.train_cases], args.crops_per_case, rng, ORGAN_CLASSES.index("lesion"))
             + organ_crops(store, ids[-args.test_cases:], args.crops_per_case, rng, ORGAN_CLASSES.index("lesion")))
    with torch.no_grad():
        features = [wrapper.decoder_features(x)[1] for x, _ in crops]
    truths = [t for _, t in crops]
    train_n = args.train_cases * args.crops_per_case
    results = []
    for levels in args.levels:
        channels = int(sum(net.filters[:levels]))  # full resolution first: the first channels are the last levels
        t0 = time.perf_counter()
        scored = train_and_score([f[:, :channels] for f in features], truths, train_n, len(ORGAN_CLASSES),
                                 args.steps, args.lr)
        results.append({"levels": levels, "channels": channels, "seconds": round(time.perf_counter() - t0, 1),
                        "cross_entropy": scored["cross_entropy"],
                        "dice": {name: (None if np.isnan(v) else float(v))
                                 for name, v in zip(ORGAN_CLASSES, scored["dice"], strict=True)}})
        cells = " ".join(f"{n} {'n/a' if np.isnan(v) else f'{v:.2f}'}"
                         for n, v in zip(ORGAN_CLASSES, scored["dice"], strict=True))
        print(f"{levels} level(s), {channels} channels: CE {scored['cross_entropy']:.3f}; Dice {cells}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        command = "python -m benchmarks.organ_readout " + " ".join(argv if argv is not None else sys.argv[1:])
        args.json.write_text(json.dumps({
            "command": command, "weights": str(args.weights), "train_crops": train_n,
            "test_crops": len(crops) - train_n, "crop": CROP, "steps": args.steps, "lr": args.lr,
            "features_seconds": round(time.perf_counter() - started, 1), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
