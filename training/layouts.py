"""Readers and writers for the three dataset layouts this project meets, behind one record type.

- "tcia":   autoPET's NIfTI release: <root>/<patient>/<study>/SUV.nii.gz, CTres.nii.gz, SEG.nii.gz
            (PET.nii.gz / CT.nii.gz also exist there but are not used: SUV and CTres share one grid).
- "nnunet": nnU-Net raw dataset: imagesTr/<case>_0000.nii.gz, _0001.nii.gz, labelsTr/<case>.nii.gz.
            Channel order differs between autoPET III ("ct_pet": 0000 = CT) and the autoPET I/II
            baselines ("pet_ct": 0000 = PET), so it is checked on read from the pixel values.
- "gc":     Grand-Challenge algorithm input: images/pet/<uuid>.mha, images/ct/<uuid>.mha, no labels.

Why so strict: a silently skipped case or a swapped PET/CT pair trains a model that looks fine and
is wrong. Every problem raises LayoutError naming the offending path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from common.atomic import write_json_atomic
from common.cases import Case
from common.errors import InputError
from common.geometry import same_geometry
from common.images import image_stem, is_image_file, read_header

TCIA_PET, TCIA_CT, TCIA_LABEL = "SUV.nii.gz", "CTres.nii.gz", "SEG.nii.gz"
#: The phantoms' organ map beside the label (``training.phantoms --organs``; not part of autoPET).
TCIA_ORGANS = "ORGANS.nii.gz"
NNUNET_ENDING = ".nii.gz"
GC_PET_DIR, GC_CT_DIR, GC_LABEL_DIR = "images/pet", "images/ct", "labels"
CHANNEL_ORDERS = {"ct_pet": ("CT", "PET"), "pet_ct": ("PET", "CT")}


class LayoutError(ValueError):
    """A dataset layout problem (missing file, grid mismatch, swapped channels); names the path."""


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _header(path: Path) -> sitk.ImageFileReader:
    try:
        return read_header(path, "image", dims=3)
    except InputError as exc:
        raise LayoutError(str(exc)) from None


def _grid_text(g: sitk.ImageFileReader) -> str:
    return (
        f"size {tuple(g.GetSize())}, spacing {tuple(round(s, 4) for s in g.GetSpacing())}, "
        f"origin {tuple(round(o, 2) for o in g.GetOrigin())}, direction {tuple(round(d, 3) for d in g.GetDirection())}"
    )


def _mid_slab(reader: sitk.ImageFileReader, slices: int = 3) -> np.ndarray:
    """A few slices through the middle of the volume: enough for the channel check, far cheaper than all."""
    size = list(reader.GetSize())
    n = min(slices, size[2])
    reader.SetExtractIndex([0, 0, max(0, size[2] // 2 - n // 2)])
    reader.SetExtractSize([size[0], size[1], n])
    try:
        arr = sitk.GetArrayFromImage(reader.Execute())
    finally:
        reader.SetExtractSize([0, 0, 0])
    return arr


def _looks_like_pet(a: np.ndarray) -> bool:
    """SUV: non-negative and mostly small (air 0, soft tissue ~0.3-3)."""
    return float(a.min()) >= -1.0 and float(np.median(a)) < 5.0 and float(np.mean(a < -100)) < 1e-3


def _looks_like_ct(a: np.ndarray) -> bool:
    """HU: air around the body / lungs near -1000, so many strongly negative values."""
    return float(a.min()) < -500 and float(np.mean(a < -300)) > 0.02


def check_pet_ct_arrays(pet: np.ndarray, ct: np.ndarray, where: str = "") -> None:
    """Raise LayoutError unless `pet` looks like SUV and `ct` like HU (catches swapped channels).

    Callers that load the arrays anyway (data loaders) can use this for free on every case.
    """
    pet_ok, ct_ok = _looks_like_pet(pet), _looks_like_ct(ct)
    if pet_ok and ct_ok:
        return
    if _looks_like_ct(pet) and _looks_like_pet(ct):
        raise LayoutError(
            f"{where}: PET and CT look swapped (the 'PET' has HU-like values down to "
            f"{float(pet.min()):.0f}, the 'CT' looks like SUV); check the channel order"
        )
    if not pet_ok:
        raise LayoutError(
            f"{where}: does not look like a PET in SUV (min {float(pet.min()):.2f}, "
            f"median {float(np.median(pet)):.2f}); expected >= 0 and mostly small"
        )
    raise LayoutError(
        f"{where}: does not look like a CT in HU (min {float(ct.min()):.0f}, "
        f"{100 * float(np.mean(ct < -300)):.1f}% below -300 HU); expected air near -1000"
    )


def validate_record(record: Case, check_channels: bool = True) -> None:
    """Check files exist and share one grid; with check_channels also check PET/CT pixel values.

    Header reads are cheap; the channel check reads only a mid-volume slab of PET and CT.
    """
    pet_r = _header(record.pet)
    ct_r = None
    if record.ct is not None:
        ct_r = _header(record.ct)
        if not same_geometry(pet_r, ct_r):
            raise LayoutError(
                f"{record.ct}: CT grid ({_grid_text(ct_r)}) differs from the PET grid "
                f"({_grid_text(pet_r)}) of {record.pet}"
            )
    if record.label is not None:
        lab_r = _header(record.label)
        if not same_geometry(pet_r, lab_r):
            raise LayoutError(
                f"{record.label}: label grid ({_grid_text(lab_r)}) differs from the PET "
                f"grid ({_grid_text(pet_r)}) of {record.pet}"
            )
    if check_channels and ct_r is not None:
        check_pet_ct_arrays(_mid_slab(pet_r), _mid_slab(ct_r), where=f"{record.pet} / {record.ct}")


def _validate_all(records: list[Case], check_channels: bool | int) -> None:
    n_check = len(records) if check_channels is True else int(check_channels)
    for i, rec in enumerate(records):
        validate_record(rec, check_channels=i < n_check)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.\-]+", "_", name).strip("_")


def default_patient_of(case_id: str) -> str:
    """nnU-Net-style ids '<patient>_<study>': the patient is everything before the last underscore."""
    return case_id.rsplit("_", 1)[0] if "_" in case_id else case_id


def _check_unique(records: list[Case], root: Path) -> None:
    seen: dict[str, Case] = {}
    for r in records:
        if r.case_id in seen:
            raise LayoutError(
                f"{root}: case id {r.case_id!r} is not unique ({seen[r.case_id].pet} and {r.pet})"
            )
        seen[r.case_id] = r


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def read_tcia(root: str | Path, validate: bool = True, check_channels: bool | int = True) -> list[Case]:
    """autoPET NIfTI release. case_id = '<patient>_<study>' (study name made filesystem-safe)."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"not a directory: {root}")
    records = []
    for pdir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        studies = sorted(s for s in pdir.iterdir() if s.is_dir() and not s.name.startswith("."))
        if not studies:
            raise LayoutError(f"patient folder without studies: {pdir}")
        for sdir in studies:
            pet = sdir / TCIA_PET
            if not pet.is_file():
                raise LayoutError(f"missing file: {pet}")
            ct = sdir / TCIA_CT
            if not ct.is_file():
                raise LayoutError(f"missing file: {ct}")
            label, organs = sdir / TCIA_LABEL, sdir / TCIA_ORGANS
            records.append(
                Case(f"{pdir.name}_{_safe(sdir.name)}", pet, ct, label if label.is_file() else None, pdir.name,
                     organs=organs if organs.is_file() else None)
            )
    if not records:
        raise LayoutError(f"no studies found under {root} (expected <patient>/<study>/{TCIA_PET})")
    if any(r.label is None for r in records) and any(r.label is not None for r in records):
        missing = next(r for r in records if r.label is None)
        raise LayoutError(f"missing file: {missing.pet.parent / TCIA_LABEL} (other studies have labels)")
    _check_unique(records, root)
    if validate:
        _validate_all(records, check_channels)
    return records


