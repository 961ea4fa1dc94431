"""A folder of PETs in, a folder of masks out: the case loop behind ``process.py``.

What a run over many scans needs and the pipeline does not: checks before any compute (input and
output folders, temp files of a killed run), pairing each PET with its CT, skipping finished
cases, one broken case never stopping the others, and one ``results.json`` entry per case in
evalutils' format. Front-ends (the Grand-Challenge entry point, later cohort and DICOM ones)
call this.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.atomic import check_writable, remove_stale_temps
from common.cases import Case
from common.errors import InputError, OutputError
from common.images import ignored_entries, image_stem, list_images
from lesion_report.writer import REPORT_SUBDIR, CaseEntry, write_run_report
from model.predictor import InputImageError, Predictor

from .case import ExtraOutputs, segment_file, write_report_from_files
from .clicks_file import CLICKS_FOLDER, CLICKS_JSON, clicks_for
from .formats import FORMATS, earlier_mask, format_of, is_dicom_case, mask_name
from .inputs import pair_cases
from .sharding import WHOLE, Shard, shard_cases, write_results
from .suv import SuvFactors, SuvTable
from .watchdog import CaseTimeout, within

log = logging.getLogger(__name__)

#: The challenge's layout below the input and output roots (autoPET II and III).
PET_SUBDIR = Path("images") / "pet"
CT_SUBDIR = Path("images") / "ct"
#: The output interface's slug: autoPET II and III; autoPET IV writes images/tumor-lesion-segmentation.
DEFAULT_OUTPUT_SLUG = "automated-petct-lesion-segmentation"
#: Grand-Challenge's description of a job's inputs (interface slugs -> files), where it gives one.
INPUTS_JSON = "inputs.json"
#: Where ``--save-votes`` and ``--save-probabilities`` write, beside the interface folder.
VOTES_SUBDIR = Path("votes")
PROBABILITY_SUBDIR = Path("probabilities")


def output_subdir(slug: str = DEFAULT_OUTPUT_SLUG) -> Path:
    """``images/<slug>``: where Grand-Challenge collects an image output interface's file."""
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug):
        raise InputError(f"output slug {slug!r}: lower-case letters, digits and single hyphens only")
    return Path("images") / slug




@dataclass(frozen=True)
class InputFolders:
    """Where a job's PETs and CTs are; ``description`` is the inputs.json that named them (None: the folders).

    ``dicom``: the input holds a folder per case of DICOM series (``pet`` is the input root).
    """

    pet: Path
    ct: Path | None
    description: Path | None = None
    dicom: bool = False






def map_name(case: Case) -> str:
    """The name of a case's vote or probability map: its PET's, or ``<case>.mha`` for DICOM."""
    return f"{case.case_id}.mha" if is_dicom_case(case) else case.pet.name


def _slug_tokens(entry: dict[str, Any]) -> set[str]:
    return set(str(entry.get("interface", {}).get("slug", "")).lower().split("-"))


def input_folders(input_root: Path) -> InputFolders:
    """``<input>/images/pet`` and ``images/ct``, or what ``<input>/inputs.json`` names for them.

    In ``inputs.json`` the image inputs are those whose interface's kind is an image; the PET is
    the one at ``images/pet`` or else the one whose slug has a ``pet`` part (the CT likewise).
    """
    description = input_root / INPUTS_JSON
    if not description.is_file():
        if not (input_root / PET_SUBDIR).exists() and input_root.is_dir() and dicom_case_folders(input_root):
            return InputFolders(input_root, None, dicom=True)
        return InputFolders(input_root / PET_SUBDIR, input_root / CT_SUBDIR)
    try:
        entries = json.loads(description.read_text())
        images = [e for e in entries if str(e["interface"].get("kind", "image")).lower() == "image"]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(f"{description}: not a Grand-Challenge input description ({exc})") from None

    def pick(subdir: Path, token: str) -> Path | None:
        by_path = [e for e in images if e["interface"].get("relative_path") == str(subdir)]
        by_slug = [e for e in images if token in _slug_tokens(e) and e["interface"].get("relative_path")]
        chosen = (by_path or by_slug)[:1]
        return input_root / chosen[0]["interface"]["relative_path"] if chosen else None

    pet = pick(PET_SUBDIR, "pet")
    if pet is None:
        slugs = ", ".join(str(e.get("interface", {}).get("slug")) for e in entries if isinstance(e, dict))
        raise InputError(f"{description}: no PET image among the inputs (slugs: {slugs or 'none'})")
    return InputFolders(pet, pick(CT_SUBDIR, "ct"), description)


