"""The paper's ablations on phantoms: training through the sliding window or not (Tables 3 and 4),
inference overlap 0 / 0.25 / 0.5 / 0.75, and the sliding window against one plain pass (Table 1).

    python -m benchmarks.paper_ablation --work /tmp/ablation --json docs/benchmarks/paper_ablation.json \\
        --plot docs/paper_ablation.png

Two demo-scale networks (the ``demo`` preset's DynUNet, 64^3 windows at 4 mm) are trained on the same
phantoms with the same seed, sampler and number of optimiser steps of one crop each (the authors'
batch). They differ in one thing, the training forward pass: ``sliding`` runs each 96^3 crop through
MONAI's SlidingWindowInferer (64^3 windows at overlap 0.25, gaussian: 2 x 2 x 2 windows, as the
authors' 128^3 windows over 224^3 crops; 112^3 would keep their 25 % overlap between the two windows
but is no multiple of the network's stride of 32, which the ``simple`` variant needs) and takes DiceCE
on the stitched output; ``simple`` runs the network on the whole crop at once. Both are then scored on
held-out phantoms through ``Predictor`` (the container's code) at overlap 0, 0.25, 0.5 and 0.75, and
with a plain inferer (the network once over the body's box, padded to a multiple of the network's
stride). Each training runs in its own process (its peak RSS is its own) and resumes where a killed
run stopped; scores are kept per case, so a rerun goes on.

``--variants window-overlap-0 window-overlap-0.25`` trains the paper's Table 4 against Table 3: both
through the window, at overlap 0 and 0.25, on 128^3 crops where the two place different windows
(``VARIANT_SETTINGS``); ``--preset demo-wide --init-from weights/fold0.pt`` starts both from a network
that already segments. ``--trained-weights weights`` trains nothing and scores trained networks at
every overlap and with the plain inferer (Tables 3 and 1 with networks that segment).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OVERLAPS = (0.0, 0.25, 0.5, 0.75)
#: The training forward passes compared: (training inferer, its overlap, crop side). ``sliding`` and
#: ``simple`` are the recorded run's (a window against none, 96^3 crops, where overlap 0 and 0.25 place
#: the same two windows per axis); the ``window-overlap-*`` pair is the paper's Table 4 against Table 3
#: at a crop where the two overlaps place different windows: 64^3 windows in 128^3 crops, starts 0/64
#: at overlap 0 (8 windows) against 0/48/64 at 0.25 (27 windows). The paper's 224^3 crops with 128^3
#: windows place starts 0/96 at both overlaps.
VARIANT_SETTINGS = {"sliding": ("sliding", 0.25, 96), "simple": ("simple", 0.25, 96),
                    "window-overlap-0": ("sliding", 0.0, 128), "window-overlap-0.25": ("sliding", 0.25, 128)}
VARIANTS = ("sliding", "simple")
#: The paper's figures (validation Dice, autoPET): Table 1 (interactive code), Tables 3 and 4.
PAPER = {"table1": {"sliding": 83.83, "simple inferer": 81.02},
         "table3_trained_overlap_0.25": {0.0: 66.33, 0.25: 73.04, 0.5: 73.54, 0.75: 74.07},
         "table4_trained_overlap_0": {0.0: 66.57, 0.25: 71.35, 0.5: 71.99, 0.75: 72.86}}


def configs(variant: str, epochs: int, iters: int, preset_name: str = "demo", lr: float | None = None):
    from model.config import preset
    from training.recipe import demo_train_config

    inferer, overlap, side = VARIANT_SETTINGS[variant]
    # the preset's own name: a warm start (--init-from) accepts only the same network, crop aside
    config = preset(preset_name).with_(crop_size=(side,) * 3)
    train = demo_train_config().with_(train_inferer=inferer, train_sw_overlap=overlap, epochs=epochs,
                                      iters_per_epoch=iters, batch_size=1, val_every=10 ** 6, seed=0, lr=lr,
                                      name=f"ablation-{variant}")
    return config, train


def make_phantoms(folder: Path, seeds: str) -> list[Any]:
    """The phantoms of ``seeds`` (made where missing); others in the folder are left out."""
    from training.layouts import read_layout
    from training.phantoms.cli import parse_seeds

    subprocess.run([sys.executable, "-m", "training.phantoms", "--out", str(folder), "--seeds", seeds,
                    "--layout", "tcia", "--skip-existing", "--workers", str(min(8, os.cpu_count() or 1))],
                   check=True, cwd=ROOT)  # a process per core, up to 8 (about 1.2 GB each)
    wanted = {f"PHANTOM{seed:05d}" for seed in parse_seeds([seeds])}
    return [r for r in read_layout(folder, "tcia") if str(r.case_id).split("_")[0] in wanted]


def train_variant(args: argparse.Namespace) -> int:
    """One network (run in its own process); prints one JSON line with its cost."""
    from training.data import as_sources
    from training.fit import fit

    torch.set_num_threads(args.threads)
    records = make_phantoms(args.work / "train", args.train_seeds)
    config, train = configs(args.variant, args.epochs, args.iters, args.preset, args.lr)
    started = time.monotonic()
    result = fit(as_sources(records), [], config, train, args.work / args.variant, cache_dir=args.work / "cache",
                 resume=True, device=args.device, progress=False, init=args.init_from)
    state = torch.load(args.work / args.variant / "last.pt", map_location="cpu", weights_only=True)
    history = state["history"]
    steps = sum(int(row.get("steps", 0)) for row in history)
    seconds = sum(float(row.get("epoch_s", 0.0)) for row in history)
    print(json.dumps({"variant": args.variant, "status": result.status, "epochs": result.epochs_done, "steps": steps,
                      "train_s": round(seconds, 1), "s_per_step": round(seconds / max(1, steps), 3),
                      "this_process_s": round(time.monotonic() - started, 1),
                      "this_process_cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
    return 0


class PlainInferer:
    """The network once over the whole input, zero-padded at the far end to a multiple of its stride
    (MONAI's SimpleInferer needs that of a DynUNet): Table 1's "simple inferer"."""

    def __init__(self, divisor: tuple[int, int, int]) -> None:
        self.divisor = divisor

    def __call__(self, inputs: torch.Tensor, network, device=None) -> torch.Tensor:
        from monai.inferers import SimpleInferer

        size = inputs.shape[2:]
        pad = [(-s) % d for s, d in zip(size, self.divisor, strict=True)]
        padded = torch.nn.functional.pad(inputs, [p for q in reversed(pad) for p in (0, q)])
        out = SimpleInferer()(padded, network)
        return out[..., : size[0], : size[1], : size[2]]


def score(args: argparse.Namespace) -> dict[str, Any]:
    """Dice / FPV / FNV of both networks at every overlap and with the plain inferer; cached per case."""
    from model.network import load_ensemble

    networks = {variant: load_ensemble([args.work / variant / "last.pt"])[0] for variant in args.variants}
    return score_networks(args, networks)


def score_networks(args: argparse.Namespace, networks: dict[str, Any]) -> dict[str, Any]:
    """Each named network (a ``LoadedNetwork``) at every overlap and with the plain inferer, on the
    held-out phantoms of ``args.test_seeds``; every case's scores are cached, so a rerun goes on."""
    import SimpleITK as sitk

    from evaluation.metrics import aggregate, evaluate_images
    from model import Predictor

    torch.set_num_threads(args.threads)
    tests = make_phantoms(args.work / "test", args.test_seeds)
    cache_path = args.work / "scores.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    table: dict[str, Any] = {}
    from model.network import weights_digest

    for variant, loaded in networks.items():
        digest = weights_digest(loaded.network.state_dict())[:12]  # other weights under the same name: not cached
        for inferer in [*(f"overlap {ov:g}" for ov in OVERLAPS), "plain"]:
            overlap = 0.5 if inferer == "plain" else float(inferer.split()[1])
            predictor = Predictor([loaded.network], loaded.config.with_(overlap=overlap), device=args.device,
                                  crop="exact", sw_batch_size=4)
            if inferer == "plain":
                predictor.inferer = PlainInferer(loaded.config.size_divisor)
            rows = []
            for case in tests:
                key = f"{variant}/{digest}/{inferer}/{case.case_id}"
                if key not in cache:
                    clock = time.perf_counter()
                    pred = predictor.predict(sitk.ReadImage(str(case.pet)))
                    metrics = evaluate_images(sitk.ReadImage(str(case.label)), pred)
                    cache[key] = {**metrics.to_dict(), "seconds": time.perf_counter() - clock}
                    cache_path.write_text(json.dumps(cache, indent=1))
                    print(f"{key}: Dice {cache[key]['dice']:.3f} ({cache[key]['seconds']:.0f} s)", flush=True)
                rows.append(cache[key])
            from evaluation.metrics import CaseMetrics

            fields = set(CaseMetrics.__dataclass_fields__)
            summary = aggregate(CaseMetrics(**{k: v for k, v in r.items() if k in fields}) for r in rows).to_dict()
            summary["seconds_per_case"] = float(np.mean([r["seconds"] for r in rows]))
            summary["dice_per_case"] = [r["dice"] for r in rows]
            table[f"{variant}/{inferer}"] = summary
    return table


def markdown(result: dict[str, Any]) -> str:
    s = result["scores"]
    names = sorted({key.split("/")[0] for key in s})
    lines = ["| network | | " + " | ".join(f"overlap {ov:g}" for ov in OVERLAPS) + " | plain |",
             "| --- | --- |" + " --- |" * (len(OVERLAPS) + 1)]
    for variant in names:
        for label, key, fmt in (("Dice", "mean_dice", lambda v: f"{100 * v:.2f} %"),
                                ("FPV ml", "mean_fpv_ml", lambda v: f"{v:.1f}"),
                                ("FNV ml", "mean_fnv_ml", lambda v: f"{v:.1f}")):
            cells = [fmt(s[f"{variant}/overlap {ov:g}"][key]) for ov in OVERLAPS] + [fmt(s[f"{variant}/plain"][key])]
            lines.append(f"| {variant if label == 'Dice' else ''} | {label} | " + " | ".join(cells) + " |")
    p3, p4 = PAPER["table3_trained_overlap_0.25"], PAPER["table4_trained_overlap_0"]
    lines.append("| paper, Table 3 (trained at overlap 0.25) | Dice | "
                 + " | ".join(f"{p3[o]:.2f} %" for o in OVERLAPS) + " | — |")
    lines.append("| paper, Table 4 (trained at overlap 0) | Dice | "
                 + " | ".join(f"{p4[o]:.2f} %" for o in OVERLAPS) + " | — |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    s = result["scores"]
    names = sorted({key.split("/")[0] for key in s})
    for variant, colour in zip(names, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"),
                               strict=False):
        ax.plot(OVERLAPS, [100 * s[f"{variant}/overlap {ov:g}"]["mean_dice"] for ov in OVERLAPS], "o-", color=colour,
                label=f"phantoms, trained {variant}")
        ax.axhline(100 * s[f"{variant}/plain"]["mean_dice"], color=colour, ls=":", lw=1,
                   label=f"phantoms, trained {variant}: plain inferer")
    for name, style in (("table3_trained_overlap_0.25", "s--"), ("table4_trained_overlap_0", "^--")):
        ax.plot(OVERLAPS, [PAPER[name][ov] for ov in OVERLAPS], style, color="grey", ms=4,
                label=f"paper {name.split('_')[0].replace('table', 'Table ')} (autoPET)")
    ax.set_xlabel("inference overlap")
    ax.set_ylabel("mean Dice (%)")
    ax.set_xticks(OVERLAPS)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.paper_ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/paper_ablation"))
    p.add_argument("--train-seeds", default="0-39")
    p.add_argument("--test-seeds", default="50000-50003")
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--iters", type=int, default=25, help="optimiser steps per epoch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variant", choices=tuple(VARIANT_SETTINGS), help=argparse.SUPPRESS)  # internal: one, in a child
    p.add_argument("--variants", nargs="+", choices=tuple(VARIANT_SETTINGS), default=list(VARIANTS),
                   help="training forward passes to compare (default: sliding simple, the recorded run; the paper's "
                        "Table 4 against Table 3: window-overlap-0 window-overlap-0.25)")
    p.add_argument("--preset", default="demo", help="the network (demo, or demo-wide to warm-start from weights/)")
    p.add_argument("--init-from", type=Path, help="warm-start every variant from this checkpoint (same network)")
    p.add_argument("--lr", type=float, help="learning rate (default: the demo recipe's)")
    p.add_argument("--trained-weights", type=Path,
                   help="no training: score these trained networks (e.g. the shipped folds, weights/) instead, "
                        "each on its own: Tables 3 and 1 with networks that segment")
    p.add_argument("--models", type=int, default=1, help="with --trained-weights: the first N networks")
    p.add_argument("--device", default="cpu", help="cpu or cuda: where the networks train and score (default cpu)")
    p.add_argument("--json", type=Path)
    p.add_argument("--plot", type=Path)
    args = p.parse_args(argv)
    if args.variant:
        return train_variant(args)
    args.work.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.paper_ablation " + " ".join(argv or sys.argv[1:])
    if args.trained_weights:
        return _write(args, {"command": command, "trained_weights": str(args.trained_weights),
                             "test_seeds": args.test_seeds, "scores": score_networks(args, _trained(args)),
                             "paper": {k: {str(kk): vv for kk, vv in v.items()} for k, v in PAPER.items()}})
    training = {}
    for variant in args.variants:
        child = [sys.executable, "-m", "benchmarks.paper_ablation", "--variant", variant, "--work", str(args.work),
                 "--train-seeds", args.train_seeds, "--epochs", str(args.epochs), "--iters", str(args.iters),
                 "--threads", str(args.threads), "--preset", args.preset, "--device", args.device,
                 *(["--init-from", str(args.init_from)] if args.init_from else []),
                 *(["--lr", str(args.lr)] if args.lr else [])]
        out = subprocess.run(child, check=True, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}).stdout
        training[variant] = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(training[variant]), flush=True)
    result = {"command": command, "device": args.device, "train_seeds": args.train_seeds, "test_seeds": args.test_seeds,
              "crops": {v: VARIANT_SETTINGS[v][2] for v in args.variants}, "preset": args.preset,
              "init_from": str(args.init_from) if args.init_from else None,
              "epochs": args.epochs, "iters_per_epoch": args.iters, "training": training, "scores": score(args),
              "paper": {k: {str(kk): vv for kk, vv in v.items()} for k, v in PAPER.items()}}
    return _write(args, result)


def _trained(args: argparse.Namespace) -> dict[str, Any]:
    """The first ``args.models`` networks of a weights folder, by file stem (fold0, fold1, ...)."""
    from model.network import checkpoint_files, load_ensemble

    files = checkpoint_files(args.trained_weights)[: args.models]
    return {path.stem: loaded for path, loaded in zip(files, load_ensemble(files), strict=True)}


def _write(args: argparse.Namespace, result: dict[str, Any]) -> int:
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
