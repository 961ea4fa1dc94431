"""The interactive protocol on the held-out phantom sets, side by side, into one results table.

    python -m scripts.evaluate_interactive --weights weights/interactive --crop body --limit 10 \\
        --table docs/heldout/interactive.md --json docs/benchmarks/interactive_heldout.json

Each set (``--sets NAME=FOLDER``, TCIA layout; by default the two held-out sets of
``scripts/evaluate_heldout.py``) is run through ``evaluation.interactive`` (corrective clicks, 0..10
per label). The table has one block per set: the automatic ensemble's row from
``docs/heldout/results.md`` for comparison, then the interactive network at every step and the AUCs.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from dataclasses import asdict
from pathlib import Path

from scripts.evaluate_heldout import DEFAULT_SETS, stage

ROOT = Path(__file__).resolve().parents[1]


def automatic_rows(results_table: Path) -> dict[str, tuple[str, str, str]]:
    """The shipped ensemble's figures per set, from the held-out results table (its first model row)."""
    if not results_table.is_file():
        return {}
    lines = [line for line in results_table.read_text().splitlines() if line.startswith("| `weights`")]
    header = next((line for line in results_table.read_text().splitlines() if line.startswith("| model")), "")
    if not lines or not header:
        return {}
    cells = [c.strip() for c in lines[0].strip("|").split("|")][1:]
    names = [re.match(r"(\w+)", c.strip()).group(1) for c in header.strip("|").split("|")[1:]]
    out: dict[str, tuple[str, str, str]] = {}
    for k in range(0, len(cells), 3):
        out[names[k]] = (cells[k], cells[k + 1], cells[k + 2])
    return out


def main(argv: list[str] | None = None) -> int:
    from evaluation.interactive import evaluate, plot

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS), metavar="NAME=FOLDER")
    p.add_argument("--crop", default="body")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--table", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--plot", type=Path, default=None, help="Dice by clicks, one line per set")
    args = p.parse_args(argv)
    automatic = automatic_rows(ROOT / "docs/heldout/results.md")
    command = (f"python -m scripts.evaluate_interactive --weights {args.weights} --crop {args.crop} "
               f"--limit {args.limit} --table {args.table} --json {args.json}")
    summaries, record = {}, {"command": command, "weights": str(args.weights), "sets": {}}
    lines = ["# Interactive refinement on the held-out phantoms", "",
             f"Written by `{command}`. Corrective clicks (`evaluation.interactive`): at each step a tumour "
             "click at the centre of the largest missed lesion part and a background click at the centre of "
             "the largest false positive of the current mask. Dice: mean over cases with lesions; FPV: mean "
             "over all cases; FNV: mean over cases with lesions (ml); AUC: trapezoids over steps 0..10. The "
             "automatic row is the shipped ensemble from [results.md](results.md) (same sets, same crop).", ""]
    for entry in args.sets:
        name, folder = entry.split("=", 1)
        with tempfile.TemporaryDirectory() as work:
            input_root, gt = stage(ROOT / folder, Path(work), args.limit)
            pets = input_root / "images/pet"
            pairs = [(p.name.removesuffix(".nii.gz"), p, gt / p.name) for p in sorted(pets.iterdir())]
            cases, summary = evaluate(args.weights, pairs, args.steps, "corrective", args.crop)
        summaries[name] = summary
        record["sets"][name] = {"folder": folder, "summary": summary,
                                "cases": {k: [asdict(s) for s in v] for k, v in cases.items()}}
        lines += [f"## {name} ({summary['cases']} cases, {summary['cases_with_lesions']} with lesions)", "",
                  "| clicks per label | Dice | FPV ml | FNV ml | windows run | seconds |",
                  "| --- | --- | --- | --- | --- | --- |"]
        if name in automatic:
            dice, fpv, fnv = automatic[name]
            lines.append(f"| automatic ensemble (shipped) | {dice} | {fpv} | {fnv} | | |")
        for row in summary["steps"]:
            lines.append(f"| {row['step']} | {row['dice']:.3f} | {row['fpv_ml']:.2f} | {row['fnv_ml']:.2f} | "
                         f"{row['windows']:.0f} | {row['seconds']:.1f} |")
        auc = summary["auc"]
        lines += [f"| AUC | {auc['dice']:.3f} | {auc['fpv_ml']:.2f} | {auc['fnv_ml']:.2f} | | |", ""]
        print(f"{name}: " + ", ".join(f"step {r['step']} Dice {r['dice']:.3f}" for r in summary["steps"]),
              flush=True)
    args.table.write_text("\n".join(lines) + "\n")
    args.json.write_text(json.dumps(record, indent=1, default=float) + "\n")
    if args.plot:
        plot(summaries, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
