"""Grand-Challenge entry point: autoPET II lesion segmentation with a sliding-window DynUNet ensemble.

Reads every PET in ``<input>/images/pet/`` (SUV; the CT in ``<input>/images/ct/`` is optional; or
the folders ``<input>/inputs.json`` names; or a folder per case of DICOM series, SUV from the
headers), writes one uint8 mask with the PET's exact geometry and file name (a DICOM-SEG for DICOM
input) to ``<output>/images/<output slug>/``, and evalutils' ``<output>/results.json``. A case with
a reader's clicks (``<input>/lesion-clicks.json``, autoPET IV) is refined by the interactive network
(docs/interactive.md). Under
torchrun each rank takes its share of the cases. The work is done by ``runner.folder`` and
``model.Predictor``.

Exit status: 0 all cases written; 1 some case failed or results.json could not be written (the
others are written, the failed ones are named); 2 the run could not start (arguments, weights, input
or output folder); 130 / 143 stopped by SIGINT / SIGTERM (finished masks are kept, no partial one is
left; a rerun goes on from there).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from common.errors import OutputError
from model.cropping import CROP_MODES, DEFAULT_CROP
from model.ensemble import VOTE_RULES
from model.network import DEFAULT_INTERACTIVE_WEIGHTS, add_weights_argument
from runner import folder
from runner.algorithm import build_algorithm
from runner.formats import FORMATS
from runner.interrupts import Interrupted, caches_in_tmp, interrupt_on_signals
from runner.watchdog import exit_with

#: A little under autoPET II's 10 minutes per case, leaving time to read, write and start up.
DEFAULT_TIME_BUDGET_S = 540.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, default=Path("/input"),
                   help="input root holding images/pet/ (and optionally images/ct/) (default: /input)")
    p.add_argument("--output", type=Path, default=Path("/output"),
                   help="output root; masks go to images/<output slug>/ (default: /output)")
    p.add_argument("--output-slug", default=folder.DEFAULT_OUTPUT_SLUG,
                   help=f"the phase's output interface (default: {folder.DEFAULT_OUTPUT_SLUG}, autoPET II/III)")
    add_weights_argument(p)
    p.add_argument("--interactive-weights", type=Path, default=DEFAULT_INTERACTIVE_WEIGHTS,
                   help="the network for cases with clicks (<input>/lesion-clicks.json, autoPET IV; or "
                        f"<input>/lesion-clicks/<case>.json), unless --weights reads clicks (default: "
                        f"{DEFAULT_INTERACTIVE_WEIGHTS})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the networks run; auto = cuda when available (default: auto)")
    p.add_argument("--output-format", choices=tuple(FORMATS), default=None,
                   help="mask format; default: the PET's own (DICOM series in: a DICOM-SEG referencing them)")
    p.add_argument("--shard", metavar="K/N", help="take the K-th of N shares of the cases (balanced by size), for "
                   "job arrays; results.shard-K-of-N.json (under torchrun the ranks split the cases by themselves)")
    p.add_argument("--overwrite", action="store_true", help="recompute cases whose mask exists (default: skip)")
    p.add_argument("--crop", choices=CROP_MODES, default=DEFAULT_CROP,
                   help="exact (default): the authors' scores inside the body's box (body + 10 mm), background "
                        "outside it; body: fewer windows, approximate (docs/performance.md); none: all windows, "
                        "the whole field of view as the authors ran it")
    p.add_argument("--tta", default="", metavar="AXES",
                   help="test-time augmentation: average each network's logits over flips of these RAS axes, "
                        "e.g. 012 for all 8 mirrorings (default: none, as the authors ran it)")
    p.add_argument("--time-budget", type=float, default=DEFAULT_TIME_BUDGET_S, metavar="SECONDS",
                   help="per case: after the first network the rest drop TTA, the exact crop, then networks as needed "
                        f"(logged, in results.json); 0 = no limit (default: {DEFAULT_TIME_BUDGET_S:g})")
    p.add_argument("--sw-batch-size", type=int, default=None, help="windows per network call (default: 8 cuda, 2 cpu)")
    p.add_argument("--vote", choices=VOTE_RULES, default=None,
                   help="the networks' majority (the authors') or mean softmax > 0.5 (default: the checkpoints')")
    p.add_argument("--case-timeout", type=float, default=None, metavar="SECONDS",
                   help="give up a case with no result after this long (a stuck read or loader) and go on "
                        "(default: no limit)")
    p.add_argument("--report", action="store_true", help="lesion report: per-lesion SUVmax/mean/peak, volume, TLG; "
                   "TMTV, Dmax; QA pictures, CSVs and an HTML page in <output>/lesion-report/")
    p.add_argument("--save-votes", action="store_true",
                   help="uint8 map of how many networks voted lesion, in <output>/votes/")
    p.add_argument("--save-probabilities", action="store_true",
                   help="float32 mean lesion probability, in <output>/probabilities/")
    p.add_argument("--suv-factors", metavar="SPEC|FILE",
                   help="SUV for PETs whose headers lack it (the mask needs none; the report's SUV values do): "
                        "'weight=72,dose=350MBq,injection=10:02,scan=11:04[,half_life=6586.2]' or 'scale=F' for every "
                        "case, or a .json/.csv per case id (docs/dicom.md)")
    p.add_argument("--verbose", action="store_true", help="debug log and full tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if not args.verbose:
        logging.getLogger("highdicom").setLevel(logging.WARNING)  # a line per copied DICOM module
    caches_in_tmp()
    algorithm = None
    try:
        with interrupt_on_signals():
            algorithm = build_algorithm(args)
            algorithm.process()
    except OutputError as exc:  # results.json (or the run's report) could not be written; the masks are kept
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"error: {exc.explain(algorithm.run if algorithm is not None else None)}", file=sys.stderr)
        return 128 + exc.signum
    except Exception as exc:  # noqa: BLE001 - every start-up failure ends in one clear line
        if args.verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if algorithm.run.failed else 0


if __name__ == "__main__":
    exit_with(main())
