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
import signal
import sys
import time
import traceback
from pathlib import Path

import SimpleITK as sitk
from evalutils import SegmentationAlgorithm
from evalutils.exceptions import FileLoaderError
from evalutils.io import ImageLoader

from model.cropping import CROP_MODES, DEFAULT_CROP

DEFAULT_INPUT = Path("/input")
DEFAULT_OUTPUT = Path("/output")
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights"
OUTPUT_SUBDIR = Path("images") / "automated-petct-lesion-segmentation"
PET_SUBDIR = Path("images") / "pet"
#: A little under autoPET II's 10 minutes per case, leaving time to read, write and start up.
DEFAULT_TIME_BUDGET_S = 540.0

CT_SUBDIR = Path("images") / "ct"

log = logging.getLogger("process")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT,
                        help="input root holding images/pet/ (and optionally images/ct/) (default: /input)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="output root; masks go to images/automated-petct-lesion-segmentation/ "
                             "(default: /output)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                        help="a checkpoint file, or a folder whose checkpoints form the ensemble "
                             "(this project's fold*.pt with manifest.json, or the authors' 0.pt..4.pt) "
                             f"(default: {DEFAULT_WEIGHTS})")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the networks run; auto = cuda when available (default: auto)")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute cases whose mask already exists (default: skip them)")
    parser.add_argument("--crop", choices=CROP_MODES, default=DEFAULT_CROP,
                        help="exact: the windows that touch the body, giving the uncropped pipeline's masks "
                             "(the authors' result); body: fast and approximate, fewer windows around the body "
                             "(Dice 0.99+ against exact at the paper's settings, see docs/performance.md); "
                             f"none: the whole field of view (default: {DEFAULT_CROP})")
    parser.add_argument("--tta", default="", metavar="AXES",
                        help="test-time augmentation: average each network's logits over flips of these RAS "
                             "axes, e.g. 012 for all 8 mirrorings (default: none, as the authors ran it)")
    parser.add_argument("--time-budget", type=float, default=DEFAULT_TIME_BUDGET_S, metavar="SECONDS",
                        help="seconds per case; once the first network has run, the others drop TTA, then the "
                             "exact crop, then networks, as far as needed to end inside it; the log and "
                             f"results.json say what was done; 0 = no limit (default: {DEFAULT_TIME_BUDGET_S:g}, "
                             "under the challenge's 10 minutes)")
    parser.add_argument("--sw-batch-size", type=int, default=None,
                        help="windows per network call (default: 8 on cuda, 2 on cpu)")
    parser.add_argument("--vote", choices=("majority", "soft"), default=None,
                        help="ensemble rule: majority of the networks' argmax (the authors') or mean softmax "
                             "above 0.5 (default: the checkpoints' config, majority for the shipped weights)")
    parser.add_argument("--verbose", action="store_true", help="debug log and full tracebacks")
    return parser.parse_args(argv)


def _setup_environment() -> None:
    """Keep every cache in /tmp: the container's only writable place besides /output."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    for var, sub in (("XDG_CACHE_HOME", "cache"), ("TORCH_HOME", "torch"), ("MPLCONFIGDIR", "matplotlib")):
        os.environ.setdefault(var, str(tmp / sub))


class Interrupted(BaseException):
    """SIGTERM or SIGINT: a BaseException, so that no per-case ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


def _on_signal(signum: int, frame) -> None:
    # A second signal kills at once (the default action), e.g. while a temp file is removed.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _setup_environment()
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    algorithm = None
    try:
        algorithm = build_algorithm(args)
        algorithm.process()
    except Interrupted as exc:
        where = f" while segmenting {algorithm.current}" if algorithm is not None and algorithm.current else ""
        done = f"; {algorithm.written} mask(s) written this run" if algorithm is not None else ""
        print(f"error: {exc}{where}{done}; no partial mask left, rerun to go on", file=sys.stderr)
        return 128 + exc.signum
    except Exception as exc:  # noqa: BLE001 - every start-up failure ends in one clear line
        return _fatal(exc, args.verbose)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if algorithm.failed else 0


