"""One case, file to file: read the PET once, check the CT, predict, write the mask atomically."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from common.atomic import write_image_atomic
from common.errors import InputError
from common.geometry import same_geometry
from common.images import read_header, read_image
from model.predictor import NETWORKS_KEY, Predictor

from .clicks_file import read_clicks
from .formats import MaskFormat, PetInput, format_of, write_mask
from .inputs import is_dicom_folder

if TYPE_CHECKING:
    import SimpleITK as sitk

    from .suv import SuvFactors


@dataclass
class CaseReport:
    pet: Path
    mask: Path
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    windows: int = 0
    windows_uncropped: int = 0
    lesion_voxels: int = 0
    #: The networks' groups as scored (crop mode, TTA, windows, seconds) and the time budget's decision.
    steps: list[dict] = field(default_factory=list)
    budget: dict | None = None
    #: Steps down after running out of memory (model/sliding_window.py ``out_of_memory_attempts``).
    fallbacks: list[str] = field(default_factory=list)
    #: The lesion report's per-case summary, when one was asked for.
    lesions: dict | None = None
    #: Why the PET's values are not SUV (None: they are, as far as can be told).
    suv_missing: str | None = None
    #: Where the SUV came from (``PetInput.suv_origin``).
    suv_origin: str | None = None
    #: Why the DICOM-SEG could not be written (the mask then went to ``mask``, an .mha beside it).
    seg_failure: str | None = None

    def summary(self) -> str:
        total = sum(self.seconds.values())
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        return (f"{self.lesion_voxels} lesion voxels, {self.windows}/{self.windows_uncropped} windows, "
                f"{total:.1f} s ({parts})")


@dataclass(frozen=True)
class ExtraOutputs:
    """Where one case's optional outputs go; None = not asked for.

    votes: uint8 count of networks that voted lesion; probability: float32 mean lesion probability;
    report: the lesion report's JSON (its QA picture beside it, same stem, ``.png``).
    """

    votes: Path | None = None
    probability: Path | None = None
    report: Path | None = None

    @property
    def picture(self) -> Path | None:
        return None if self.report is None else self.report.with_suffix(".png")

    def missing(self) -> list[Path]:
        """The asked-for files that do not exist (yet)."""
        asked = (self.votes, self.probability, self.report, self.picture)
        return [p for p in asked if p is not None and not p.exists()]


def segment_file(predictor: Predictor, pet_path: Path, ct_path: Path | None, mask_path: Path,
                 extras: ExtraOutputs | None = None, cancelled: threading.Event | None = None,
                 clicks_path: Path | None = None, interactive: Predictor | None = None,
                 suv: SuvFactors | None = None) -> CaseReport:
    """Segment one PET file into ``mask_path`` (and ``extras``); raise InputError naming the file on bad input.

    The mask is written after the vote and probability maps and before the report: a case whose
    mask exists has its maps, and a missing report is made from the files (``write_report_from_files``).
    With ``clicks_path`` the mask is the interactive network's refinement (``interactive``, or
    ``predictor`` where it reads clicks itself).
    """
    import numpy as np
    import SimpleITK as sitk

    report, extras = CaseReport(pet_path, mask_path), extras or ExtraOutputs()
    fmt = format_of(mask_path)
    started = time.perf_counter()
    source = read_pet(pet_path, suv)
    pet = source.image
    report.suv_origin = source.suv_origin
    if suv is not None and source.suv_origin == "DICOM headers":
        report.warnings.append(f"{pet_path}: --suv-factors not used; the DICOM headers give the SUV")
    report.suv_missing = suv_missing = not_suv(source)
    if suv_missing:
        report.warnings.append(f"{pet_path}: values are not SUV ({suv_missing}); segmented from the stored "
                               "values, the report leaves SUVmax, SUVmean, SUVpeak and TLG empty")
    ct = None
    if ct_path is not None:
        ct, warning = _read_ct(ct_path, pet)
        if warning:
            report.warnings.append(warning)
    report.seconds["read"] = time.perf_counter() - started

    if clicks_path is not None:
        return _refine_file(interactive or predictor, source, ct, clicks_path, mask_path, fmt, extras, report,
                            cancelled)
    with predictor.lock:  # its last_info is this prediction's until released
        prediction = predictor.predict_all(pet, ct, votes=extras.votes is not None or extras.report is not None,
                                           probability=extras.probability is not None)
        mask, info = prediction.mask, predictor.last_info
    if info.nonfinite_voxels:
        report.warnings.append(f"{pet_path}: {info.nonfinite_voxels} NaN/Inf voxel(s) treated as 0")
    report.seconds.update(info.seconds)
    report.windows, report.windows_uncropped = info.windows, info.windows_uncropped
    report.steps, report.budget, report.fallbacks = info.steps, info.budget, list(info.fallbacks)
    report.warnings += [f"{pet_path}: {event}" for event in info.fallbacks]
    if info.budget is not None and info.budget["action"] != "as asked":
        report.warnings.append(f"{pet_path}: time budget {info.budget['budget_s']:g} s: {info.budget['action']} "
                               f"(first network {info.budget['first_network_s']:g} s, whole ensemble as asked "
                               f"projected at {info.budget['projected_full_s']:g} s)")
    report.lesion_voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))

    _stop_if_abandoned(cancelled, report)
    started = time.perf_counter()
    if extras.votes is not None:
        write_image_atomic(prediction.votes, extras.votes)
    if extras.probability is not None:
        write_image_atomic(prediction.probability, extras.probability)
    if extras.votes is not None or extras.probability is not None:
        report.seconds["write_maps"] = time.perf_counter() - started
    return _write_mask_and_report(report, source, mask, mask_path, fmt, extras, prediction.votes, prediction.networks)


def _stop_if_abandoned(cancelled: threading.Event | None, report: CaseReport) -> None:
    """Given up by the watchdog (``--case-timeout``): an abandoned case writes nothing."""
    if cancelled is not None and cancelled.is_set():
        raise RuntimeError(f"{report.pet}: abandoned after --case-timeout; nothing written")


def _write_mask_and_report(report: CaseReport, source: PetInput, mask: sitk.Image, mask_path: Path,
                           fmt: MaskFormat, extras: ExtraOutputs, votes: sitk.Image | None,
                           networks: int | None) -> CaseReport:
    """The mask in its format, then the lesion report where asked (after the mask: a missing report is
    made from the files later)."""
    started = time.perf_counter()
    report.mask, failure = write_mask(fmt, mask, source, mask_path)
    if failure:
        report.warnings.append(failure)
        report.seg_failure = failure
    report.seconds["write"] = time.perf_counter() - started
    if extras.report is not None:
        from lesion_report.writer import write_case_report

        started = time.perf_counter()
        report.lesions = write_case_report(source.image, mask, extras.report, votes, networks, report.warnings,
                                           report.suv_missing)
        report.seconds["report"] = time.perf_counter() - started
    return report


def _refine_file(predictor: Predictor, source: PetInput, ct: sitk.Image | None, clicks_path: Path, mask_path: Path,
                 fmt: MaskFormat, extras: ExtraOutputs, report: CaseReport, cancelled: threading.Event | None
                 ) -> CaseReport:
    """The interactive network's mask for a reader's clicks, written as ``segment_file`` writes masks."""
    import numpy as np
    import SimpleITK as sitk

    if not predictor.config.interactive:
        raise InputError(f"{clicks_path}: clicks given, but '{predictor.config.name}' reads none; pass interactive "
                         "weights (--interactive-weights, or --weights)")
    started = time.perf_counter()
    clicks = read_clicks(clicks_path, source.image)
    with predictor.lock:
        refined = predictor.refine(source.image, clicks, ct=ct)
    report.seconds["refine"] = time.perf_counter() - started
    if refined.state.volume.nonfinite_voxels:
        report.warnings.append(f"{clicks_path.parent}: {refined.state.volume.nonfinite_voxels} NaN/Inf voxel(s) "
                               "treated as 0")
    report.windows = report.windows_uncropped = refined.windows_total
    report.steps = [{"networks": list(range(len(predictor.networks))), "clicks": len(clicks),
                     "tumor_clicks": len(clicks.tumor), "background_clicks": len(clicks.background),
                     "windows": refined.windows_run, "seconds": round(refined.seconds, 3)}]
    report.lesion_voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(refined.mask)))
    for asked in (extras.votes, extras.probability):
        if asked is not None:
            report.warnings.append(f"{asked}: not written; an interactive refinement has one network's mask only")
    _stop_if_abandoned(cancelled, report)
    return _write_mask_and_report(report, source, refined.mask, mask_path, fmt, extras, None, None)


#: A body whose median value exceeds this is not in SUV (soft tissue is about 1 g/ml; Bq/ml gives thousands).
SUV_BODY_MEDIAN_LIMIT = 50.0


def not_suv(source: PetInput) -> str | None:
    """Why the PET's values are not SUV: the DICOM headers' reason, or for an image file a body (voxels
    above 1 % of the maximum, every 4th voxel per axis) whose median lies far outside SUV's range."""
    import numpy as np
    import SimpleITK as sitk

    if source.series is not None:
        return source.series.suv_missing
    if source.suv_missing is not None or source.suv_origin is not None:  # a sidecar or --suv-factors decided
        return source.suv_missing
    sample = np.asarray(sitk.GetArrayViewFromImage(source.image)[::4, ::4, ::4], dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    top = float(sample.max()) if sample.size else 0.0
    body = sample[sample > 0.01 * top] if top > 0 else sample[:0]
    median = float(np.median(body)) if body.size else 0.0
    if median > SUV_BODY_MEDIAN_LIMIT:
        return (f"the body's median value is {median:.4g}, far above SUV's range (Bq/ml?); give --suv-factors "
                "for the report's SUV quantities")
    return None


def read_pet(pet_path: Path, factors: SuvFactors | None = None) -> PetInput:
    """The PET of a case in SUV where it can be had: an image file (as given, or converted by its BIDS /
    dcm2niix sidecar and ``factors``), or a case folder of DICOM series (SUV from the PET series'
    headers; ``factors`` fill in for headers an anonymiser removed). See ``runner.suv``."""
    from dataclasses import replace

    from .suv import sidecar_factors, sidecar_of

    if not is_dicom_folder(pet_path):
        image = read_image(pet_path, "PET")
        sidecar = sidecar_of(pet_path)
        chosen = sidecar_factors(sidecar).merged(factors) if sidecar is not None else factors
        if chosen is None:
            return PetInput(image)
        try:
            return PetInput(_scaled(image, chosen.factor()), suv_origin=chosen.origin)
        except InputError as exc:
            return PetInput(image, suv_missing=str(exc))
    from .dicom import header_suv_factors, pet_series, read_pet_series

    try:
        series = read_pet_series(pet_series(pet_path))
    except InputError as exc:  # the case folder first, then the series and the tag
        message = str(exc)
        raise InputError(message if message.startswith(str(pet_path)) else f"{pet_path}: {message}") from None
    if series.suv_missing is None:
        return PetInput(series.image, series, suv_origin="DICOM headers")
    if factors is not None:  # what the headers still give, the user's values over it
        chosen = header_suv_factors(series.slices[0], series.slices, series.series).merged(factors)
        try:
            scaled = _scaled(series.image, chosen.factor())
        except InputError as exc:
            series = replace(series, suv_missing=f"{series.suv_missing}; {exc}")
        else:
            return PetInput(scaled, replace(series, image=scaled, suv_missing=None), suv_origin=chosen.origin)
    return PetInput(series.image, series)


def _scaled(image: sitk.Image, factor: float) -> sitk.Image:
    """``image`` x ``factor`` as float32, geometry kept."""
    import SimpleITK as sitk

    return sitk.Cast(image, sitk.sitkFloat32) * float(factor)


def write_report_from_files(pet_path: Path, mask_path: Path, extras: ExtraOutputs,
                            factors: SuvFactors | None = None) -> dict:
    """The lesion report of a case whose mask (and maybe vote map) an earlier run wrote: no inference.

    The vote share comes from the vote map and the network count its header records (MetaImage
    keeps it, NIfTI does not); without them the share is left out.
    """
    from lesion_report.writer import write_case_report

    fmt = format_of(mask_path)
    if is_dicom_folder(pet_path) or fmt.read is None:
        raise InputError(f"{pet_path}: the report of a DICOM case is made with its segmentation; rerun with "
                         "--overwrite")
    source = read_pet(pet_path, factors)
    pet = source.image
    mask = fmt.read(mask_path)
    votes, networks = None, None
    if extras.votes is not None and extras.votes.exists():
        votes = read_image(extras.votes, "vote map")
        if votes.HasMetaDataKey(NETWORKS_KEY):
            networks = int(votes.GetMetaData(NETWORKS_KEY))
        else:
            votes = None
    return write_case_report(pet, mask, extras.report, votes, networks, [], not_suv(source))


def _read_ct(ct_path: Path, pet: sitk.Image) -> tuple[sitk.Image | None, str | None]:
    """The CT if it is usable on the PET's grid, else None and why: the model needs only the PET."""
    try:
        header = read_header(ct_path, "CT")
        if not same_geometry(header, pet):
            return None, (f"{ct_path}: CT is not on the PET's grid (size {header.GetSize()} vs {pet.GetSize()}); "
                          "ignored, the model uses the PET only")
        return read_image(ct_path, "CT"), None
    except Exception as exc:  # noqa: BLE001 - the CT is optional: warn and go on with the PET
        reason = str(exc).removeprefix(f"{ct_path}: ")
        return None, f"{ct_path}: CT ignored, the model uses the PET only ({reason})"