def dicom_case_folders(input_root: Path) -> list[Path]:
    """The case folders of a DICOM input: each subfolder holding DICOM files, or the root itself."""
    from .dicom import has_dicom, is_dicom_file

    if any(p.is_file() and is_dicom_file(p) for p in input_root.iterdir()):
        return [input_root]
    return [d for d in sorted(input_root.iterdir()) if d.is_dir() and not d.name.startswith(".") and has_dicom(d)]


def check_folders(input_root: Path, output_root: Path, output_slug: str = DEFAULT_OUTPUT_SLUG,
                  extras: Extras | None = None, output_format: str | None = None) -> None:
    """Fail in seconds, before weights or scans are read, when the run cannot work."""
    if not input_root.is_dir():
        raise InputError(f"{input_root}: input folder not found")
    folders = input_folders(input_root)
    if output_format is not None and FORMATS[output_format].needs_dicom and not folders.dicom:
        raise InputError(f"{input_root}: --output-format {output_format} needs DICOM input (a folder of DICOM series "
                         "per case)")
    pet_dir = folders.pet
    if not folders.dicom:  # a DICOM input was recognised by its case folders already
        if not pet_dir.is_dir():
            raise InputError(f"{pet_dir}: no PET folder (expected <input>/images/pet/*.mha, or a folder of DICOM "
                             "series per case)")
        if not list_images(pet_dir):
            raise InputError(f"{pet_dir}: no PET images (.mha, .mhd, .nii.gz, .nii, .nrrd) in folder")
    output_dir = output_root / output_subdir(output_slug)
    extra_dirs = (extras or NO_EXTRAS).folders(output_root)
    for folder in (output_dir, *extra_dirs):
        check_writable(folder)
    stale = remove_stale_temps(output_root, "results.json")
    for folder in (output_dir, *extra_dirs):
        stale += remove_stale_temps(folder)
    if stale:
        log.warning("removed %d temp file(s) left by an interrupted run: %s", len(stale), ", ".join(stale))


def find_cases(folders: InputFolders) -> list[Case]:
    """The PETs of ``folders.pet`` with their CTs; other entries are named in one warning.

    Only the folder itself is listed (not subfolders, which could hold an earlier run's masks).
    """
    if folders.description is not None:
        log.info("inputs found through %s: PET %s, CT %s", folders.description, folders.pet, folders.ct)
    if folders.dicom:
        cases = [Case(d.name if d != folders.pet else d.resolve().name, d) for d in dicom_case_folders(folders.pet)]
        log.info("DICOM input: %d case folder(s) in %s", len(cases), folders.pet)
        return cases
    pet_dir = folders.pet
    pets = list_images(pet_dir)
    if not pets:
        raise InputError(f"{pet_dir}: no PET images in folder")
    ignored = [p.name + ("/" if p.is_dir() else "") for p in ignored_entries(pet_dir)]
    if ignored:
        more = f" and {len(ignored) - 10} more" if len(ignored) > 10 else ""
        log.warning("%s: ignored %d entr%s that %s not PET image(s): %s%s", pet_dir, len(ignored),
                    "y" if len(ignored) == 1 else "ies", "is" if len(ignored) == 1 else "are",
                    ", ".join(ignored[:10]), more)
    cases, warnings = pair_cases(pets, folders.ct)
    for message in warnings:
        log.warning(message)
    return cases


def attach_clicks(cases: list[Case], input_root: Path) -> list[Case]:
    """Each case with its clicks file, where it has one (``runner/clicks_file.py``); a root
    ``lesion-clicks.json`` beside several cases is refused: it cannot say whose clicks it holds."""
    from dataclasses import replace

    if (input_root / CLICKS_JSON).exists() and len(cases) > 1:
        raise InputError(f"{input_root / CLICKS_JSON}: one clicks file for {len(cases)} cases; give each case its "
                         f"own as {input_root / CLICKS_FOLDER}/<case>.json")
    return [replace(case, clicks=clicks_for(input_root, case.case_id, len(cases) == 1)) for case in cases]


