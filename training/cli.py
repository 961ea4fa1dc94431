"""``python -m training {prepare,splits,fit,cv,revalidate,export,widen,plot}``: argument parsing over the API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from common.cases import Case
from model.config import PRESETS, ModelConfig, preset
from model.network import CheckpointError, add_weights_argument

from .data import CACHE_DTYPES, CaseStore, as_sources
from .export import EXPORT_DTYPES
from .layouts import LayoutError
from .recipe import NonFiniteLoss, TrainConfig, train_preset
from .splits import ALL_DATA, SPLIT_METHODS, SplitError, member_name, parse_members
from .widen import WidenError

LAYOUTS = ("tcia", "nnunet")


def read_records(data: Path, layout: str, channel_order: str = "ct_pet") -> list[Any]:
    """Cases with labels from the layouts module (TCIA is the real data's layout)."""
    from . import layouts

    if layout not in LAYOUTS:
        raise SystemExit(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    records = layouts.read_layout(data, layout, **({"channel_order": channel_order} if layout == "nnunet" else {}))
    unlabelled = [r.case_id for r in records if r.label is None]
    if unlabelled:
        raise SystemExit(f"{data}: training needs labels; none for {unlabelled[:3]}")
    return records


def has_lesion(label: Path) -> bool:
    """Whether a label file has any lesion voxel (to balance lesion-positive studies over folds)."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.ReadImage(str(label))  # kept alive: a view of a temporary image reads freed memory
    return bool(np.any(sitk.GetArrayViewFromImage(image) > 0))


def lesion_positive(records: Sequence[Any]) -> dict[str, bool]:
    """Case id -> whether its label has a lesion voxel (folds are balanced for lesion-positive studies)."""
    from tqdm import tqdm

    return {str(r.case_id): has_lesion(Path(r.label)) for r in tqdm(records, desc="labels", unit="case")}


def fold_sources(
    records: Sequence[Any], splits: Path, fold: int | str, method: str = "balanced"
) -> tuple[list[Case], list[Case]]:
    """Train and validation cases of one fold, or for ``all`` every case of the folds file and no
    validation; the splits file is made by patient if missing (``method``: lesion-balanced, or the
    authors' consecutive blocks)."""
    from . import splits as splits_mod

    splits = Path(splits)
    if splits.is_file():
        folds = splits_mod.load_splits(splits)
    else:
        folds = (splits_mod.authors_folds(list(records)) if method == "authors" else
                 splits_mod.make_folds(list(records), n_folds=5, seed=0, positive=lesion_positive(records)))
        splits.parent.mkdir(parents=True, exist_ok=True)
        splits_mod.save_splits(folds, splits)
        print(f"wrote {splits} ({len(folds)} folds, {method})", flush=True)
    if fold == ALL_DATA:
        chosen = {"train": sorted(splits_mod.cases_of(folds)), "val": []}
    else:
        chosen = next((f for f in folds if int(f["fold"]) == fold), None)
    if chosen is None:
        raise SystemExit(f"{splits}: no fold {fold}")
    by_id = {str(r.case_id): r for r in records}
    missing = [c for c in [*chosen["train"], *chosen["val"]] if str(c) not in by_id]
    if missing:
        raise SystemExit(f"{splits}: fold {fold} names cases not in the data: {missing[:5]}")
    return as_sources([by_id[str(c)] for c in chosen["train"]]), as_sources(
        [by_id[str(c)] for c in chosen["val"]]
    )


def _train_config(args: argparse.Namespace) -> TrainConfig:
    base = train_preset(args.preset)
    changes = dict(
        epochs=args.epochs,
        iters_per_epoch=args.iters_per_epoch,
        batch_size=args.batch_size,
        samples_per_volume=args.samples_per_volume,
        val_every=args.val_every,
        val_max_cases=args.val_max_cases,
        seed=args.seed,
        lr=args.lr,
        hot_neg=args.hot_neg,
        air=args.air,
        hot_balance=args.hot_balance,
        lesion_balance=args.lesion_balance,
        dice_batch=args.dice_batch,
        train_inferer=args.train_inferer,
        train_sw_overlap=args.train_sw_overlap,
        intensity_aug=args.intensity_aug,
        organ_weight=args.organ_weight,
        organ_head_lr=args.organ_head_lr,
        organ_head_levels=args.organ_head_levels,
        adjacent=args.adjacent,
    )
    if (
        args.hot_neg is not None and args.hot_neg > 0 and base.hot_neg == 0
    ):  # keep the three shares summing to 1
        changes["neg"] = max(0.0, 1.0 - base.pos - args.hot_neg)
    if args.no_amp:
        changes["amp"] = False
    try:
        return base.with_(**changes)
    except ValueError as err:  # e.g. --hot-balance 1.5: the user's flags, not a bug
        raise SystemExit(f"error: {err}") from None


def _model_config(args: argparse.Namespace) -> ModelConfig:
    """The preset's network, with ``--crop-size`` as its training crop (the weights are the same)."""
    config = preset(args.preset)
    if args.crop_size:
        try:
            config = config.with_(crop_size=tuple(args.crop_size))
        except ValueError as err:  # e.g. not a multiple of the network's strides
            raise SystemExit(f"error: --crop-size: {err}") from None
    return config


def _setup_threads(threads: int | None) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // world))


def _data_info(args: argparse.Namespace, n_train: int, n_val: int) -> dict[str, Any]:
    return {
        "data": str(Path(args.data).resolve()),
        "layout": args.layout,
        "splits": str(args.splits),
        "n_train": n_train,
        "n_val": n_val,
        "preset": args.preset,
    }


def run_fold(args: argparse.Namespace, fold: int, records: Sequence[Any]) -> Any:
    from .fit import fit

    method = args.split or ("authors" if args.preset.startswith("paper") else "balanced")
    train_src, val_src = fold_sources(records, args.splits, fold, method)
    config = _model_config(args)
    train = _train_config(args)
    budget = args.time_budget_min * 60 if args.time_budget_min else None
    return fit(
        train_src,
        val_src,
        config,
        train,
        Path(args.out) / member_name(fold),
        cache_dir=_cache_dir(args),
        cache_dtype=args.cache_dtype,
        resume=args.resume,
        device=args.device,
        num_workers=args.num_workers,
        time_budget_s=budget,
        data_info=_data_info(args, len(train_src), len(val_src)),
        fold=fold,
        progress=not args.quiet,
        stop_after=args.stop_after,
        stop_epoch=args.stop_epoch,
        init=_init_checkpoint(args, fold),
    )


def _init_checkpoint(args: argparse.Namespace, fold: int) -> Path | None:
    """--init-from DIR: fold K starts from DIR/foldK/best.pt (or last.pt) of a run, or DIR/foldK.pt of an
    exported weights folder, so the shipped weights can be trained further in a later session."""
    if not getattr(args, "init_from", None):
        return None
    root = Path(args.init_from)
    name = member_name(fold)
    for candidate in (root / name / "best.pt", root / name / "last.pt", root / f"{name}.pt"):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"{root}: no {name}/best.pt, {name}/last.pt or {name}.pt to warm-start from")


def _cache_dir(args: argparse.Namespace) -> Path:
    return Path(args.cache_dir) if args.cache_dir else Path(args.out) / "cache"


def cmd_prepare(args: argparse.Namespace) -> int:
    records = read_records(Path(args.data), args.layout, args.channel_order)
    store = CaseStore(as_sources(records), preset(args.preset), _cache_dir(args), args.cache_dtype)
    store.ensure_all(progress=True, workers=args.workers)
    print(f"{len(records)} cases preprocessed into {store.folder}")
    return 0


def cmd_splits(args: argparse.Namespace) -> int:
    """Write patient-level folds; with --extend, add the data's new cases to an existing folds file."""
    from . import splits as splits_mod

    if args.extend and args.method == "authors":
        raise SplitError("--method authors makes new folds; --extend keeps an existing file's folds")
    if args.train_only and not args.extend:
        raise SplitError("--train-only adds cases to an existing folds file: give it with --extend")
    old = splits_mod.load_splits(args.extend) if args.extend else None  # a bad file fails before the labels are read
    if old is not None and args.n_folds is not None and args.n_folds != len(old):
        raise SplitError(f"--n-folds {args.n_folds}: {args.extend} has {len(old)} folds, and --extend keeps them")
    records = read_records(Path(args.data), args.layout, args.channel_order)
    positive = lesion_positive(records)
    if old is not None:
        try:
            folds = splits_mod.extend_folds(old, records, seed=args.seed, positive=positive,
                                            train_only=args.train_only)
        except SplitError as err:
            raise SplitError(f"{args.extend}: {err}") from None
        added = len(records) - len(splits_mod.cases_of(old))
    elif args.method == "authors":
        folds = splits_mod.authors_folds(records, n_folds=args.n_folds or 5)
        added = len(records)
    else:
        folds = splits_mod.make_folds(records, n_folds=args.n_folds or 5, seed=args.seed, positive=positive)
        added = len(records)
    splits_mod.save_splits(folds, args.out)
    sizes = "/".join(str(len(f["val"])) for f in folds)
    lesion = "/".join(str(sum(positive.get(c, False) for c in f["val"])) for f in folds)
    extra = len(splits_mod.cases_of(folds) - {c for f in folds for c in f["val"]})
    print(f"wrote {args.out}: {added} cases placed; validation sizes {sizes}, with lesions {lesion}"
          + (f"; {extra} in every fold's training set only" if extra else ""))
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    _setup_threads(args.threads)
    records = read_records(Path(args.data), args.layout, args.channel_order)
    result = run_fold(args, args.fold, records)
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            json.dumps(
                {
                    "fold": args.fold,
                    "status": result.status,
                    "epochs": result.epochs_done,
                    "best_epoch": result.best_epoch,
                    "best_val_dice": result.best_val_dice,
                }
            )
        )
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    """All folds in sequence; with --resume a finished fold is skipped and a killed one continues."""
    from .fit import read_status

    _setup_threads(args.threads)
    records = read_records(Path(args.data), args.layout, args.channel_order)
    for fold in args.folds:
        status = read_status(Path(args.out) / member_name(fold))
        if args.resume and _fold_done(status, args.stop_epoch):
            print(
                f"fold {fold}: already {status['status']} ({status['epochs_done']} epochs), skipped",
                flush=True,
            )
            continue
        print(f"=== fold {fold} ===", flush=True)
        result = run_fold(args, fold, records)
        print(
            f"fold {fold}: {result.status} after {result.epochs_done} epochs, best val Dice "
            f"{result.best_val_dice:.3f} (epoch {result.best_epoch})",
            flush=True,
        )
    return 0


def _fold_done(status: dict[str, Any] | None, stop_epoch: int | None) -> bool:
    """Whether ``cv --resume`` skips a fold: finished, stopped by its budget, or stopped at a
    ``--stop-epoch`` no earlier than the one asked now."""
    if not status:
        return False
    if status.get("status") == "stop_epoch":
        return stop_epoch is None or status.get("epochs_done", 0) >= stop_epoch
    return status.get("status") in ("finished", "budget")


def cmd_revalidate(args: argparse.Namespace) -> int:
    """Score final weights that a budget stop left unvalidated (so export can choose best or last),
    or with --all-cases score them on the whole validation fold (the figure export reports)."""
    from .fit import validate_final, validate_full

    _setup_threads(args.threads)
    records = read_records(Path(args.data), args.layout, args.channel_order)
    sources = as_sources(records)
    if args.all_cases and not (args.splits and Path(args.splits).is_file()):
        raise SystemExit(f"--all-cases needs --splits naming the folds file the run trained with (got {args.splits!r})")
    for fold in args.folds:
        folder = Path(args.out) / member_name(fold)
        if args.all_cases:
            _, val_src = fold_sources(records, args.splits, fold)
            r = validate_full(folder, sources, [v.case_id for v in val_src], _cache_dir(args), args.device,
                              args.cache_dtype)
            print(f"fold {fold}: epoch {r['epoch']} on all {r['val_cases']} validation cases: Dice {r['val_dice']:.3f} "
                  f"FPV {r['val_fpv_ml']:.2f} ml FNV {r['val_fnv_ml']:.2f} ml", flush=True)
            continue
        ran = validate_final(folder, sources, _cache_dir(args), args.device, args.cache_dtype)
        print(f"fold {fold}: {'validated' if ran else 'nothing to do'}", flush=True)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    manifest = export(
        Path(args.runs), Path(args.out), folds=args.folds, which=args.which, description=args.description,
        dtype=args.dtype,
    )
    print(manifest.read_text())
    return 0


def cmd_widen(args: argparse.Namespace) -> int:
    """Trained weights -> the same function in a wider preset's network, to warm-start with --init-from."""
    from .widen import widen_weights

    written = widen_weights(Path(args.weights), preset(args.preset), Path(args.out), args.noise, args.seed)
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .fit import plot_curves

    histories = {}
    for fold in args.folds:
        path = Path(args.runs) / member_name(fold) / "last.pt"
        if path.is_file():
            histories[member_name(fold)] = torch.load(path, map_location="cpu", weights_only=True)["history"]
    if not histories:
        raise SystemExit(f"{args.runs}: no fold*/last.pt")
    plot_curves(histories, Path(args.out), title=args.title)
    print(f"wrote {args.out}")
    return 0


def _which(text: str) -> str | list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or not set(values) <= {"best", "last"}:
        raise argparse.ArgumentTypeError(f"expected best or last (or a comma list of them), got {text!r}")
    return values[0] if len(values) == 1 else values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _member(text: str) -> int | str:
    members = _folds(text)
    if len(members) != 1:
        raise argparse.ArgumentTypeError(f"expected one fold number or 'all', got {text!r}")
    return members[0]


def _folds(text: str) -> list[int | str]:
    try:
        return parse_members(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fold numbers and 'all', comma-separated, got {text!r}") from None


_PRESET_NAMES = tuple(PRESETS)


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument(
        "--layout", choices=LAYOUTS, default="tcia", help="tcia = <patient>/<study>/{SUV,SEG}.nii.gz"
    )
    p.add_argument("--channel-order", default="ct_pet", help="nnunet layout: ct_pet (autoPET III) or pet_ct")
    p.add_argument(
        "--preset", choices=_PRESET_NAMES, default="paper", help="model + recipe preset"
    )
    p.add_argument("--cache-dir", help="preprocessed-array cache (default RUN_DIR/cache)")
    p.add_argument("--cache-dtype", choices=CACHE_DTYPES, default="float32",
                   help="dtype of the cached PET arrays: float16 halves disk and page cache for large datasets "
                        "(a separate cache; give the same value to prepare and fit/cv; revalidate reads it "
                        "from last.pt)")


def _add_training(p: argparse.ArgumentParser) -> None:
    _add_data(p)
    p.add_argument("--splits", required=True, help="folds JSON (made by patient if it does not exist)")
    p.add_argument("--split", choices=SPLIT_METHODS,
                   help="how a missing --splits file is made: authors = five consecutive blocks of the sorted "
                        "patient folders, as their split_data.py (default of the paper presets); balanced = seeded, "
                        "lesion-positive studies spread evenly (default of the others)")
    p.add_argument("--out", required=True, help="run folder; fold K writes RUN_DIR/foldK/")
    p.add_argument("--epochs", type=int, help="planned epochs (the cosine schedule's length)")
    p.add_argument("--iters-per-epoch", type=int, help="optimiser steps per epoch and process")
    p.add_argument("--batch-size", type=int, help="crops per step and process")
    p.add_argument("--samples-per-volume", type=int, help="crops cut from each loaded volume")
    p.add_argument("--val-every", type=int, help="validate every N epochs (and after the last)")
    p.add_argument("--val-max-cases", type=int, help="validate on at most N cases of the fold (0 = all)")
    p.add_argument("--hot-neg", type=float, help="share of crops centred on hot non-lesion voxels")
    p.add_argument("--air", type=float,
                   help="share of crops centred on any non-lesion voxel, air included (demo: 0.1); "
                        "--hot-neg 0 --air 0 gives the paper's RandCropByPosNegLabeld")
    p.add_argument("--hot-balance", type=float,
                   help="hot crops per hot structure grow as size**B (1: per voxel; demo: 0.5)")
    p.add_argument("--lesion-balance", type=float,
                   help="lesion crops per lesion grow as size**B (1: per lesion voxel, the paper's; <1: bulky "
                        "lesions centre fewer crops)")
    p.add_argument("--dice-batch", action=argparse.BooleanOptionalAction, default=None,
                   help="Dice term over the whole batch rather than per crop (demo: on; paper: off)")
    p.add_argument("--lr", type=float)
    p.add_argument("--train-inferer", choices=("sliding", "simple"),
                   help="forward pass: sliding = the crop through the model's sliding window (roi, gaussian), loss "
                        "on the stitched output, as the authors trained (paper and demo presets); simple = the network "
                        "on the whole crop at once")
    p.add_argument("--train-sw-overlap", type=float, help="window overlap of --train-inferer sliding (paper: 0.25)")
    p.add_argument("--intensity-aug", action=argparse.BooleanOptionalAction, default=None,
                   help="gamma, contrast, brightness, noise, blur and low-resolution augmentation of the PET "
                        "(training/augmentation.py; demo presets: on, paper: off)")
    p.add_argument("--adjacent", type=float,
                   help="share of crops centred on a lesion voxel within 15 mm of hot non-lesion uptake (a lesion "
                        "beside a kidney, the bladder, the heart; uses the demo's sampler; default 0)")
    p.add_argument("--organ-weight", type=float,
                   help="organ supervision: weight of a training-only organ head's cross-entropy against each "
                        "case's ORGANS.nii.gz (phantoms made with --organs); exports keep the lesion network only "
                        "(default 0: off, as the paper)")
    p.add_argument("--organ-head-lr", type=float,
                   help="learning rate of the organ head (default 1e-2; the lesion network keeps --lr): a fresh "
                        "head at a fine-tuning's 1e-4 does not learn the organs")
    p.add_argument("--organ-head-levels", type=int,
                   help="decoder levels the organ head reads (default 3: the last three, coarser ones upsampled); "
                        "1 is the last level alone, the first runs' head")
    p.add_argument("--crop-size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="training crop in voxels instead of the preset's, same network (demo presets: 96; 64, the "
                        "window, is one window per crop: 1.6 s a step on two cores against 11 s)")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-amp", action="store_true", help="no mixed precision (CUDA fp16, CPU bf16)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--device", help="cuda / cpu (default: cuda when available)")
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    p.add_argument("--time-budget-min", type=float, help="stop a fold before an epoch that would exceed this")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/foldK/last.pt")
    p.add_argument("--init-from", help="warm-start fold K from DIR/foldK/best.pt of a run or DIR/foldK.pt "
                   "of a weights folder (fresh optimizer and schedule)")
    p.add_argument("--stop-after", type=int, help="end this process after N epochs (resumable, for tests)")
    p.add_argument("--stop-epoch", type=_positive_int,
                   help="end the run after epoch N, the cosine still planned over --epochs (the authors planned "
                        "800 and stopped their folds at 564, 447, 411, 391 and the single network at 400)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="preprocess every case once into the array cache")
    _add_data(p)
    p.add_argument("--out", required=True, help="run folder (the cache goes to RUN_DIR/cache)")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="preprocessing processes (one core each; default 1)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("splits", help="write patient-level folds, or add new cases to existing ones")
    _add_data(p)
    p.add_argument("--out", required=True, help="folds JSON to write")
    p.add_argument("--extend", help="existing folds JSON: keep its cases where they are, place only new ones")
    p.add_argument("--train-only", action="store_true",
                   help="with --extend: new patients join every fold's training set and no validation set, "
                        "so each fold keeps its validation cases (and figures comparable with earlier runs)")
    p.add_argument("--n-folds", type=int, help="number of folds (default 5; with --extend, the old file's)")
    p.add_argument("--method", choices=SPLIT_METHODS, default="balanced",
                   help="balanced = seeded, lesion-positive studies spread evenly over the folds; authors = "
                        "consecutive blocks of ceil(patients / folds) sorted patient folders, as their split_data.py")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_splits)

    p = sub.add_parser("fit", help="train one fold (torchrun for DDP)")
    _add_training(p)
    p.add_argument("--fold", type=_member, required=True,
                   help="fold number, or 'all' (every case of the folds file, no validation)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("cv", help="train the folds one after another")
    _add_training(p)
    p.add_argument("--folds", type=_folds, default=[0, 1, 2, 3, 4],
                   help="e.g. 0,1,2,3,4; 'all' trains one network on every case of the folds file without "
                        "validation (the authors' ensemble: 0,2,3,4,all)")
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("revalidate", help="validate final weights a budget stop left unvalidated, or all cases")
    _add_data(p)
    p.add_argument("--all-cases", action="store_true",
                   help="score last.pt on every validation case of the fold (writes foldK/val_full.json)")
    p.add_argument("--splits", help="folds JSON of the run (needed with --all-cases)")
    p.add_argument("--out", required=True, help="run folder with fold0/ ... fold4/")
    p.add_argument("--folds", type=_folds, default=[0, 1, 2, 3, 4])
    p.add_argument("--device")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_revalidate, cache_dtype=None)  # None: the cache the fold trained on (from last.pt)

    p = sub.add_parser("export", help="copy each fold's checkpoint to WEIGHTS/fold<k>.pt + manifest.json")
    p.add_argument("--runs", required=True, help="run folder with fold0/ ... fold4/")
    p.add_argument("--out", default="weights", help="weights folder")
    p.add_argument("--which", type=_which,
                   help="best or last, or one per fold: best,last,... (default: last for the paper's recipes, "
                        "as the authors kept each network's most recent checkpoint; best for the others)")
    p.add_argument("--folds", type=_folds, default=[0, 1, 2, 3, 4])
    p.add_argument("--description", default="", help="what the weights were trained on")
    p.add_argument("--dtype", choices=tuple(EXPORT_DTYPES), default="float32",
                   help="precision the weights are stored at: float16 halves weights/ (and the image); "
                        "inference still computes in float32 or the device's autocast")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("widen", help="copy trained weights into a wider preset's network (same output)")
    add_weights_argument(p, required=True)
    p.add_argument("--preset", choices=_PRESET_NAMES, required=True, help="the wider network, e.g. demo-wide")
    p.add_argument("--out", required=True, help="folder for the widened checkpoints (same file names)")
    p.add_argument("--noise", type=float, default=0.01,
                   help="weight noise relative to each tensor's spread, so copied channels can diverge (0: exact)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_widen)

    p = sub.add_parser("plot", help="loss and validation-Dice curves of all folds in one PNG")
    p.add_argument("--runs", required=True)
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--folds", type=_folds, default=[0, 1, 2, 3, 4])
    p.add_argument("--title", default="")
    p.set_defaults(func=cmd_plot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (LayoutError, SplitError, CheckpointError, WidenError, NonFiniteLoss) as err:  # data, not a bug
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
