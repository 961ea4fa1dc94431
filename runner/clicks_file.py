"""A reader's clicks as autoPET IV sends them: ``/input/lesion-clicks.json``, Grand-Challenge's
"Multiple points" annotation.

    {"version": {"major": 1, "minor": 0}, "type": "Multiple points",
     "points": [{"point": [x, y, z], "name": "tumor"}, {"point": [x, y, z], "name": "background"}, ...]}

The coordinates are voxel indices of the PET image in ITK's (x, y, z) order, as autoPET IV's click
simulation writes them (the argmax of a component's distance transform on the nibabel array) and its
baseline reads them. Here each index becomes the physical point of that PET voxel, so the click goes
through the same orientation, resampling and crop as the PET (the organisers' baseline puts the raw
indices on its reoriented, resampled array, which only agrees for PETs already in RAS at 2 x 2 x 3 mm).

autoPET V adds scribbles: a "Multiple polylines" (or "Multiple lines") annotation whose lines are
lists of points (or ``start``/``end`` pairs) in the same index space. A scribble becomes clicks on
every voxel its segments pass through, so it fills the same channels (``rasterise``). autoPET V's
exact input interface was not readable from here; these are Grand-Challenge's annotation forms.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from common.errors import InputError
from model.guidance import LABELS, Clicks

#: The input file of autoPET IV's interactive task.
CLICKS_JSON = "lesion-clicks.json"
#: Per-case clicks of a folder of cases: <input>/lesion-clicks/<case>.json.
CLICKS_FOLDER = "lesion-clicks"
#: Grand-Challenge's annotation types read here.
POINT_TYPES = ("Multiple points", "Point")
LINE_TYPES = ("Multiple polylines", "Multiple lines", "Polyline", "Line")


def rasterise(points: Sequence[Sequence[float]]) -> list[tuple[int, int, int]]:
    """Every voxel a polyline through ``points`` (voxel indices) passes, in order, without repeats:
    each segment sampled at steps of at most half a voxel along its longest axis, then rounded."""
    voxels: list[tuple[int, int, int]] = []
    corners = [np.asarray(p, dtype=float) for p in points]
    for a, b in zip(corners, corners[1:] or corners, strict=False):
        steps = max(1, int(math.ceil(2 * np.abs(b - a).max())))
        for t in np.linspace(0.0, 1.0, steps + 1):
            voxel = tuple(int(v) for v in np.floor(a + t * (b - a) + 0.5))
            if not voxels or voxels[-1] != voxel:
                voxels.append(voxel)  # type: ignore[arg-type]
    return list(dict.fromkeys(voxels))


def _label(entry: dict[str, Any], path: Path, k: int) -> str:
    name = str(entry.get("name", "")).strip().lower()
    if name not in LABELS:
        raise InputError(f"{path}: entry {k} is named {entry.get('name')!r}; clicks are named "
                         f"{' or '.join(repr(n) for n in LABELS)}")
    return name


def _indices(value: Any, path: Path, k: int) -> list[float]:
    if (not isinstance(value, list | tuple) or len(value) != 3
            or not all(isinstance(v, int | float) and math.isfinite(v) for v in value)):
        raise InputError(f"{path}: entry {k} has no point of three numbers (got {value!r})")
    return [float(v) for v in value]


def read_clicks(path: Path, pet: sitk.Image) -> Clicks:
    """The clicks of ``path`` as physical points of ``pet``'s voxels; one clear line on anything wrong."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a Grand-Challenge annotation (a JSON object with 'type')")
    kind = data.get("type")
    if kind in POINT_TYPES:
        entries = data.get("points", [data] if kind == "Point" else None)
    elif kind in LINE_TYPES:
        entries = data.get("polylines", data.get("lines", [data] if kind in ("Polyline", "Line") else None))
    else:
        raise InputError(f"{path}: annotation type {kind!r}; expected one of {', '.join(POINT_TYPES + LINE_TYPES)}")
    if not isinstance(entries, list):
        raise InputError(f"{path}: no list of {'points' if kind in POINT_TYPES else 'lines'}")
    size = pet.GetSize()
    clicks = Clicks()
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError(f"{path}: entry {k} is not an object")
        label = _label(entry, path, k)
        if kind in POINT_TYPES:
            voxels = [_indices(entry.get("point"), path, k)]
        else:
            corners = next((entry[k] for k in ("points", "path_points", "path") if k in entry), None)
            if corners is None and "start" in entry:
                corners = [entry.get("start"), entry.get("end")]
            if not isinstance(corners, list) or not corners:
                raise InputError(f"{path}: line {k} has no points")
            voxels = rasterise([_indices(c, path, k) for c in corners])
        for voxel in voxels:
            if not all(-0.5 <= v < n - 0.5 for v, n in zip(voxel, size, strict=True)):
                raise InputError(f"{path}: entry {k} at {tuple(voxel)} lies outside the PET's {tuple(size)} voxels "
                                 "(indices in the PET's x, y, z order)")
            clicks = clicks.plus(label, pet.TransformContinuousIndexToPhysicalPoint([float(v) for v in voxel]))
    return clicks


def clicks_for(input_root: Path, case_id: str, single_case: bool) -> Path | None:
    """The clicks file of a case: ``<input>/lesion-clicks/<case>.json``, or ``<input>/lesion-clicks.json``
    when the input holds one case (autoPET IV); None when it has none."""
    per_case = input_root / CLICKS_FOLDER / f"{case_id}.json"
    if per_case.is_file():
        return per_case
    root_file = input_root / CLICKS_JSON
    if root_file.exists() and single_case:
        return root_file
    return None
