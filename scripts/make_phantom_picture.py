"""Make docs/phantoms.png: coronal PET MIPs (inverted grey, SUV 0-10) with the lesion label in colour.

Why: a picture is the quickest check that the phantoms look like whole-body FDG PET (and where the
lesions are); regenerate it whenever training/phantoms/ changes.
Usage: python -m scripts.make_phantom_picture [--seeds 0 1 2 3] [--out docs/phantoms.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk

from training.phantoms import make_phantom


def coronal_mip(img: sitk.Image, reducer=np.max) -> tuple[np.ndarray, float]:
    """Coronal projection (rows = superior..inferior, cols = patient right..left) and its aspect ratio."""
    # reorient to LPS identity so that array axes are (S->I flipped below, P, L)
    img = sitk.DICOMOrient(img, "LPS")
    arr = sitk.GetArrayViewFromImage(img)  # (z, y, x): z inferior->superior, x right->left
    mip = reducer(arr, axis=1)[::-1, :]  # head at the top
    sx, _, sz = img.GetSpacing()
    return mip, sz / sx


def show_phantom(ax, ph) -> None:
    """A phantom's coronal PET MIP (SUV 0-10, inverted grey, the air beside the body cut off) with its label."""
    pet, aspect = coronal_mip(ph.pet)
    lab, _ = coronal_mip(ph.label)
    cols = np.flatnonzero(pet.max(axis=0) > 0.2)
    lo, hi = max(int(cols[0]) - 5, 0), min(int(cols[-1]) + 6, pet.shape[1])
    pet, lab = pet[:, lo:hi], lab[:, lo:hi]
    ax.imshow(pet, cmap="gray_r", vmin=0, vmax=10, aspect=aspect, interpolation="bilinear")
    ax.imshow(np.ma.masked_where(lab == 0, lab), cmap="autumn", alpha=0.55, aspect=aspect, interpolation="nearest")
    ax.set_axis_off()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--out", type=Path, default=Path("docs/phantoms.png"))
    p.add_argument("--lesions", choices=["auto", "yes"], default="yes")
    args = p.parse_args(argv)
    fig, axs = plt.subplots(1, len(args.seeds), figsize=(3.0 * len(args.seeds), 8.0), facecolor="white")
    axs = np.atleast_1d(axs)
    for ax, seed in zip(axs, args.seeds, strict=True):
        ph = make_phantom(seed, lesions=True if args.lesions == "yes" else None)
        show_phantom(ax, ph)
        n = len(ph.info["lesions"])
        b = ph.info["body"]
        ax.set_title(
            f"seed {seed}: {n} lesion{'s' if n != 1 else ''}\n"
            f"FWHM {b['psf_fwhm_mm']:.1f} mm, bladder SUV {b['suv_bladder']:.0f}",
            fontsize=9,
        )
    fig.suptitle(
        "Synthetic FDG-PET phantoms: coronal MIP (SUV 0-10, inverted); lesion label in colour", fontsize=10
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