def _fatal(exc: BaseException, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _axes(text: str) -> tuple[int, ...]:
    if any(c not in "012" for c in text):
        raise ValueError(f"--tta takes axes among 0, 1, 2 (e.g. 012), got {text!r}")
    return tuple(sorted({int(c) for c in text}))


def build_algorithm(args: argparse.Namespace):
    """Check folders and weights before any case is read: a bad run fails in seconds."""
    from model.io import InputError, check_writable, list_images, remove_stale_temps

    pet_dir = args.input / PET_SUBDIR
    if not args.input.is_dir():
        raise InputError(f"{args.input}: input folder not found")
    if not pet_dir.is_dir():
        raise InputError(f"{pet_dir}: no PET folder (expected <input>/images/pet/*.mha)")
    if not list_images(pet_dir):
        raise InputError(f"{pet_dir}: no PET images (.mha, .mhd, .nii.gz, .nii, .nrrd) in folder")
    output_dir = args.output / OUTPUT_SUBDIR
    check_writable(output_dir)
    stale = remove_stale_temps(output_dir) + remove_stale_temps(args.output, "results.json")
    if stale:
        log.warning("removed %d temp file(s) left by an interrupted run: %s", len(stale), ", ".join(stale))

    from model import Predictor

    started = time.perf_counter()
    predictor = Predictor.from_weights(args.weights, device=args.device, crop=args.crop,
                                       sw_batch_size=args.sw_batch_size, vote=args.vote, tta_axes=_axes(args.tta),
                                       time_budget_s=args.time_budget or None)
    log.info("loaded %d network(s) '%s' from %s on %s in %.1f s", len(predictor.networks),
             predictor.config.name, args.weights, predictor.device, time.perf_counter() - started)
    if predictor.device.type == "cpu":
        from model.allocator import keep_large_allocations_on_heap

        if keep_large_allocations_on_heap():  # window activations reuse heap pages instead of fresh maps
            log.debug("glibc: large allocations kept on the heap")
    return make_algorithm(predictor, args.input, args.output, overwrite=args.overwrite)


def make_algorithm(predictor, input_root: Path, output_root: Path, overwrite: bool = False):
    return LesionSegmentation(predictor, input_root / PET_SUBDIR, input_root / CT_SUBDIR,
                              output_root / OUTPUT_SUBDIR, output_root / "results.json", overwrite=overwrite)


class NameOnlyLoader(ImageLoader):
    """evalutils loader that finds cases by file name without reading them.

    evalutils' default SimpleITKLoader reads and hashes every image at discovery and again in
    process_case: two reads of a 200 MB PET. Here discovery costs nothing and each PET is read
    once, with errors that name the file. (``LesionSegmentation.load`` lists the folder itself;
    this loader is what evalutils' API asks for.)
    """

    def load(self, *, fname: Path) -> list[dict]:
        fname = Path(fname)
        from model.io import is_image_file

        if not is_image_file(fname):
            raise FileLoaderError(f"{fname}: not an image file")
        return [{"hash": str(fname), "path": fname}]

    @staticmethod
    def load_image(fname: Path) -> sitk.Image:
        from model.io import read_image

        return read_image(Path(fname), "PET")

    @staticmethod
    def hash_image(image: sitk.Image) -> int:
        return hash((image.GetSize(), image.GetSpacing(), image.GetOrigin()))


class LesionSegmentation(SegmentationAlgorithm):
    """evalutils' SegmentationAlgorithm, reading each PET once and never losing a finished case."""

    def __init__(self, predictor, pet_dir: Path, ct_dir: Path, output_dir: Path, results_file: Path,
                 overwrite: bool = False) -> None:
        super().__init__(input_path=pet_dir, output_path=output_dir, output_file=results_file,
                         file_loaders={"input_image": NameOnlyLoader()})
        self.predictor = predictor
        self.ct_dir = ct_dir
        self.overwrite = overwrite
        self.failed: list[str] = []
        self.written = 0
        self.current: str | None = None
        self._ct_for: dict[str, Path | None] = {}

    def load(self) -> None:
        """The PET folder's images, not its subfolders (evalutils globs ``**/*``, which would take
        a nested output folder's masks for PETs); anything else in it is named in one warning."""
        from pandas import DataFrame

        from model.io import ignored_entries, list_images, pair_cases

        pets = list_images(self._input_path)
        if not pets:
            raise FileLoaderError(f"{self._input_path}: no PET images in folder")
        ignored = [p.name + ("/" if p.is_dir() else "") for p in ignored_entries(self._input_path)]
        if ignored:
            more = f" and {len(ignored) - 10} more" if len(ignored) > 10 else ""
            log.warning("%s: ignored %d entr%s that %s not PET image(s): %s%s", self._input_path, len(ignored),
                        "y" if len(ignored) == 1 else "ies", "is" if len(ignored) == 1 else "are",
                        ", ".join(ignored[:10]), more)
        self._cases = {self._index_key: DataFrame([{"hash": str(p), "path": p} for p in pets])}
        cases, warnings = pair_cases(pets, self.ct_dir)
        for message in warnings:
            log.warning(message)
        self._ct_for = {c.pet.name: c.ct for c in cases}

    def process_cases(self, file_loader_key: str | None = None) -> None:
        from tqdm import tqdm

        cases = self._cases[self._index_key]
        self._case_results = []
        log.info("%d case(s) in %s", len(cases), self._input_path)
        for _, case in tqdm(list(cases.iterrows()), desc="cases", unit="case", disable=len(cases) < 2):
            self._case_results.append(self.process_case(idx=None, case=case))
        if self.failed:
            log.error("%d of %d case(s) failed: %s", len(self.failed), len(cases), ", ".join(self.failed))

    def process_case(self, *, idx, case) -> dict:
        from model.case import segment_file
        from model.io import existing_mask_problem

        pet_path = Path(case["path"])
        target = self._output_path / pet_path.name
        result = {"outputs": [dict(type="metaio_image", filename=target.name)],
                  "inputs": [dict(type="metaio_image", filename=pet_path.name)], "error_messages": []}
        if (target.exists() or target.is_symlink()) and not self.overwrite:
            problem = existing_mask_problem(target, pet_path)
            if problem is None:
                log.info("%s: mask exists, skipped (use --overwrite to recompute)", pet_path.name)
                return result
            log.warning("%s; recomputing it", problem)
        self.current = pet_path.name
        try:
            report = segment_file(self.predictor, pet_path, self._ct_for.get(pet_path.name), target)
        except Exception as exc:  # noqa: BLE001 - one broken case must not stop the others
            message = str(exc) if _expected(exc) else f"{pet_path}: {type(exc).__name__}: {exc}"
            message = " ".join(message.split())  # one line, whatever ITK or torch put in it
            log.error("%s", message)
            log.debug("traceback", exc_info=True)
            self.failed.append(pet_path.name)
            self.current = None
            result["outputs"] = []
            result["error_messages"] = [message]
            return result
        self.current = None  # left set when interrupted: the message names the case
        self.written += 1
        result["inference"] = {"crop": self.predictor.crop, "steps": report.steps, "time_budget": report.budget}
        for message in report.warnings:
            log.warning("%s", message)
        log.info("%s: %s", pet_path.name, report.summary())
        return result

    def predict(self, *, input_image):
        return self.predictor.predict(input_image)

    def save(self) -> None:
        import json

        from model.io import write_text_atomic

        write_text_atomic(json.dumps(self._case_results, indent=2), Path(self._output_file))


def _expected(exc: BaseException) -> bool:
    from model.io import InputError
    from model.predictor import InputImageError

    return isinstance(exc, (InputError, InputImageError))


if __name__ == "__main__":
    sys.exit(main())
