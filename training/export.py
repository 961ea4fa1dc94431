"""Copy each fold's chosen checkpoint into the weights folder as fold<k>.pt and write the manifest.

The exported files keep only what inference needs (config + weights + provenance); optimiser and RNG
states stay in the run folder. The manifest's sha256s are what the container checks at start-up.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from common.atomic import json_safe
from model.config import ModelConfig
from model.manifest import write_manifest
from model.network import CheckpointError, build_network, save_checkpoint, weights_digest

from .recipe import TrainConfig
from .splits import member_name

PROVENANCE_KEYS = (
    "fold",
    "epoch",
    "best_epoch",
    "best_val_dice",
    "elapsed_s",
    "train_config",
    "data",
    "val_cases",
    "val_metrics",
)


EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def fold_checkpoint(run_dir: Path, fold: int | str, which: str) -> Path:
    """``best.pt`` or ``last.pt`` of a fold; ``best`` falls back to ``last`` when no validation ran."""
    folder = Path(run_dir) / member_name(fold)
    if which == "best" and (folder / "best.pt").is_file():
        return folder / "best.pt"
    if (folder / "last.pt").is_file():
        return folder / "last.pt"
    raise FileNotFoundError(f"{folder}: no best.pt or last.pt to export")


def _full_validation(source: Path, net_state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``revalidate --all-cases`` figures (val_full_*) when they scored these very weights, else none."""
    path = source.parent / "val_full.json"
    if not path.is_file():
        return {}
    full = json.loads(path.read_text())
    if full.get("weights") != weights_digest(net_state):  # stale: the fold was trained again since
        return {}
    return {f"val_full_{k[4:]}": json_safe(full[k]) for k in ("val_dice", "val_fpv_ml", "val_fnv_ml", "val_cases")}


def default_choice(run_dir: Path, fold: int | str) -> str:
    """The checkpoint a run's recipe keeps: the most recent for the paper's recipes (the authors
    exported each network's latest checkpoint, having run no validation), else the best validated."""
    folder = Path(run_dir) / member_name(fold)
    source = folder / "last.pt" if (folder / "last.pt").is_file() else folder / "best.pt"
    state = torch.load(source, map_location="cpu", weights_only=True)
    name = TrainConfig.from_json(state["train_config"]).name if state.get("train_config") else ""
    return "last" if name.startswith("paper") else "best"


def export(
    run_dir: Path,
    out: Path,
    folds: Sequence[int | str] = (0, 1, 2, 3, 4),
    which: str | Sequence[str] | None = None,
    description: str = "",
    dtype: str = "float32",
) -> Path:
    """Write ``out/fold<k>.pt`` (``out/all.pt`` for the all-data member) and ``out/manifest.json``;
    returns the manifest path. ``which`` None: each member's recipe decides (``default_choice``).

    ``dtype`` "float16" stores the weights at half the size (the networks still run in float32 or
    the device's autocast, from weights rounded to float16); training checkpoints stay float32.
    """
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype: one of {list(EXPORT_DTYPES)}, got {dtype!r}")
    missing = [fold for fold in folds if not any((Path(run_dir) / member_name(fold) / n).is_file()
                                                  for n in ("best.pt", "last.pt"))]
    if missing:  # before anything is written
        have = [fold for fold in folds if fold not in missing]
        hint = f"; export those with --folds {','.join(map(str, have))}" if have else ""
        raise CheckpointError(f"{run_dir}: no best.pt or last.pt for fold(s) {', '.join(map(str, missing))}{hint}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models: list[dict[str, Any]] = []
    preset = None
    if which is None:
        choices = [default_choice(run_dir, fold) for fold in folds]
    else:
        choices = [which] * len(folds) if isinstance(which, str) else list(which)
    if len(choices) != len(folds) or not set(choices) <= {"best", "last"}:
        raise ValueError(f"which: 'best', 'last' or one of them per fold, got {which!r} for folds {list(folds)}")
    for fold, choice in zip(folds, choices, strict=True):
        source = fold_checkpoint(run_dir, fold, choice)
        state = torch.load(source, map_location="cpu", weights_only=True)
        config = ModelConfig.from_json(state["config"])
        preset = preset or config.name
        net = build_network(config)
        net.load_state_dict(state["net"])
        history = state.get("history", [])
        epoch = int(state.get("epoch", 0))
        row = next((r for r in history if r.get("epoch") == epoch), {})
        meta = {k: state[k] for k in PROVENANCE_KEYS if k in state}
        meta.update(
            fold=fold, exported_from=f"{source.parent.name}/{source.name}", epochs_trained=len(history)
        )
        target = out / f"{member_name(fold)}.pt"
        save_checkpoint(target, net, config, store_dtype=EXPORT_DTYPES[dtype], **meta, weights_dtype=dtype)
        data = json.loads(state.get("data", "{}") or "{}")
        full = _full_validation(source, state["net"])
        models.append(
            {
                "file": target.name,
                "fold": fold,
                "checkpoint": source.stem,
                "epoch": epoch,
                "epochs": len(history),
                "val_dice": json_safe(row.get("val_dice")),
                "val_fpv_ml": json_safe(row.get("val_fpv_ml")),
                "val_fnv_ml": json_safe(row.get("val_fnv_ml")),
                "val_cases": row.get("val_cases"),
                "train_minutes": round(float(state.get("elapsed_s", 0.0)) / 60, 1),
                "weights_dtype": dtype,
                "data": data,
                **full,
            }
        )
    return write_manifest(out, models, preset=preset, description=description, run=str(Path(run_dir).name))
