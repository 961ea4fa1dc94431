"""QA pictures: coronal and sagittal maximum-intensity projections of the PET with masks overlaid.

Drawn for the lesion report and for ``python -m evaluation.mip`` (the command line stays in
``evaluation``, which adds the metrics to the title).

Readers of PET look at MIPs in inverted grey (high uptake dark), head up, patient's right on the
viewer's left of the coronal view. Images arrive with any direction matrix, so everything is first
reoriented to one anatomical orientation (LPS, identity direction) and only then projected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from common.geometry import grid_differences

if TYPE_CHECKING:
    from .lesions import Lesion

#: SUV display window: 0 white, >= 10 black.
SUV_WINDOW = (0.0, 10.0)
#: Orientation the arrays are brought to: x towards patient Left, y towards Posterior, z towards Superior.
ORIENTATION = "LPS"
PRED_COLOUR = "red"
#: Layout in pixels: two text lines on top, a thin margin around and between the panels.
HEADER_PX, MARGIN_PX, GAP_PX = 40, 6, 10
GT_COLOUR = "lime"
#: Width of the lesion list on the right of the views, and the height of one of its lines (7 pt).
LEGEND_PX = 150
LIST_LINE_PX = 12


@dataclass(frozen=True)
class Projection:
    """One view: PET MIP and mask MIPs as (rows, columns) with row 0 the top (head) of the picture."""

    name: str
    pet: np.ndarray
    pred: np.ndarray | None
    gt: np.ndarray | None
    #: Height / width of one pixel in mm, for a true-to-scale display.
    pixel_aspect: float
    #: Physical width and height of the view in mm.
    width_mm: float
    height_mm: float


def orient(image: sitk.Image) -> sitk.Image:
    """The image permuted/flipped to LPS so array axes mean the same anatomy for every input."""
    return sitk.DICOMOrient(image, ORIENTATION)


def _on_pet_grid(mask: sitk.Image, pet: sitk.Image) -> sitk.Image:
    """The mask resampled (nearest neighbour) onto the PET grid when it lives on another one."""
    if not grid_differences(mask, pet):
        return mask
    return sitk.Resample(mask, pet, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())


def projections(
    pet: sitk.Image, pred: sitk.Image | None = None, gt: sitk.Image | None = None
) -> list[Projection]:
    """Coronal and sagittal MIPs, head up, ready to show with imshow(origin="upper")."""
    pet_o = orient(pet)
    # After LPS orientation the array is [z (inferior->superior), y (anterior->posterior), x (right->left)].
    vol = sitk.GetArrayFromImage(pet_o)[::-1]  # superior first, so row 0 is the head
    masks = {}
    for key, mask in (("pred", pred), ("gt", gt)):
        if mask is not None:
            masks[key] = sitk.GetArrayFromImage(orient(_on_pet_grid(mask, pet)))[::-1] > 0
    sx, sy, sz = pet_o.GetSpacing()
    nz, ny, nx = vol.shape
    views = []
    # Coronal: look from the front, project along y; columns run from patient right to left.
    # Sagittal: look from the patient's left, project along x; columns run from anterior to posterior.
    for name, axis, col_spacing, n_cols in (("coronal", 1, sx, nx), ("sagittal", 2, sy, ny)):
        views.append(
            Projection(
                name=name,
                pet=vol.max(axis=axis),
                pred=masks["pred"].any(axis=axis) if "pred" in masks else None,
                gt=masks["gt"].any(axis=axis) if "gt" in masks else None,
                pixel_aspect=sz / col_spacing,
                width_mm=n_cols * col_spacing,
                height_mm=nz * sz,
            )
        )
    return views


def _overlay(ax: Axes, mask: np.ndarray, colour: str, fill_alpha: float) -> None:
    """Translucent fill plus an outline, so small lesions stay visible and large ones do not hide the PET."""
    if not mask.any():
        return
    if fill_alpha > 0:
        rgba = np.zeros((*mask.shape, 4), dtype=np.float32)
        rgba[mask] = (*to_rgb(colour), fill_alpha)
        ax.imshow(rgba, interpolation="nearest", aspect=ax.get_aspect())
    ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=0.8)


def lesion_positions(pet: sitk.Image, lesions: Sequence[Lesion]) -> dict[str, list[tuple[float, float]]]:
    """Each lesion's centroid as (column, row) in the coronal and the sagittal view of ``projections``."""
    pet_o = orient(pet)
    nz = pet_o.GetSize()[2]
    out: dict[str, list[tuple[float, float]]] = {"coronal": [], "sagittal": []}
    for lesion in lesions:
        x, y, z = pet_o.TransformPhysicalPointToContinuousIndex(lesion.centroid_mm)
        row = nz - 1 - z  # the views are flipped so that the head is row 0
        out["coronal"].append((x, row))
        out["sagittal"].append((y, row))
    return out