def has_clicks(input_root: Path) -> bool:
    """Whether the input gives clicks for any case (the interactive network is then loaded up front)."""
    folder = input_root / CLICKS_FOLDER
    return (input_root / CLICKS_JSON).exists() or (folder.is_dir() and any(folder.glob("*.json")))


@dataclass(frozen=True)
class Extras:
    """The optional outputs a run writes beside the masks (``--report``, ``--save-votes``,
    ``--save-probabilities``), each in a folder of its own under the output root."""

    report: bool = False
    votes: bool = False
    probabilities: bool = False

    def for_case(self, output_root: Path, case: Case) -> ExtraOutputs:
        name = map_name(case)
        return ExtraOutputs(
            votes=output_root / VOTES_SUBDIR / name if self.votes else None,
            probability=output_root / PROBABILITY_SUBDIR / name if self.probabilities else None,
            report=output_root / REPORT_SUBDIR / f"{image_stem(Path(name))}.json" if self.report else None)

    def folders(self, output_root: Path) -> list[Path]:
        asked = ((self.report, REPORT_SUBDIR), (self.votes, VOTES_SUBDIR), (self.probabilities, PROBABILITY_SUBDIR))
        return [output_root / sub for on, sub in asked if on]


NO_EXTRAS = Extras()








def _one_line_error(exc: Exception, case: Case) -> str:
    expected = isinstance(exc, (InputError, InputImageError, OutputError, CaseTimeout))
    message = str(exc) if expected else f"{case.pet}: {type(exc).__name__}: {exc}"
    return " ".join(message.split())  # one line, whatever ITK or torch put in it




def run_case(predictor: Predictor, case: Case, output_dir: Path, overwrite: bool = False,
             extras: ExtraOutputs | None = None, timeout_s: float | None = None,
             output_format: str | None = None, interactive: Predictor | None = None,
             suv: SuvFactors | None = None) -> tuple[dict[str, Any], bool]:
    """Segment one case into ``output_dir`` unless its mask (and the asked-for extras) are there.

    A finished mask whose lesion report alone is missing gets the report from the files, without
    inference. Returns its results.json entry and whether it failed; a bad input is logged in one
    line naming the file and recorded in ``error_messages``.
    """
    target, extras = output_dir / mask_name(case, output_format), extras or ExtraOutputs()
    if case.clicks is not None and (extras.votes or extras.probability):  # one network's mask: no ensemble maps
        log.warning("%s: no vote or probability map for a case refined with clicks", case.pet.name)
        extras = ExtraOutputs(report=extras.report)
    fmt = format_of(target)
    result: dict[str, Any] = {"outputs": [dict(type=fmt.results_type, filename=target.name)],
                              "inputs": [dict(type="dicom_folder" if is_dicom_case(case) else "metaio_image",
                                              filename=case.pet.name)], "error_messages": []}
    earlier = None if overwrite else earlier_mask(fmt, target)
    if earlier is not None:
        kept, earlier_fmt = dict(result), fmt
        if earlier != target:  # the SEG failed in an earlier run; its mask went to the .mha
            earlier_fmt = format_of(earlier)
            kept["outputs"] = [dict(type=earlier_fmt.results_type, filename=earlier.name)]
            kept["dicom_seg_not_written"] = f"{target}: not written in an earlier run; the mask is in {earlier.name}"
        problem = earlier_fmt.problem(earlier, case)
        missing = extras.missing()
        if problem is None and not missing:
            log.info("%s: mask exists, skipped (use --overwrite to recompute)", case.pet.name)
            return kept, False
        if problem is None and set(missing) <= {extras.report, extras.picture}:
            try:
                summary = write_report_from_files(case.pet, earlier, extras, suv)
            except Exception as exc:  # noqa: BLE001 - one broken case must not stop the others
                message = _one_line_error(exc, case)
                log.error("%s", message)
                return {**result, "error_messages": [message]}, True
            log.info("%s: mask exists; lesion report made from it (%d lesion(s))", case.pet.name, summary["lesions"])
            return {**kept, "lesion_report": summary}, False
        log.warning("%s; recomputing it", problem or f"{earlier}: mask exists but not {', '.join(map(str, missing))}")
    try:
        report = within(timeout_s, lambda cancelled: segment_file(predictor, case.pet, case.ct, target, extras,
                                                                  cancelled, case.clicks, interactive, suv),
                        str(case.pet))
    except Exception as exc:  # noqa: BLE001 - one broken case must not stop the others
        message = _one_line_error(exc, case)
        log.error("%s", message)
        log.debug("traceback", exc_info=True)
        return {**result, "outputs": [], "error_messages": [message]}, True
    for message in report.warnings:
        log.warning("%s", message)
    log.info("%s: %s", case.pet.name, report.summary())
    result["inference"] = {"crop": predictor.crop, "steps": report.steps, "time_budget": report.budget,
                           "out_of_memory_fallbacks": report.fallbacks, "seconds": report.seconds}
    if report.suv_origin:
        result["suv_source"] = report.suv_origin
    if report.suv_missing:
        result["values_not_suv"] = report.suv_missing
    if report.seg_failure:  # the mask went out as .mha beside the SEG's name
        result["outputs"] = [dict(type=format_of(report.mask).results_type, filename=report.mask.name)]
        result["dicom_seg_not_written"] = report.seg_failure
    if report.lesions is not None:
        result["lesion_report"] = report.lesions
    return result, False