def _nnunet_channels_from_json(root: Path) -> tuple[str, ...] | None:
    path = root / "dataset.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LayoutError(f"{path}: not valid JSON ({exc})") from exc
    names = meta.get("channel_names") or meta.get("modality")
    if not names:
        return None
    return tuple(str(names[k]).upper() for k in sorted(names, key=int))


def read_nnunet(
    root: str | Path,
    channel_order: str = "ct_pet",
    patient_of: Callable[[str], str] | None = None,
    validate: bool = True,
    check_channels: bool | int = True,
    images: str = "imagesTr",
    labels: str = "labelsTr",
) -> list[Case]:
    """nnU-Net raw dataset. channel_order "ct_pet" (autoPET III) or "pet_ct" (autoPET I/II baseline).

    patient_of maps a case id to its patient (default: text before the last underscore), so that
    splits keep a patient's studies together. A labels folder, when present, must cover every case.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {sorted(CHANNEL_ORDERS)}, got {channel_order!r}")
    root = Path(root)
    img_dir, lab_dir = root / images, root / labels
    if not img_dir.is_dir():
        raise LayoutError(f"missing folder: {img_dir}")
    declared = _nnunet_channels_from_json(root)
    wanted = CHANNEL_ORDERS[channel_order]
    if declared is not None and tuple(c[:3] for c in declared) != tuple(c[:3] for c in wanted):
        raise LayoutError(
            f"{root / 'dataset.json'}: channel_names {declared} contradict channel_order "
            f"{channel_order!r} ({wanted})"
        )
    pet_ch = wanted.index("PET")
    pat = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(NNUNET_ENDING) + "$")
    channels: dict[str, set[int]] = {}
    for f in img_dir.iterdir():
        m = pat.match(f.name)
        if m:
            channels.setdefault(m["case"], set()).add(int(m["ch"]))
    if not channels:
        raise LayoutError(f"no images found in {img_dir} (expected <case>_0000{NNUNET_ENDING})")
    patient_of = patient_of or default_patient_of
    records = []
    for case in sorted(channels):
        for ch in (0, 1):
            path = img_dir / f"{case}_{ch:04d}{NNUNET_ENDING}"
            if ch not in channels[case]:
                raise LayoutError(f"missing file: {path}")
        extra = sorted(channels[case] - {0, 1})
        if extra:
            raise LayoutError(
                f"{img_dir / f'{case}_{extra[0]:04d}{NNUNET_ENDING}'}: unexpected channel "
                f"(PET/CT datasets have exactly 2)"
            )
        label = lab_dir / f"{case}{NNUNET_ENDING}"
        if lab_dir.is_dir() and not label.is_file():
            raise LayoutError(f"missing file: {label}")
        records.append(
            Case(
                case,
                img_dir / f"{case}_{pet_ch:04d}{NNUNET_ENDING}",
                img_dir / f"{case}_{1 - pet_ch:04d}{NNUNET_ENDING}",
                label if lab_dir.is_dir() else None,
                patient_of(case),
            )
        )
    if validate:
        _validate_all(records, check_channels)
    return records


def read_challenge(root: str | Path, validate: bool = True) -> list[Case]:
    """Grand-Challenge input folder: images/pet/<uuid>.mha + images/ct/<uuid>.mha, no labels.

    On the platform the two uuids differ: pair by name when the names match, else when there is
    exactly one of each; anything else is ambiguous and raises.
    """
    root = Path(root)
    pet_dir, ct_dir = root / GC_PET_DIR, root / GC_CT_DIR
    for d in (pet_dir, ct_dir):
        if not d.is_dir():
            raise LayoutError(f"missing folder: {d}")
    pets = sorted(p for p in pet_dir.iterdir() if is_image_file(p))
    cts = sorted(p for p in ct_dir.iterdir() if is_image_file(p))
    if not pets:
        raise LayoutError(f"no PET image in {pet_dir}")
    if not cts:
        raise LayoutError(f"no CT image in {ct_dir}")
    ct_by_name = {image_stem(p): p for p in cts}
    if all(image_stem(p) in ct_by_name for p in pets) and len(pets) == len(cts):
        pairs = [(p, ct_by_name[image_stem(p)]) for p in pets]
    elif len(pets) == 1 and len(cts) == 1:
        pairs = [(pets[0], cts[0])]
    else:
        unmatched = [p for p in pets if image_stem(p) not in ct_by_name] or [
            c for c in cts if image_stem(c) not in {image_stem(p) for p in pets}
        ]
        raise LayoutError(
            f"{unmatched[0] if unmatched else root}: cannot pair PET and CT images "
            f"({len(pets)} PET, {len(cts)} CT, names differ)"
        )
    records = [Case(image_stem(p), p, c, None, image_stem(p)) for p, c in pairs]
    if validate:
        _validate_all(records, True)
    return records


def read_layout(root: str | Path, layout: str, **kwargs: Any) -> list[Case]:
    """Dispatch on the layout name ('tcia', 'nnunet', 'gc')."""
    readers = {"tcia": read_tcia, "nnunet": read_nnunet, "gc": read_challenge}
    if layout not in readers:
        raise ValueError(f"unknown layout {layout!r}; expected one of {sorted(readers)}")
    return readers[layout](root, **kwargs)


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def _images(obj: Any) -> tuple[sitk.Image, sitk.Image | None, sitk.Image | None]:
    """Accept a Phantom, a (pet, ct[, label]) tuple or a dict with pet/ct/label."""
    if hasattr(obj, "pet") and hasattr(obj, "ct"):
        return obj.pet, obj.ct, getattr(obj, "label", None)
    if isinstance(obj, dict):
        return obj["pet"], obj.get("ct"), obj.get("label")
    items = tuple(obj)
    if len(items) not in (2, 3):
        raise ValueError("expected a Phantom, (pet, ct[, label]) or {'pet', 'ct', 'label'}")
    return items[0], items[1], items[2] if len(items) == 3 else None


def _write(img: sitk.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # level 1: several times faster than the default for a few % larger files
    sitk.WriteImage(img, str(path), True, 1)


def _as_label(img: sitk.Image) -> sitk.Image:
    return img if img.GetPixelID() == sitk.sitkUInt8 else sitk.Cast(img, sitk.sitkUInt8)


def write_case(
    phantom_or_images: Any,
    root: str | Path,
    layout: str,
    case_id: str,
    patient_id: str | None = None,
    channel_order: str = "ct_pet",
) -> Case:
    """Write one case in a layout; returns the record the matching reader will produce.

    tcia: <root>/<patient_id>/<study>/..., study = case_id without its '<patient_id>_' prefix, so that
    read_tcia gives back the same case id. nnunet: channel files per channel_order. gc: PET and CT under
    the same name (pairable by name), the label, if any, under <root>/labels/ (not part of GC's input).
    """
    pet, ct, label = _images(phantom_or_images)
    root = Path(root)
    patient_id = patient_id or default_patient_of(case_id)
    if layout == "tcia":
        prefix = f"{patient_id}_"
        study = (
            case_id[len(prefix) :] if case_id.startswith(prefix) and len(case_id) > len(prefix) else case_id
        )
        if _safe(study) != study or not patient_id or _safe(patient_id) != patient_id:
            raise ValueError(f"patient/study names must be filesystem-safe: {patient_id!r}, {study!r}")
        sdir = root / patient_id / study
        rec = Case(
            f"{patient_id}_{study}",
            sdir / TCIA_PET,
            sdir / TCIA_CT if ct is not None else None,
            sdir / TCIA_LABEL if label is not None else None,
            patient_id,
        )
    elif layout == "nnunet":
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {sorted(CHANNEL_ORDERS)}")
        if ct is None:
            raise ValueError("nnU-Net layout needs both PET and CT")
        pet_ch = CHANNEL_ORDERS[channel_order].index("PET")
        img = root / "imagesTr"
        rec = Case(
            case_id,
            img / f"{case_id}_{pet_ch:04d}{NNUNET_ENDING}",
            img / f"{case_id}_{1 - pet_ch:04d}{NNUNET_ENDING}",
            root / "labelsTr" / f"{case_id}{NNUNET_ENDING}" if label is not None else None,
            patient_id,
        )
    elif layout == "gc":
        rec = Case(
            case_id,
            root / GC_PET_DIR / f"{case_id}.mha",
            root / GC_CT_DIR / f"{case_id}.mha" if ct is not None else None,
            root / GC_LABEL_DIR / f"{case_id}.mha" if label is not None else None,
            case_id,
        )
    else:
        raise ValueError(f"unknown layout {layout!r}; expected 'tcia', 'nnunet' or 'gc'")
    _write(sitk.Cast(pet, sitk.sitkFloat32) if pet.GetPixelID() != sitk.sitkFloat32 else pet, rec.pet)
    if ct is not None and rec.ct is not None:
        _write(ct, rec.ct)
    if label is not None and rec.label is not None:
        _write(_as_label(label), rec.label)
    return rec


def write_nnunet_dataset_json(
    root: str | Path,
    channel_order: str = "ct_pet",
    name: str = "PhantomPETCT",
    extra: dict[str, Any] | None = None,
) -> Path:
    """dataset.json for nnU-Net v2 (channel names tell nnU-Net to z-score CT with global stats etc.)."""
    root = Path(root)
    n = sum(1 for _ in (root / "imagesTr").glob(f"*_0000{NNUNET_ENDING}"))
    names = CHANNEL_ORDERS[channel_order]
    meta = {
        "name": name,
        "channel_names": {str(i): c for i, c in enumerate(names)},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": n,
        "file_ending": NNUNET_ENDING,
        "channel_order": channel_order,
    }
    meta.update(extra or {})
    path = root / "dataset.json"
    write_json_atomic(meta, path)
    return path


def load_arrays(record: Case) -> dict[str, np.ndarray | None]:
    """PET/CT/label arrays (z, y, x) of a record; a convenience for tests and small tools."""
    out: dict[str, np.ndarray | None] = {}
    for key in ("pet", "ct", "label"):
        path = getattr(record, key)
        out[key] = None if path is None else sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    return out


def records_to_json(records: Iterable[Case]) -> list[dict[str, Any]]:
    """Plain-JSON form (paths as strings) for manifests."""
    return [
        {
            "case_id": r.case_id,
            "patient_id": r.patient_id,
            "pet": str(r.pet),
            "ct": None if r.ct is None else str(r.ct),
            "label": None if r.label is None else str(r.label),
        }
        for r in records
    ]
