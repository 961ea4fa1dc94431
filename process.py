"""Grand-Challenge entry point: autoPET II lesion segmentation with a sliding-window DynUNet ensemble.

Reads every PET in ``<input>/images/pet/`` (SUV; the CT in ``<input>/images/ct/`` is optional and only
checked), writes one uint8 mask with the PET's exact geometry and file name to
``<output>/images/automated-petct-lesion-segmentation/``, and evalutils' ``<output>/results.json``.

Exit status: 0 all cases written; 1 some case failed (the others are written, the failed ones are
named); 2 the run could not start (arguments, weights, input or output folder); 130 / 143 stopped by
SIGINT / SIGTERM (finished masks are kept, no partial one is left; a rerun goes on from there).
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
from tqdm import tqdm

from model import folder, sharding
from model.cropping import CROP_MODES, DEFAULT_CROP
from model.ensemble import VOTE_RULES
from model.network import add_weights_argument

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
    p.add_argument("--shard", metavar="K/N", help="take the K-th of N shares of the cases (balanced by size), for "
                   "job arrays; results.shard-K-of-N.json (under torchrun the ranks split the cases by themselves)")
    p.add_argument("--overwrite", action="store_true", help="recompute cases whose mask exists (default: skip)")
    p.add_argument("--crop", choices=CROP_MODES, default=DEFAULT_CROP,
                   help="exact: the windows that touch the body, giving the uncropped pipeline's masks (the "
                        "authors' result); body: a quarter to a half of the windows, approximate (Dice 0.93-0.997 "
                        "against exact at the paper's windowing, docs/performance.md); none: the "
                        f"whole field of view (default: {DEFAULT_CROP})")
    p.add_argument("--tta", default="", metavar="AXES",
                   help="test-time augmentation: average each network's logits over flips of these RAS axes, "
                        "e.g. 012 for all 8 mirrorings (default: none, as the authors ran it)")
    p.add_argument("--time-budget", type=float, default=DEFAULT_TIME_BUDGET_S, metavar="SECONDS",
                   help="seconds per case; once the first network has run, the others drop TTA, then the exact "
                        "crop, then networks, as far as needed to end inside it; the log and results.json say "
                        f"what was done; 0 = no limit (default: {DEFAULT_TIME_BUDGET_S:g})")
    p.add_argument("--sw-batch-size", type=int, default=None, help="windows per network call (default: 8 cuda, 2 cpu)")
    p.add_argument("--vote", choices=VOTE_RULES, default=None,
                   help="majority of the networks' argmax (the authors') or mean softmax above 0.5 "
                        "(default: the checkpoints' config, majority for the shipped weights)")
    p.add_argument("--verbose", action="store_true", help="debug log and full tracebacks")
    return p


def _axes(text: str) -> tuple[int, ...]:
    if any(c not in "012" for c in text):
        raise ValueError(f"--tta takes axes among 0, 1, 2 (e.g. 012), got {text!r}")
    return tuple(sorted({int(c) for c in text}))


class LesionSegmentation(SegmentationAlgorithm):
    """evalutils' algorithm over ``model.folder``: each PET read once, no finished case ever lost."""

    def __init__(self, predictor, input_root: Path, output_root: Path, overwrite: bool = False,
                 output_slug: str = folder.DEFAULT_OUTPUT_SLUG, shard: sharding.Shard = sharding.WHOLE) -> None:
        super().__init__(input_path=input_root / folder.PET_SUBDIR, output_file=output_root / shard.results_name,
                         output_path=output_root / folder.output_subdir(output_slug))
        self.predictor, self.input_root, self.overwrite = predictor, input_root, overwrite
        self.output_root, self.shard, self.all_cases = output_root, shard, []
        self.failed: list[str] = []
        self.written, self.current = 0, None

    def load(self) -> None:  # evalutils would read and hash every image here, then again per case
        self.all_cases = folder.find_cases(self.input_root)
        self.cases = sharding.shard_cases(self.all_cases, self.shard)
        if self.shard.count > 1:
            log.info("shard %d of %d: %d of %d case(s)", self.shard.index + 1, self.shard.count, len(self.cases),
                     len(self.all_cases))

    def process_cases(self, file_loader_key: str | None = None) -> None:
        self._case_results = []
        log.info("%d case(s) in %s", len(self.cases), self._input_path)
        for case in tqdm(self.cases, desc="cases", unit="case", disable=len(self.cases) < 2):
            self.current = case.pet.name  # left set when interrupted: the message names the case
            result, failed = folder.run_case(self.predictor, case, self._output_path, self.overwrite)
            self.current = None
            self._case_results.append(result)
            self.failed += [case.pet.name] if failed else []
            self.written += "inference" in result
        if self.failed:
            log.error("%d of %d case(s) failed: %s", len(self.failed), len(self.cases), ", ".join(self.failed))

    def predict(self, *, input_image):  # evalutils' per-image API; folder.run_case reads, predicts and writes
        return self.predictor.predict(input_image)

    def save(self) -> None:
        sharding.write_results(self._case_results, self.output_root, self.shard, self.all_cases)


def build_algorithm(args: argparse.Namespace) -> LesionSegmentation:
    """Check folders and weights before any case is read: a bad run fails in seconds."""
    from model import Predictor

    folder.check_folders(args.input, args.output, args.output_slug)
    shard, device = sharding.torchrun_shard(args.device)
    if args.shard and shard.ranks:
        raise ValueError("--shard is for job arrays; under torchrun the ranks share the cases by themselves")
    shard = sharding.parse_shard(args.shard) if args.shard else shard
    started = time.perf_counter()
    predictor = Predictor.from_weights(args.weights, device=device, crop=args.crop, vote=args.vote,
                                       sw_batch_size=args.sw_batch_size, tta_axes=_axes(args.tta),
                                       time_budget_s=args.time_budget or None)
    log.info("loaded %d network(s) '%s' from %s on %s in %.1f s", len(predictor.networks), predictor.config.name,
             args.weights, predictor.device, time.perf_counter() - started)
    if predictor.device.type == "cpu":
        from model.allocator import keep_large_allocations_on_heap

        keep_large_allocations_on_heap()  # window activations reuse heap pages instead of fresh maps
    return LesionSegmentation(predictor, args.input, args.output, args.overwrite, args.output_slug, shard)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))  # every cache in /tmp, the only writable place but /output
    for var, sub in (("XDG_CACHE_HOME", "cache"), ("TORCH_HOME", "torch"), ("MPLCONFIGDIR", "matplotlib")):
        os.environ.setdefault(var, str(tmp / sub))
    algorithm = None
    try:
        with folder.interrupt_on_signals():
            algorithm = build_algorithm(args)
            algorithm.process()
    except folder.Interrupted as exc:
        where = f" while segmenting {algorithm.current}" if algorithm is not None and algorithm.current else ""
        done = f"; {algorithm.written} mask(s) written this run" if algorithm is not None else ""
        print(f"error: {exc}{where}{done}; no partial mask left, rerun to go on", file=sys.stderr)
        return 128 + exc.signum
    except Exception as exc:  # noqa: BLE001 - every start-up failure ends in one clear line
        if args.verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if algorithm.failed else 0


if __name__ == "__main__":
    sys.exit(main())
