"""Painting one lesion: irregular outline, uptake profile, necrotic core, label and CT appearance.

Why irregular: a model that only ever sees spheres learns "round hot blob". The outline is a bumpy
ellipsoid united with up to three lobes; the label is the region before the scanner blur, as in
real data where small lesions look fainter and larger than their delineation.
"""

from __future__ import annotations

import numpy as np

from .canvas import Canvas
from .params import Lesion, Vec3


def _components(centre: Vec3, les: Lesion, rot: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(centre, semi-axes) of the main ellipsoid and of each lobe, which sits on the main body's surface."""
    sh = les.shape
    semi = les.diameter_mm / 2 * np.asarray(sh.aspect) / max(sh.aspect)
    comps = [(np.asarray(centre, float), semi)]
    for k in range(sh.lobes):
        v = np.asarray(sh.lobe_dirs[k])
        v = v / (np.linalg.norm(v) + 1e-9)
        comps.append((np.asarray(centre) + rot @ (v * semi * 0.6), semi * sh.lobe_sizes[k]))
    return comps


def _bumpy_rho(x, y, z, comps, les: Lesion, rot: np.ndarray) -> np.ndarray:
    """Normalised radius of the union (minimum over components), each surface modulated by three waves."""
    sh = les.shape
    bumps = np.asarray(sh.bumps, np.float32)
    rho = None
    for c, s in comps:
        dx, dy, dz = x - np.float32(c[0]), y - np.float32(c[1]), z - np.float32(c[2])
        u = [(rot[0, i] * dx + rot[1, i] * dy + rot[2, i] * dz) / np.float32(s[i]) for i in range(3)]
        rk = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2) + np.float32(1e-6)
        g = (
            sum(
                np.cos(3 * (bumps[m, 0] * u[0] + bumps[m, 1] * u[1] + bumps[m, 2] * u[2]) / rk + sh.bump_phase[m])
                for m in range(3)
            )
            / 3
        )
        rk = rk / (1 + np.float32(sh.bump_amp) * g)
        rho = rk if rho is None else np.minimum(rho, rk)
    return rho


def _uptake(x, y, z, rho: np.ndarray, les: Lesion) -> np.ndarray:
    """SUV inside the lesion: peak at the centre falling to edge_frac at the rim, textured, maybe necrotic."""
    ct = les.contrast
    prof = 1 - (1 - np.float32(ct.edge_frac)) * np.minimum(rho, 1) ** 2
    het = np.cos(0.9 * x + 0.7 * y + 1.3 * z) * np.cos(0.5 * x - 1.1 * y + 0.8 * z)
    val = np.float32(ct.suv_max) * np.clip(prof * (1 + np.float32(ct.het) * het), 0, 1)
    if ct.necrotic:
        val = np.where(rho < ct.core_frac, np.float32(ct.suv_max * ct.core_suv_frac), val)
    return val


def paint_lesion(cv: Canvas, centre: Vec3, les: Lesion) -> None:
    """Paint PET, label and CT of one lesion centred at `centre` (physical mm)."""
    r = les.diameter_mm / 2
    rot = np.asarray(les.shape.rot)
    comps = _components(centre, les, rot)
    ext = r * 1.6
    blk = cv.block(np.asarray(centre) - ext, np.asarray(centre) + ext)
    if blk is None:
        return
    sl, x, y, z = blk
    rho = _bumpy_rho(x, y, z, comps, les, rot)
    mask = rho <= 1
    if not mask.any():
        # smaller than a voxel: keep the voxel nearest the centre so the label is never silently empty
        d2 = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2
        mask = d2 <= d2.min() + 1e-3
        if float(d2.min()) > (r + 2) ** 2:
            return
    with cv.painting("lesion"):  # a lesion keeps its own class where it lies in an organ
        cv.paint(sl, mask, act=_uptake(x, y, z, rho, les), lab=1)
    if les.site.startswith("bone"):
        return  # bone lesions are not visible in this CT
    base = cv.hu[sl]
    if les.site == "liver":
        hu = base - np.float32(15)  # slightly hypodense
    else:
        hu = np.where(base > 100, base, np.float32(les.contrast.hu))  # soft tissue, except inside bone
    cv.paint(sl, mask, hu=hu)
