"""What the lesion report costs, and what it looks like, on a whole-body phantom with 20 lesions.

    python -m benchmarks.lesion_report --work /tmp/lesion_report --docs docs/report \\
        --json docs/benchmarks/lesion_report.json

Runs ``process.py --report --save-votes --save-probabilities`` on the CPU (the shipped ensemble, the
default exact crop, no time budget) and prints the case's seconds per stage from ``results.json``:
the report's share is ``report`` (lesions measured, JSON and QA picture written) and ``write_maps``
(the vote and probability maps). Then ``python -m evaluation.report`` on the phantom's ground truth
(all 20 lesions) times the measurement alone. With ``--docs`` the QA picture, a MIP of the vote and
probability maps, an excerpt of the JSON and (where Chromium is installed) a browser screenshot of
the run page are copied there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASE = "wholebody20"


def maps_picture(votes_path: Path, probability_path: Path, pet_path: Path, out: Path) -> None:
    """Coronal MIPs: the PET, the largest vote count and the largest mean probability along the view."""
    import numpy as np
    import SimpleITK as sitk
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def coronal(path: Path) -> np.ndarray:
        image = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
        return sitk.GetArrayFromImage(image)[::-1].max(axis=1), image.GetSpacing()

    (pet, spacing), (votes, _), (prob, _) = coronal(pet_path), coronal(votes_path), coronal(probability_path)
    votes_max = int(sitk.ReadImage(str(votes_path)).GetMetaData("networks"))
    fig = Figure(figsize=(9, 6), dpi=100)
    FigureCanvasAgg(fig)
    aspect = spacing[2] / spacing[0]
    panels = ((pet, "PET MIP (SUV 0-10)", "gray_r", 0, 10), (votes, f"networks voting lesion (0-{votes_max})",
              "viridis", 0, votes_max), (prob, "mean lesion probability (0-1)", "magma", 0, 1))
    for i, (array, title, cmap, lo, hi) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        shown = ax.imshow(array, cmap=cmap, vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
        if i:
            fig.colorbar(shown, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(out)


def screenshot(page: Path, out: Path) -> bool:
    """The run page as Chromium renders it (Debian's ``chromium`` package), when it is installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("no chromium: run page screenshot skipped")
        return False
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={out}", "--window-size=1200,1500", page.as_uri()], check=True,
                   capture_output=True, timeout=120)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/lesion_report"))
    p.add_argument("--seed", type=int, default=70000)
    p.add_argument("--lesions", type=int, default=20)
    p.add_argument("--docs", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import SimpleITK as sitk

    from training.phantoms import make_phantom

    work = args.work
    shutil.rmtree(work / "output", ignore_errors=True)
    for sub in ("input/images/pet", "input/images/ct", "gt"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    pet_path = work / "input/images/pet" / f"{CASE}.mha"
    if not pet_path.exists():
        phantom = make_phantom(args.seed, lesion_count=args.lesions)
        sitk.WriteImage(phantom.ct, str(work / "input/images/ct" / f"{CASE}.mha"), True)
        sitk.WriteImage(phantom.label, str(work / "gt" / f"{CASE}.mha"), True)
        sitk.WriteImage(phantom.pet, str(pet_path), True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "process.py", "--input", str(work / "input"), "--output", str(work / "output"),
                    "--device", "cpu", "--time-budget", "0", "--report", "--save-votes", "--save-probabilities"],
                   check=True, cwd=ROOT)
    wall = time.perf_counter() - started
    entry = json.loads((work / "output/results.json").read_text())[0]
    seconds = entry["inference"]["seconds"]
    total = sum(seconds.values())
    report_s = seconds.get("report", 0.0) + seconds.get("write_maps", 0.0)

    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "evaluation.report", "--pet", str(pet_path),
                    "--mask", str(work / "gt" / f"{CASE}.mha"), "--out", str(work / "gt_report" / f"{CASE}.json")],
                   check=True, cwd=ROOT)
    gt_s = time.perf_counter() - started
    gt = json.loads((work / "gt_report" / f"{CASE}.json").read_text())["summary"]
    predicted = entry["lesion_report"]
    result = {"command": "python -m benchmarks.lesion_report " + " ".join(argv or sys.argv[1:]),
              "shape": list(sitk.ReadImage(str(pet_path)).GetSize()), "process_wall_s": round(wall, 1),
              "case_seconds": {k: round(v, 2) for k, v in seconds.items()}, "case_total_s": round(total, 1),
              "report_and_maps_s": round(report_s, 2), "report_share": round(report_s / total, 4),
              "predicted": predicted, "ground_truth": gt,
              "ground_truth_report_command_s": round(gt_s, 1)}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.docs:
        out = work / "output"
        args.docs.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "lesion-report" / f"{CASE}.png", args.docs / "qa_numbered_lesions.png")
        maps_picture(out / "votes" / f"{CASE}.mha", out / "probabilities" / f"{CASE}.mha", pet_path,
                     args.docs / "votes_and_probability.png")
        report = json.loads((out / "lesion-report" / f"{CASE}.json").read_text())
        excerpt = {**report, "lesions": report["lesions"][:2], "lesions_left_out_here": len(report["lesions"]) - 2}
        (args.docs / "report_excerpt.json").write_text(json.dumps(excerpt, indent=2) + "\n")
        screenshot(out / "lesion-report" / "index.html", args.docs / "run_page.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
