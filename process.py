"""Grand-Challenge entry point: autoPET II lesion segmentation with a sliding-window DynUNet ensemble.

Reads every PET in ``<input>/images/pet/`` (SUV; the CT in ``<input>/images/ct/`` is optional; or
the folders ``<input>/inputs.json`` names; or a folder per case of DICOM series, SUV from the
headers), writes one uint8 mask with the PET's exact geometry and file name (a DICOM-SEG for DICOM
input) to ``<output>/images/<output slug>/``, and evalutils' ``<output>/results.json``. Under
torchrun each rank takes its share of the cases. The work is done by ``model.folder`` and
``model.Predictor``.

Exit status: 0 all cases written; 1 some case failed or results.json could not be written (the
others are written, the failed ones are named); 2 the run could not start (arguments, weights, input
or output folder); 130 / 143 stopped by SIGINT / SIGTERM (finished masks are kept, no partial one is
left; a rerun goes on from there).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from evalutils import SegmentationAlgorithm

from model import folder, sharding
from model.cropping import CROP_MODES, DEFAULT_CROP
from model.ensemble import VOTE_RULES
from model.io import OutputError
from model.network import add_weights_argument
from model.sliding_window import parse_axes

#: A little under autoPET II's 10 minutes per case, leaving time to read, write and start up.
DEFAULT_TIME_BUDGET_S = 540.0
log = logging.getLogger("process")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, default=Path("/input"),
                   help="input root holding images/pet/ (and optionally images/ct/) (default: /input)")
    p.add_argument("--output", type=Path, default=Path("/output"),
                   help="output root; masks go to images/<output slug>/ (default: /output)")
    p.add_argument("--output-slug", default=folder.DEFAULT_OUTPUT_SLUG,
                   help=f"the phase's output interface (default: {folder.DEFAULT_OUTPUT_SLUG}, autoPET II/III)")
    add_weights_argument(p)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the networks run; auto = cuda when available (default: auto)")
    p.add_argument("--output-format", choices=folder.OUTPUT_FORMATS, default=None,
                   help="mask format; default: the PET's own (DICOM series in: a DICOM-SEG referencing them)")
    p.add_argument("--shard", metavar="K/N", help="take the K-th of N shares of the cases (balanced by size), for "
                   "job arrays; results.shard-K-of-N.json (under torchrun the ranks split the cases by themselves)")
    p.add_argument("--overwrite", action="store_true", help="recompute cases whose mask exists (default: skip)")
    p.add_argument("--crop", choices=CROP_MODES, default=DEFAULT_CROP, help="exact (default): the authors' masks; "
                   "body: fewer windows, Dice 0.93-0.997 against exact at the paper's windowing; none: all windows")
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
    p.add_argument("--verbose", action="store_true", help="debug log and full tracebacks")
    return p


class LesionSegmentation(SegmentationAlgorithm):
    """evalutils' algorithm over ``model.folder.FolderRun``: each PET read once, no finished case lost."""

    def __init__(self, run: folder.FolderRun) -> None:
        super().__init__(input_path=run.input_root / folder.PET_SUBDIR, output_path=run.output_dir,
                         output_file=run.output_root / run.shard.results_name)
        self.run = run

    def load(self) -> None:  # evalutils would read and hash every image here, then again per case
        self.run.find()

    def process_cases(self, file_loader_key: str | None = None) -> None:
        self.run.process()

    def predict(self, *, input_image):  # evalutils' per-image API; the run reads, predicts and writes
        return self.run.predictor.predict(input_image)

    def save(self) -> None:
        self.run.save()


def build_algorithm(args: argparse.Namespace) -> LesionSegmentation:
    """Check folders and weights before any case is read: a bad run fails in seconds."""
    from model import Predictor

    extras = folder.Extras(args.report, args.save_votes, args.save_probabilities)
    folder.check_folders(args.input, args.output, args.output_slug, extras, args.output_format)
    shard, device = sharding.torchrun_shard(args.device)
    if args.shard and shard.ranks:
        raise ValueError("--shard is for job arrays; under torchrun the ranks share the cases by themselves")
    shard = sharding.parse_shard(args.shard) if args.shard else shard
    started = time.perf_counter()
    predictor = Predictor.from_weights(args.weights, device=device, crop=args.crop, vote=args.vote,
                                       sw_batch_size=args.sw_batch_size, tta_axes=parse_axes(args.tta),
                                       time_budget_s=args.time_budget or None)
    log.info("loaded %d network(s) '%s' from %s on %s in %.1f s", len(predictor.networks), predictor.config.name,
             args.weights, predictor.device, time.perf_counter() - started)
    if predictor.device.type == "cpu":
        from model.allocator import keep_large_allocations_on_heap

        keep_large_allocations_on_heap()  # window activations reuse heap pages instead of fresh maps
    return LesionSegmentation(folder.FolderRun(predictor, args.input, args.output, args.output_slug, args.overwrite,
                                               shard, extras=extras, case_timeout_s=args.case_timeout,
                                               output_format=args.output_format))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if not args.verbose:
        logging.getLogger("highdicom").setLevel(logging.WARNING)  # a line per copied DICOM module
    folder.caches_in_tmp()
    algorithm = None
    try:
        with folder.interrupt_on_signals():
            algorithm = build_algorithm(args)
            algorithm.process()
    except OutputError as exc:  # results.json (or the run's report) could not be written; the masks are kept
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except folder.Interrupted as exc:
        print(f"error: {exc.explain(algorithm.run if algorithm is not None else None)}", file=sys.stderr)
        return 128 + exc.signum
    except Exception as exc:  # noqa: BLE001 - every start-up failure ends in one clear line
        if args.verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if algorithm.run.failed else 0


def exit_with(code: int) -> None:
    """``sys.exit``, or ``os._exit`` when a case given up by ``--case-timeout`` is still stuck in ITK:
    a normal exit would run C++ destructors under it and abort (exit 134) instead of giving ``code``."""
    if any(thread.is_alive() for thread in folder.ABANDONED):
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    exit_with(main())