def save_mip_png(
    pet: sitk.Image,
    path: str | Path,
    pred: sitk.Image | None = None,
    gt: sitk.Image | None = None,
    title: str = "",
    height_px: int = 800,
    dpi: int = 100,
    lesions: Sequence[Lesion] = (),
    more_lesions: int = 0,
    max_width_px: int | None = None,
) -> Path:
    """Write a PNG with coronal and sagittal PET MIPs, prediction in red and ground truth in green.

    The picture is ``height_px`` pixels high; its width follows the body's physical proportions. With
    ``max_width_px`` a field of view wider than tall (a phantom, a head-and-neck or limb scan) gets
    shorter panels instead of a wider picture, so that a page shows it unscaled, its text legible.
    ``lesions`` (lesion_report/lesions.py) are numbered at their centroids and listed with volume and
    SUVmax in a column on the right, ``more_lesions`` counted below the list.
    """
    views = projections(pet, pred, gt)
    header, margin, gap = HEADER_PX / dpi, MARGIN_PX / dpi, GAP_PX / dpi  # inches
    fig_h = height_px / dpi
    panel_h = fig_h - header - 2 * margin
    legend_w = LEGEND_PX / dpi if lesions else 0.0
    lines = ["#   ml      SUVmax"] + [f"{lesion.id:<3d} {lesion.volume_ml:<7.1f} {lesion.suv_max:.1f}"
                                      for lesion in lesions]
    lines += [f"... {more_lesions} more"] if more_lesions else []
    aspects = [v.width_mm / v.height_mm for v in views]
    fixed_w = gap * (len(views) + 1) + legend_w
    if max_width_px is not None and panel_h * sum(aspects) + fixed_w > max_width_px / dpi:
        panel_h = max(max_width_px / dpi - fixed_w, 1.0) / sum(aspects)
        # the lesion list must still fit beside (one line to spare: the last line's descent, the margin)
        panel_h = max(panel_h, (len(lines) + 1) * LIST_LINE_PX / dpi if lesions else 0.0)
        fig_h = panel_h + header + 2 * margin
    widths = [panel_h * a for a in aspects]
    fig_w = sum(widths) + fixed_w
    positions = lesion_positions(pet, lesions)
    # A bare Figure on the Agg canvas: no pyplot state, no display, safe in threads and containers.
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("white")
    left = gap
    for view, w in zip(views, widths, strict=True):
        ax = fig.add_axes((left / fig_w, margin / fig_h, w / fig_w, panel_h / fig_h))
        left += w + gap
        ax.imshow(
            view.pet, cmap="gray_r", vmin=SUV_WINDOW[0], vmax=SUV_WINDOW[1],
            interpolation="bilinear", aspect=view.pixel_aspect,
        )
        # Prediction filled, ground truth outlined on top: a hit reads as red inside a green line.
        if view.pred is not None:
            _overlay(ax, view.pred, PRED_COLOUR, 0.4)
        if view.gt is not None:
            _overlay(ax, view.gt, GT_COLOUR, 0.0)
        ax.set_xlim(-0.5, view.pet.shape[1] - 0.5)
        ax.set_ylim(view.pet.shape[0] - 0.5, -0.5)  # row 0 (head) at the top
        ax.set_axis_off()
        ax.text(0.02, 0.99, view.name, transform=ax.transAxes, va="top", fontsize=8, color="tab:blue")
        for lesion, (col, row) in zip(lesions, positions[view.name], strict=True):
            ax.annotate(str(lesion.id), (col, row), xytext=(4, 4), textcoords="offset points", fontsize=8,
                        color="darkred", bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.7))
    legend = [f"SUV {SUV_WINDOW[0]:g}-{SUV_WINDOW[1]:g}"]
    if pred is not None:
        legend.append("prediction: red")
    if gt is not None:
        legend.append("ground truth: green outline")
    top = 1 - margin / fig_h
    fig.text(0.5, top, title, ha="center", va="top", fontsize=9)
    fig.text(0.5, top - 0.45 * header / fig_h, "   ".join(legend), ha="center", va="top", fontsize=8,
             color="dimgray")
    if lesions:
        fig.text(1 - legend_w / fig_w, 1 - (header + margin) / fig_h, "\n".join(lines), ha="left", va="top",
                 fontsize=7, family="monospace")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, facecolor="white", format="png")
    return path
