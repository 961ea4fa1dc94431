"""The Grand-Challenge algorithm: evalutils' ``SegmentationAlgorithm`` over a ``FolderRun``.

``process.py`` parses the arguments and calls ``build_algorithm``; this module turns them into a
predictor, a shard and a run over the input folder.
"""

from __future__ import annotations

import argparse
import logging
import time

from evalutils import SegmentationAlgorithm

from common.errors import InputError
from model.sliding_window import parse_axes

from .folder import PET_SUBDIR, Extras, FolderRun, check_folders, has_clicks
from .sharding import parse_shard, torchrun_shard
from .suv import SuvTable

log = logging.getLogger("process")


class LesionSegmentation(SegmentationAlgorithm):
    """evalutils' algorithm over ``runner.FolderRun``: each PET read once, no finished case lost."""

    def __init__(self, run: FolderRun) -> None:
        super().__init__(input_path=run.input_root / PET_SUBDIR, output_path=run.output_dir,
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
    """The run ``process.py``'s arguments describe (``process.build_parser``), with folders and weights
    checked before any case is read: a bad run fails in seconds."""
    from model import Predictor

    extras = Extras(args.report, args.save_votes, args.save_probabilities)
    check_folders(args.input, args.output, args.output_slug, extras, args.output_format)
    shard, device = torchrun_shard(args.device)
    if args.shard and shard.ranks:
        raise ValueError("--shard is for job arrays; under torchrun the ranks share the cases by themselves")
    shard = parse_shard(args.shard) if args.shard else shard
    started = time.perf_counter()
    predictor = Predictor.from_weights(args.weights, device=device, crop=args.crop, vote=args.vote,
                                       sw_batch_size=args.sw_batch_size, tta_axes=parse_axes(args.tta),
                                       time_budget_s=args.time_budget or None)
    log.info("loaded %d network(s) '%s' from %s on %s in %.1f s", len(predictor.networks), predictor.config.name,
             args.weights, predictor.device, time.perf_counter() - started)
    interactive = None
    if has_clicks(args.input) and not predictor.config.interactive:  # loaded now: a bad one fails in seconds
        path = args.interactive_weights
        if path.exists():
            interactive = Predictor.from_weights(path, device=device, crop=args.crop,
                                                 sw_batch_size=args.sw_batch_size)
            if not interactive.config.interactive:
                raise InputError(f"{path}: '{interactive.config.name}' reads no clicks; not interactive weights")
            log.info("interactive network '%s' from %s for the cases with clicks", interactive.config.name, path)
        else:
            log.warning("%s: clicks given, but no interactive weights at %s (--interactive-weights); those cases "
                        "are segmented without their clicks", args.input, path)
    if predictor.device.type == "cpu":
        from .allocator import keep_large_allocations_on_heap

        keep_large_allocations_on_heap()  # window activations reuse heap pages instead of fresh maps
    return LesionSegmentation(FolderRun(predictor, args.input, args.output, args.output_slug, args.overwrite,
                                        shard, extras=extras, case_timeout_s=args.case_timeout,
                                        output_format=args.output_format, interactive=interactive,
                                        use_clicks=interactive is not None or predictor.config.interactive,
                                        suv_factors=SuvTable.parse(args.suv_factors) if args.suv_factors else None))
