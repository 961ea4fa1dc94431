"""python -m training.phantoms: write phantoms as a dataset in one of the layouts of training/layouts.py.

Why one command instead of a shell loop per case: the training scripts need "make seeds 0-119,
in parallel, only those missing, and never leave half a case behind if killed". Each case is written
into a hidden staging folder inside --out and then renamed into place (same file system, so each
rename is atomic and no file is ever half-written). A new TCIA patient or study folder moves in as
a whole; files that share a folder with other cases (nnU-Net, GC) move one by one, the PET last, so
a kill between two renames leaves a case that readers report as incomplete and --skip-existing
remakes. Leftover staging folders of a killed run are removed on the next run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from training import layouts

from .grid import AUTOPET_SPACING
from .phantom import make_phantom
from .ranges import PROFILES

STAGING_PREFIX, STAGING_SUFFIX = ".phantom-", ".tmp"


@dataclass(frozen=True)
class Options:
    """What every case of one command shares."""

    out: Path
    layout: str
    shape: tuple[int, int, int] | None
    spacing: tuple[float, float, float]
    direction: tuple[float, ...] | None
    lesions: bool | None
    channel_order: str
    ranges: str = "standard"
    organs: bool = False


@dataclass(frozen=True)
class PhantomJob:
    """One phantom to make: its seed and the ids it is written under (the written case is a common.cases.Case)."""

    seed: int
    case_id: str
    patient_id: str


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


def parse_seeds(items: Sequence[str]) -> list[int]:
    """Seeds from "0-119", "50000-50019", "1,5,9", "0-3,10" or several such words; order kept, no repeats."""
    seeds: list[int] = []
    for word in items:
        for part in word.split(","):
            part = part.strip()
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            try:
                first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
            except ValueError:
                raise ValueError(f"not a seed or a range a-b of seeds: {part!r}") from None
            if last < first:
                raise ValueError(f"empty seed range {part!r} (the end is below the start)")
            seeds.extend(range(first, last + 1))
    if not seeds:
        raise ValueError("no seeds given")
    seen: set[int] = set()
    for s in seeds:
        if s in seen:
            raise ValueError(f"seed {s} is given twice (two cases would write the same files)")
        seen.add(s)
    return seeds


def plan_cases(seeds: Sequence[int], studies_per_patient: int) -> list[PhantomJob]:
    """Ids per seed: consecutive groups of K seeds are the studies 0..K-1 of one patient named after its first."""
    k = max(1, studies_per_patient)
    cases = []
    for i, seed in enumerate(seeds):
        patient = f"PHANTOM{seeds[(i // k) * k]:05d}"
        cases.append(PhantomJob(seed, f"{patient}_{i % k}", patient))
    return cases


def case_files(case: PhantomJob, layout: str, channel_order: str, organs: bool = False) -> list[Path]:
    """Files of a case relative to --out, in the order they are moved in (label, CT, PET: PET defines a case).

    Mirrors the names layouts.write_case uses; _write_case checks that they still agree. ``organs``
    (TCIA only): the organ map too, before the PET.
    """
    if layout == "tcia":
        study = Path(case.patient_id) / case.case_id[len(case.patient_id) + 1 :]
        extra = [study / layouts.TCIA_ORGANS] if organs else []
        return [study / layouts.TCIA_LABEL, study / layouts.TCIA_CT, *extra, study / layouts.TCIA_PET]
    if layout == "nnunet":
        pet_ch = layouts.CHANNEL_ORDERS[channel_order].index("PET")
        end = layouts.NNUNET_ENDING
        images = Path("imagesTr")
        return [
            Path("labelsTr") / f"{case.case_id}{end}",
            images / f"{case.case_id}_{1 - pet_ch:04d}{end}",
            images / f"{case.case_id}_{pet_ch:04d}{end}",
        ]
    if layout == "gc":
        name = f"{case.case_id}.mha"
        return [Path(layouts.GC_LABEL_DIR) / name, Path(layouts.GC_CT_DIR) / name, Path(layouts.GC_PET_DIR) / name]
    raise ValueError(f"unknown layout {layout!r}")


def is_complete(case: PhantomJob, opts: Options) -> bool:
    return all((opts.out / rel).is_file() for rel in case_files(case, opts.layout, opts.channel_order, opts.organs))


# --------------------------------------------------------------------------------------------
# Writing one case
# --------------------------------------------------------------------------------------------


def _move_in(staging: Path, out: Path, rel: Path) -> None:
    """Rename a staged file into --out; if a folder above it is new, rename that whole folder instead."""
    if not (staging / rel).exists():
        return  # already moved with its folder
    for depth in range(1, len(rel.parts)):
        part = Path(*rel.parts[:depth])
        if not (out / part).exists():
            os.replace(staging / part, out / part)
            return
    os.replace(staging / rel, out / rel)


def make_case(case: PhantomJob, opts: Options) -> str:
    """Make, write and move in one case; returns its progress line. Runs in a worker process."""
    t0 = time.perf_counter()
    ph = make_phantom(case.seed, shape=opts.shape, spacing=opts.spacing, direction=opts.direction, lesions=opts.lesions,
                      ranges=opts.ranges)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{case.case_id}.", suffix=STAGING_SUFFIX, dir=opts.out))
    try:
        rec = layouts.write_case(
            ph,
            staging,
            opts.layout,
            case_id=case.case_id,
            patient_id=case.patient_id,
            channel_order=opts.channel_order,
        )
        written = [p.relative_to(staging) for p in (rec.label, rec.ct, rec.pet)]
        if opts.organs:
            sitk.WriteImage(ph.organs, str(rec.label.parent / layouts.TCIA_ORGANS), useCompression=True)
            written.insert(2, (rec.label.parent / layouts.TCIA_ORGANS).relative_to(staging))
        expected = case_files(case, opts.layout, opts.channel_order, opts.organs)
        if written != expected:
            raise RuntimeError(f"layouts.write_case wrote {written}, expected {expected}; update case_files")
        for rel in expected:
            _move_in(staging, opts.out, rel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return (
        f"{case.case_id}: {ph.pet.GetSize()} lesions={len(ph.info['lesions'])} "
        f"({time.perf_counter() - t0:.1f} s) -> {(opts.out / expected[-1]).parent}"
    )


RANGES_MARKER = ".phantom-ranges"


def claim_ranges(out: Path, ranges: str) -> None:
    """Record the profile a dataset folder is made with; refuse to add another profile's cases to it.

    Why: case ids name seeds, not profiles, so a ``wide`` PHANTOM00007_0 written into a ``standard``
    folder (or skipped there by --skip-existing) would silently mix two datasets."""
    marker = out / RANGES_MARKER
    existing = marker.read_text().strip() if marker.is_file() else None
    if existing is None and any(not entry.name.startswith(".") for entry in out.iterdir()):
        existing = "standard"  # a folder without the marker holds standard phantoms (as before profiles)
    if existing is not None and existing != ranges:
        raise ValueError(f"{out} holds phantoms made with --ranges {existing}, not {ranges}; use another --out")
    if ranges != "standard":  # standard folders stay as they always were
        marker.write_text(ranges + "\n")


def remove_stale_staging(out: Path) -> None:
    """Staging folders left by a killed run (never a complete case: those were moved in)."""
    for p in out.glob(f"{STAGING_PREFIX}*{STAGING_SUFFIX}"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def make_cases(cases: Sequence[PhantomJob], opts: Options, workers: int) -> None:
    """Make the cases, in a pool of `workers` processes when more than one; the first failure stops all."""
    if workers <= 1 or len(cases) <= 1:
        for case in cases:
            print(make_case(case, opts), flush=True)
        return
    # spawn, not fork: a forked copy of a process with ITK/OpenMP threads can deadlock
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(cases)), mp_context=ctx) as pool:
        pending = {pool.submit(make_case, case, opts) for case in cases}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                if fut.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise fut.exception()
                print(fut.result(), flush=True)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _flip_direction(axes: Sequence[str]) -> tuple[float, ...] | None:
    if not axes:
        return None
    d = np.eye(3)
    for a in axes:
        d[:, "xyz".index(a)] *= -1
    return tuple(d.ravel())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.phantoms",
        description="Synthetic whole-body FDG-PET/CT phantoms with known lesion labels, written as a dataset.",
    )
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--cases", type=int, help="number of cases (default 4); case i uses seed --seed + i")
    p.add_argument("--seed", type=int, help="first seed with --cases (default 0)")
    p.add_argument("--seeds", nargs="+", metavar="SEEDS", help='instead of --cases/--seed: "0-119", "1,5,9", ...')
    p.add_argument("--workers", type=int, default=1, help="cases made side by side in a process pool")
    p.add_argument("--skip-existing", action="store_true", help="do not remake cases whose files all exist")
    p.add_argument("--layout", choices=["tcia", "nnunet", "gc"], default="tcia")
    p.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"))
    p.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"), default=AUTOPET_SPACING)
    p.add_argument(
        "--flip-axes",
        nargs="*",
        choices=["x", "y", "z"],
        default=[],
        help="flip these image axes (direction cosines -1) to exercise orientation handling",
    )
    p.add_argument("--lesions", choices=["auto", "yes", "no"], default="auto")
    p.add_argument("--ranges", choices=sorted(PROFILES), default="standard",
                   help="the profile values are drawn from: standard (historical), wide (the demo's training "
                        "data), shifted (outside wide: a held-out set); docs/phantoms.md#ranges")
    p.add_argument("--channel-order", choices=["ct_pet", "pet_ct"], default="ct_pet", help="nnU-Net only")
    p.add_argument("--organs", action="store_true",
                   help="TCIA layout: also write the organ map ORGANS.nii.gz beside SEG.nii.gz (classes: "
                        "training.phantoms.canvas.ORGAN_CLASSES; for organ-supervised training)")
    p.add_argument(
        "--studies-per-patient",
        type=int,
        default=1,
        help="group consecutive cases under one patient id (tests patient-level splits)",
    )
    return p


def _seeds(p: argparse.ArgumentParser, args: argparse.Namespace) -> list[int]:
    if args.seeds is None:
        first = 0 if args.seed is None else args.seed
        return list(range(first, first + (4 if args.cases is None else args.cases)))
    if args.cases is not None or args.seed is not None:
        p.error("--seeds replaces --cases/--seed; give one or the other")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        p.error(f"--seeds: {exc}")
    if min(seeds) < 0:
        p.error("--seeds: seeds must be >= 0")
    return seeds


def main(argv: Sequence[str] | None = None) -> int:
    """Write phantoms in one of the dataset layouts (see training/layouts.py)."""
    p = _parser()
    args = p.parse_args(argv)
    seeds = _seeds(p, args)
    if args.workers < 1:
        p.error("--workers must be >= 1")
    opts = Options(
        out=args.out,
        layout=args.layout,
        shape=tuple(args.shape) if args.shape else None,
        spacing=tuple(args.spacing),
        direction=_flip_direction(args.flip_axes),
        lesions={"auto": None, "yes": True, "no": False}[args.lesions],
        channel_order=args.channel_order,
        ranges=args.ranges,
        organs=args.organs,
    )
    if args.organs and args.layout != "tcia":
        p.error("--organs writes the organ map in the TCIA layout only")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        claim_ranges(args.out, args.ranges)
    except ValueError as exc:
        p.error(str(exc))
    remove_stale_staging(args.out)
    cases = plan_cases(seeds, args.studies_per_patient)
    todo = [c for c in cases if not (args.skip_existing and is_complete(c, opts))]
    if len(todo) < len(cases):
        print(f"{len(cases) - len(todo)} of {len(cases)} cases exist already, skipped", flush=True)
    make_cases(todo, opts, args.workers)
    if args.layout == "nnunet":
        layouts.write_nnunet_dataset_json(args.out, channel_order=args.channel_order)
    return 0