@dataclass
class FolderRun:
    """One run over an input folder: its cases (this shard's share) and what became of them so far.

    ``current`` names the case in progress (an interrupt's message uses it), ``written`` and
    ``failed`` give the exit status; ``results`` are the results.json entries.
    """

    predictor: Predictor
    input_root: Path
    output_root: Path
    output_slug: str = DEFAULT_OUTPUT_SLUG
    overwrite: bool = False
    shard: Shard = WHOLE
    all_cases: list[Case] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    written: int = 0
    current: str | None = None
    folders: InputFolders | None = None
    extras: Extras = NO_EXTRAS
    case_timeout_s: float | None = None
    output_format: str | None = None
    #: The network that refines cases with clicks (None: ``predictor``, where it reads clicks itself).
    interactive: Predictor | None = None
    #: Whether clicks files are read at all (False: no network reads them; the cases run without).
    use_clicks: bool = True
    #: ``--suv-factors``: SUV ingredients the PETs' headers lack, for every case or per case id.
    suv_factors: SuvTable | None = None

    @property
    def output_dir(self) -> Path:
        return self.output_root / output_subdir(self.output_slug)

    def find(self) -> None:
        self.folders = input_folders(self.input_root)
        cases = find_cases(self.folders)
        self.all_cases = attach_clicks(cases, self.input_root) if self.use_clicks else cases
        self.cases = shard_cases(self.all_cases, self.shard)
        if self.shard.count > 1:
            log.info("shard %d of %d: %d of %d case(s)", self.shard.index + 1, self.shard.count, len(self.cases),
                     len(self.all_cases))

    def process(self) -> None:
        log.info("%d case(s) in %s", len(self.cases), self.folders.pet)
        for case in tqdm(self.cases, desc="cases", unit="case", disable=len(self.cases) < 2):
            self.current = case.pet.name  # left set when interrupted: the message names the case
            result, failed = run_case(self.predictor, case, self.output_dir, self.overwrite,
                                      self.extras.for_case(self.output_root, case), self.case_timeout_s,
                                      self.output_format, self.interactive,
                                      self.suv_factors.for_case(case.case_id) if self.suv_factors else None)
            self.current = None
            self.results.append(result)
            self.failed += [case.pet.name] if failed else []
            self.written += "inference" in result
        if self.failed:
            log.error("%d of %d case(s) failed: %s", len(self.failed), len(self.cases), ", ".join(self.failed))

    def save(self) -> None:
        write_results(self.results, self.output_root, self.shard, self.all_cases)
        if self.extras.report and (not self.shard.ranks or self.shard.index == 0):
            self.save_run_report()

    def save_run_report(self) -> None:
        """The run's CSVs and page over every case of the run (all shards' finished reports)."""
        results = self.results
        if self.shard.ranks:  # rank 0 lists the other ranks' errors too, from the merged results.json
            results = json.loads((self.output_root / "results.json").read_text())
        errors = {r["inputs"][0]["filename"]: tuple(r["error_messages"]) for r in results}
        entries = []
        for case in self.all_cases:
            report = self.extras.for_case(self.output_root, case).report
            entries.append(CaseEntry(image_stem(case.pet), report, errors.get(case.pet.name, ())))
        written = write_run_report(self.output_root / REPORT_SUBDIR, entries)
        log.info("lesion report: %s", ", ".join(str(p) for p in written))
