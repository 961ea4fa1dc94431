"""Make docs/phantom_ranges.png: what the standard, wide and shifted phantom profiles draw, side by side.

Why: the profiles are the claim that the demo weights were trained on a wider distribution and
tested outside it; histograms of the drawn values (many seeds, no rendering) and a few coronal MIPs
of wide and shifted phantoms show that claim at a glance. Regenerate after changing ranges.py.
Usage: python -m scripts.make_range_picture [--seeds 1500] [--out docs/phantom_ranges.png]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from scripts.make_phantom_picture import show_phantom
from training.phantoms import make_phantom
from training.phantoms.ranges import PROFILES
from training.phantoms.sampling import sample_calibration, sample_lesions, sample_patient

COLOURS = {"standard": "#4c72b0", "wide": "#55a868", "shifted": "#c44e52"}


def draws(profile: str, seeds: range) -> dict[str, list]:
    """The drawn values of many seeds (patients with lesions forced on), without rendering a voxel."""
    r = PROFILES[profile]
    out: dict[str, list] = {k: [] for k in ("diameter", "suv_max", "count", "psf", "noise", "width",
                                            "bladder", "brain", "calibration", "site")}
    for seed in seeds:
        patient = sample_patient(np.random.default_rng([seed, 0]), r)
        lesions = sample_lesions(np.random.default_rng([seed, 1]), patient, True, None, r)
        out["count"].append(len(lesions))
        out["diameter"] += [le.diameter_mm for le in lesions]
        out["suv_max"] += [le.contrast.suv_max for le in lesions]
        out["site"] += [le.site for le in lesions]
        out["psf"].append(patient.scanner.psf_fwhm_mm)
        out["noise"].append(patient.scanner.noise_level)
        out["width"].append(patient.build.half_width_mm)
        out["bladder"].append(patient.suv.bladder)
        out["brain"].append(patient.suv.brain)
        out["calibration"].append(sample_calibration(np.random.default_rng([seed, 4]), r))
    return out


PANELS = [
    ("diameter", "lesion diameter (mm, log)", True),
    ("suv_max", "lesion SUVmax (log)", True),
    ("count", "lesions per patient with lesions", False),
    ("psf", "PSF FWHM (mm)", False),
    ("noise", "relative noise level", False),
    ("width", "torso half width (mm)", False),
    ("bladder", "bladder SUV (log)", True),
    ("brain", "brain SUV", False),
    ("calibration", "SUV calibration factor", False),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=1500, help="patients drawn per profile")
    p.add_argument("--out", type=Path, default=Path("docs/phantom_ranges.png"))
    args = p.parse_args(argv)
    values = {name: draws(name, range(args.seeds)) for name in PROFILES}
    fig = plt.figure(figsize=(16, 13), facecolor="white")
    grid = fig.add_gridspec(3, 6, height_ratios=[1, 1, 2.2])
    for i, (key, title, log) in enumerate(PANELS):
        ax = fig.add_subplot(grid[i // 5, i % 5])
        every = np.concatenate([values[n][key] for n in PROFILES]).astype(float)
        bins = (np.geomspace(every.min(), every.max(), 40) if log
                else np.arange(0.5, every.max() + 1.5) if key == "count" else np.linspace(every.min(), every.max(), 40))
        for name in PROFILES:
            ax.hist(values[name][key], bins=bins, density=True, histtype="step", lw=1.6, color=COLOURS[name],
                    label=name)
        if log:
            ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_yticks([])
        ax.tick_params(labelsize=8)
    ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[1, 4:])
    sites = sorted({s for n in PROFILES for s in values[n]["site"]})
    for k, name in enumerate(PROFILES):
        counts = Counter(values[name]["site"])
        total = sum(counts.values())
        ax.barh(np.arange(len(sites)) + (k - 1) * 0.27, [counts[s] / total for s in sites], height=0.27,
                color=COLOURS[name], label=name)
    ax.set_yticks(np.arange(len(sites)), sites, fontsize=7)
    ax.set_title("share of lesions per site", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    shown = [("wide", 3), ("wide", 11), ("wide", 21), ("shifted", 60003), ("shifted", 60007), ("shifted", 60012)]
    for k, (name, seed) in enumerate(shown):
        ax = fig.add_subplot(grid[2, k])
        ph = make_phantom(seed, spacing=(4.0, 4.0, 4.0), shape=(200, 200, 300), lesions=True, ranges=name)
        show_phantom(ax, ph)
        body = ph.info["body"]
        ax.set_title(f"{name} seed {seed}: {len(ph.info['lesions'])} lesions\nFWHM {body['psf_fwhm_mm']:.1f} mm, "
                     f"SUV x{ph.info['suv_calibration']:.2f}", fontsize=8, color=COLOURS[name])
    fig.suptitle(f"Phantom profiles: drawn values of {args.seeds} patients each (lesions forced on), and coronal "
                 "PET MIPs (SUV 0-10, label in colour)", fontsize=11)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
