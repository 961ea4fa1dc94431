"""What a training run shows: metrics.csv and the loss / validation-Dice curves, written atomically."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from common.atomic import write_atomic

CSV_FIELDS = (
    "epoch",
    "loss",
    "loss_lesion",
    "loss_organ",
    "lr",
    "steps",
    "skipped",
    "val_dice",
    "val_fpv_ml",
    "val_fnv_ml",
    "val_cases",
    "epoch_s",
    "elapsed_s",
)


def is_finite_number(value: Any) -> bool:
    """A real number that is not NaN or infinite (history rows hold NaN where nothing was measured)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def write_metrics_csv(history: list[dict[str, Any]], path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for row in history:
                writer.writerow({k: row.get(k, "") for k in CSV_FIELDS})

    write_atomic(path, write)


def plot_curves(histories: dict[str, list[dict[str, Any]]], path: Path, title: str = "") -> None:
    """Loss and validation Dice per epoch; one line per run (fold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4))
    any_lesion = False
    for name, history in histories.items():
        epochs = [r["epoch"] for r in history]
        line = ax_loss.plot(epochs, [r["loss"] for r in history], label=name)[0]
        lesion = [(r["epoch"], r["loss_lesion"]) for r in history if is_finite_number(r.get("loss_lesion"))]
        any_lesion = any_lesion or bool(lesion)
        if lesion:  # dashed: batches with lesion voxels only (the plain loss has a floor, see fit())
            ax_loss.plot(*zip(*lesion, strict=True), linestyle="--", color=line.get_color(),
                         label=f"{name} (lesion batches)" if name else "lesion batches")
        val = [(r["epoch"], r["val_dice"]) for r in history if is_finite_number(r.get("val_dice"))]
        if val:
            ax_dice.plot(*zip(*val, strict=True), marker="o", label=name)
    ax_loss.set(xlabel="epoch", ylabel="training loss (DiceCE)", title="loss")
    ax_dice.set(xlabel="epoch", ylabel="Dice (lesion cases)", title="validation Dice", ylim=(0, 1))
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
        if len(histories) > 1 or title or any_lesion:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
