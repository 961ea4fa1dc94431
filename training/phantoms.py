"""Synthetic whole-body FDG-PET/CT phantoms with known lesion labels.

Why: the real autoPET data (1014 studies, ~400 GB) is not available everywhere the pipeline has to
be built and tested, and a CPU-only machine cannot train on it anyway. These phantoms are cheap,
deterministic per seed and vary widely (body size, organ uptake, hot physiological structures,
lesions, blur, noise), so code paths, geometry handling and small training runs can be exercised
end to end. They are NOT a substitute for real data; see docs/phantoms.md.

All anatomy is defined in patient physical coordinates (ITK's LPS, mm: +x = patient left,
+y = posterior, +z = superior). It is rendered on an axis-aligned grid and then re-indexed
(flips/permutations, exact) or resampled (oblique directions) onto the requested grid, so the
same seed puts every structure at the same physical place whatever the image grid.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

#: autoPET's typical PET voxel size (mm) and in-plane matrix.
AUTOPET_SPACING = (2.0364, 2.0364, 3.0)
AUTOPET_INPLANE = 400

Vec3 = tuple[float, float, float]


@dataclass
class Phantom:
    """One synthetic study: PET (SUV), CT (HU) and lesion label on one grid, plus ground-truth info."""

    pet: sitk.Image
    ct: sitk.Image
    label: sitk.Image
    info: dict


# --------------------------------------------------------------------------------------------
# Grid handling
# --------------------------------------------------------------------------------------------


def _direction_matrix(direction: Sequence[float] | None) -> np.ndarray:
    if direction is None:
        return np.eye(3)
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        raise ValueError(f"direction is not orthonormal: {list(direction)}")
    return d


def _signed_permutation(d: np.ndarray) -> tuple[list[int], list[int]] | None:
    """(physical axis, sign) per image axis if `d` only flips/permutes axes, else None (oblique)."""
    axes, signs = [], []
    for c in range(3):
        k = int(np.argmax(np.abs(d[:, c])))
        if abs(abs(d[k, c]) - 1.0) > 1e-6:
            return None
        axes.append(k)
        signs.append(1 if d[k, c] > 0 else -1)
    return axes, signs


def centred_origin(
    centre_mm: Sequence[float],
    shape: Sequence[int],
    spacing: Sequence[float],
    direction: Sequence[float] | None = None,
) -> tuple[float, float, float]:
    """Origin that puts the centre of a grid (x, y, z sizes) at `centre_mm`, for any direction.

    Useful to aim a small test grid at a known lesion (info["lesions"][i]["centre_mm"]).
    """
    d = _direction_matrix(direction)
    half = np.asarray(spacing, float) * (np.asarray(shape, float) - 1) / 2
    return tuple(float(v) for v in np.asarray(centre_mm, float) - d @ half)


# --------------------------------------------------------------------------------------------
# Canvas: an axis-aligned LPS block of voxels, arrays indexed [z, y, x]
# --------------------------------------------------------------------------------------------


class _Canvas:
    """Axis-aligned voxel block; shapes are painted only inside their own bounding boxes (speed)."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> None:
        self.xs, self.ys, self.zs = xs, ys, zs
        shape = (len(zs), len(ys), len(xs))
        self.act = np.zeros(shape, np.float32)
        self.hu = np.full(shape, -1000.0, np.float32)
        self.lab = np.zeros(shape, np.uint8)

    def block(self, lo: Sequence[float], hi: Sequence[float]):
        """Index slices and broadcastable float32 coordinates of the voxels inside [lo, hi]."""
        sl = []
        for coords, a, b in ((self.zs, lo[2], hi[2]), (self.ys, lo[1], hi[1]), (self.xs, lo[0], hi[0])):
            i0, i1 = np.searchsorted(coords, [a, b])
            if i1 <= i0:
                return None
            sl.append(slice(int(i0), int(i1)))
        z = self.zs[sl[0]].astype(np.float32)[:, None, None]
        y = self.ys[sl[1]].astype(np.float32)[None, :, None]
        x = self.xs[sl[2]].astype(np.float32)[None, None, :]
        return tuple(sl), x, y, z

    def paint(self, sl, mask: np.ndarray, act=None, hu=None, lab=None) -> None:
        """Set values where mask; value may be a scalar or an array shaped like the block."""
        for arr, val in ((self.act, act), (self.hu, hu), (self.lab, lab)):
            if val is None:
                continue
            view = arr[sl]
            if np.ndim(val) == 0:
                view[mask] = val
            else:
                view[mask] = np.broadcast_to(val, mask.shape)[mask]


def _rotation(rng: np.random.Generator | None = None, angles: Sequence[float] | None = None) -> np.ndarray:
    """Rotation matrix from three angles (radians) or a random one."""
    if angles is None:
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        return np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _ellipsoid_rho(
    cv: _Canvas,
    centre: Sequence[float],
    semi: Sequence[float],
    rot: np.ndarray | None = None,
    pad: float = 1.0,
):
    """Normalised radius (1 on the surface) of an ellipsoid inside its bounding box, plus local coords."""
    c = np.asarray(centre, float)
    s = np.asarray(semi, float)
    r = np.eye(3) if rot is None else rot
    ext = np.sqrt(((r * s[None, :]) ** 2).sum(axis=1)) * pad
    blk = cv.block(c - ext, c + ext)
    if blk is None:
        return None
    sl, x, y, z = blk
    dx, dy, dz = x - np.float32(c[0]), y - np.float32(c[1]), z - np.float32(c[2])
    if rot is None:
        u = [dx / np.float32(s[0]), dy / np.float32(s[1]), dz / np.float32(s[2])]
    else:
        r32 = r.astype(np.float32)
        u = [(r32[0, i] * dx + r32[1, i] * dy + r32[2, i] * dz) / np.float32(s[i]) for i in range(3)]
    rho = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
    return sl, rho, u


def _ellipsoid(
    cv: _Canvas, centre, semi, rot=None, act=None, hu=None, shell: float = 0.0, inner_act=None, inner_hu=None
) -> None:
    """Paint a (possibly rotated) ellipsoid; with `shell` > 0 (mm) the interior gets inner_* values."""
    res = _ellipsoid_rho(cv, centre, semi, rot)
    if res is None:
        return
    sl, rho, _ = res
    inside = rho <= 1.0
    cv.paint(sl, inside, act=act, hu=hu)
    if shell > 0 and (inner_act is not None or inner_hu is not None):
        inner = rho <= 1.0 - shell / float(min(semi))
        cv.paint(sl, inner, act=inner_act, hu=inner_hu)


def _tube(
    cv: _Canvas,
    points: Sequence[Sequence[float]],
    radius: float | Sequence[float],
    act=None,
    hu=None,
    wall: float = 0.0,
    inner_act=None,
    inner_hu=None,
) -> None:
    """Paint a polyline of capsules (vessels, bowel, ureters, long bones); radius may vary per point."""
    pts = np.asarray(points, float)
    rad = np.broadcast_to(np.asarray(radius, float), (len(pts),))
    for p0, p1, r0, r1 in zip(pts[:-1], pts[1:], rad[:-1], rad[1:], strict=True):
        rmax = max(r0, r1)
        blk = cv.block(np.minimum(p0, p1) - rmax, np.maximum(p0, p1) + rmax)
        if blk is None:
            continue
        sl, x, y, z = blk
        d = (p1 - p0).astype(np.float32)
        dd = float(d @ d) or 1.0
        dx, dy, dz = x - np.float32(p0[0]), y - np.float32(p0[1]), z - np.float32(p0[2])
        t = np.clip((dx * d[0] + dy * d[1] + dz * d[2]) / np.float32(dd), 0, 1)
        dist2 = (dx - t * d[0]) ** 2 + (dy - t * d[1]) ** 2 + (dz - t * d[2]) ** 2
        r = np.float32(r0) + t * np.float32(r1 - r0)
        inside = dist2 <= r * r
        cv.paint(sl, inside, act=act, hu=hu)
        if wall > 0 and (inner_act is not None or inner_hu is not None):
            inner = dist2 <= np.maximum(r - np.float32(wall), 0) ** 2
            cv.paint(sl, inner, act=inner_act, hu=inner_hu)


# --------------------------------------------------------------------------------------------
# Random parameters (grid independent: drawn before any grid is looked at)
# --------------------------------------------------------------------------------------------


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _sample_body(rng: np.random.Generator) -> dict[str, Any]:
    """Body shape, organ positions and uptake for one patient (mm, SUV, HU)."""
    u = rng.uniform
    h = u(0.9, 1.1)  # height scale along z
    big = u(0.0, 1.0) ** 1.5  # 0 = slim, 1 = obese
    A = 140 + 75 * big + rng.normal(0, 8)  # torso half width at chest
    B = A * u(0.6, 0.75)  # torso half depth
    b: dict[str, Any] = {
        "height_scale": h,
        "half_width_mm": A,
        "half_depth_mm": B,
        "fat_mm": u(4, 10) + 30 * big * u(0.5, 1.0),
        "belly": u(0.9, 1.1) + 0.25 * big,
        "hips": u(0.95, 1.12),
        "centre_xy_mm": (float(rng.normal(0, 12)), float(rng.normal(0, 12))),
        "head_scale": u(0.92, 1.08),
        "arms": str(rng.choice(["down", "up", "none"], p=[0.45, 0.35, 0.2])),
        "couch": bool(u() < 0.8),
        # uptake (SUV)
        "suv_brain": u(6, 12),
        "suv_liver": u(1.5, 3.0),
        "suv_blood": u(1.3, 2.2),
        "suv_muscle": u(0.4, 1.0),
        "suv_lung": u(0.2, 0.6),
        "suv_marrow": u(1.0, 2.0),
        "suv_myocardium": min(_loguniform(rng, 1.5, 14.0), 10.0),
        "suv_bladder": _loguniform(rng, 5, 40),
        "suv_kidney": u(2, 7),
        "suv_urine_kidney": _loguniform(rng, 3, 30),
        "suv_stomach": u(1.0, 3.5),
        "suv_salivary": u(1.2, 3.5),
        "suv_tonsil": u(1.5, 6.0),
        "suv_thyroid": u(1.0, 2.0) if u() > 0.12 else u(3, 8),
        "bladder_semi_mm": (u(18, 65), u(16, 50), u(16, 50)),
        "brown_fat": bool(u() < 0.1),
        "suv_brown_fat": u(2, 12),
        "bowel_level": float(u(0, 1) ** 2),  # 0 quiet .. 1 very hot bowel
        "ureters": bool(u() < 0.5),
        "injection_site": bool(u() < 0.05),
        # CT (HU)
        "hu_lung": u(-900, -700),
        "hu_fat": u(-120, -80),
        "hu_muscle": u(35, 60),
        "hu_soft": u(20, 45),
        "hu_liver": u(45, 70),
        "hu_blood": u(30, 50),
        "hu_cortical": u(800, 1400),
        "hu_cancellous": u(300, 450),
        # scanner
        "psf_fwhm_mm": u(5, 8),
        "noise_level": u(0.12, 0.3) * math.sqrt(A / 165),
        "texture_amp": u(0.05, 0.15),
        "ct_noise_hu": u(5, 20),
    }
    b["suv_fat"] = b["suv_muscle"] * u(0.35, 0.6)
    b["suv_spleen"] = min(max(b["suv_liver"] * u(0.75, 1.0), 1.5), 2.5)
    # field of view: vertex (or skull base) to mid-thigh, sometimes head to toe
    r = u()
    t_end = (u(860, 1060) if r < 0.75 else u(1060, 1450) if r < 0.9 else u(1650, 1880)) * h
    t_start = -u(5, 30) if u() < 0.85 else u(60, 170)
    b["fov_t_mm"] = (float(t_start), float(t_end))
    b["jitter"] = rng.normal(0, 1, size=32).tolist()  # small organ position jitters
    return b


_SITES = {  # lesion site: relative frequency
    "neck_node": 1.0,
    "supraclavicular": 0.6,
    "axilla": 0.8,
    "mediastinum": 1.2,
    "hilum": 0.6,
    "lung": 1.2,
    "liver": 0.9,
    "paraaortic": 0.8,
    "mesenteric": 0.5,
    "iliac": 0.7,
    "inguinal": 0.5,
    "bone_spine": 0.7,
    "bone_pelvis": 0.4,
    "bone_femur": 0.2,
    "near_bladder": 0.4,
    "near_kidney": 0.3,
    "near_heart": 0.3,
    "spleen": 0.2,
}


def _organs(b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Body-relative organ geometry (x, y, t): t = mm below the vertex. Scaled to this patient."""
    A, B, h, j = b["half_width_mm"], b["half_depth_mm"], b["height_scale"], b["jitter"]
    sA = A / 165.0
    o: dict[str, dict[str, Any]] = {}
    o["lung_r"] = {"c": (-0.47 * A, 0.05 * B, 420 * h + 5 * j[0]), "s": (0.36 * A, 0.7 * B, 125 * h)}
    o["lung_l"] = {"c": (0.5 * A, 0.05 * B, 425 * h + 5 * j[1]), "s": (0.32 * A, 0.68 * B, 120 * h)}
    o["heart"] = {"c": (28 * sA + 5 * j[2], -0.38 * B, 470 * h), "s": (58 * sA, 48, 58)}
    o["liver"] = {
        "c": (-0.36 * A + 6 * j[3], -0.1 * B, 575 * h + 8 * j[4]),
        "s": (0.44 * A * (1 + 0.08 * j[5]), 0.72 * B, 88 * h),
    }
    o["spleen"] = {
        "c": (0.58 * A, 0.42 * B, 575 * h + 8 * j[6]),
        "s": (0.15 * A, 0.28 * B, 55 * h * (1 + 0.1 * j[7])),
    }
    o["kidney_r"] = {"c": (-70 * sA, 0.5 * B, 665 * h + 8 * j[8]), "s": (28, 24, 55 * h)}
    o["kidney_l"] = {"c": (70 * sA, 0.5 * B, 650 * h + 8 * j[9]), "s": (28, 24, 55 * h)}
    o["stomach"] = {"c": (0.32 * A, -0.4 * B, 545 * h), "s": (45 * sA, 32, 48)}
    o["bladder"] = {"c": (0.0, -0.3 * B, 865 * h), "s": b["bladder_semi_mm"]}
    o["brain"] = {"c": (0.0, 8.0, 88 * h), "s": tuple(v * b["head_scale"] for v in (62, 82, 62))}
    o["spine_y"] = {"c": (0.0, B - b["fat_mm"] - 45, 0.0), "s": (0, 0, 0)}
    return o


def _sample_lesions(rng: np.random.Generator, b: dict[str, Any], want: bool | None) -> list[dict[str, Any]]:
    """0-10 lesions at plausible sites (body-relative coordinates; converted to physical later)."""
    if want is None:
        want = bool(rng.uniform() < 0.5)
    if not want:
        return []
    n = int(min(10, 1 + rng.geometric(0.35) - 1 + (rng.uniform() < 0.15) * rng.integers(2, 6)))
    A, B, h = b["half_width_mm"], b["half_depth_mm"], b["height_scale"]
    org = _organs(b)
    names = list(_SITES)
    p = np.array([_SITES[k] for k in names])
    p /= p.sum()
    # a patient's lesions tend to cluster in a few sites
    favoured = rng.choice(names, size=2, p=p)
    out = []
    for _ in range(n):
        site = str(favoured[rng.integers(2)]) if rng.uniform() < 0.5 else str(rng.choice(names, p=p))
        d = _loguniform(rng, 4, 60)
        u = rng.uniform
        side = 1 if u() < 0.5 else -1
        bg = b["suv_muscle"]
        if site == "neck_node":
            c = (side * u(20, 45), u(-25, 15), u(195, 265) * h)
            d = min(d, 40)
        elif site == "supraclavicular":
            c = (side * u(40, 0.55 * A), u(-0.3, 0.1) * B, u(270, 305) * h)
        elif site == "axilla":
            c = (side * u(0.72, 0.88) * A, u(-0.3, 0.2) * B, u(300, 360) * h)
        elif site == "mediastinum":
            c = (u(-25, 25), u(-0.45, 0.05) * B, u(340, 420) * h)
            bg = b["suv_blood"]
        elif site == "hilum":
            c = (side * u(30, 50), u(-0.1, 0.2) * B, u(400, 450) * h)
            bg = b["suv_blood"]
        elif site in ("lung", "liver", "spleen"):
            key = {"lung": "lung_r" if side < 0 else "lung_l", "liver": "liver", "spleen": "spleen"}[site]
            oc, os_ = np.array(org[key]["c"]), np.array(org[key]["s"])
            v = rng.normal(size=3)
            v *= u(0, 0.7) / np.linalg.norm(v)
            c = tuple(oc + v * os_)
            bg = {"lung": b["suv_lung"], "liver": b["suv_liver"], "spleen": b["suv_spleen"]}[site]
            d = min(d, 0.9 * float(min(os_)) * 2, 45)
        elif site == "paraaortic":
            c = (u(-35, 45), org["spine_y"]["c"][1] - u(25, 45), u(620, 780) * h)
        elif site == "mesenteric":
            c = (u(-0.3, 0.3) * A, u(-0.35, 0.1) * B, u(660, 790) * h)
        elif site == "iliac":
            c = (side * u(45, 75), u(-0.05, 0.3) * B, u(800, 870) * h)
        elif site == "inguinal":
            c = (side * u(0.3, 0.5) * A, u(-0.65, -0.35) * B, u(895, 935) * h)
            d = min(d, 40)
        elif site == "bone_spine":
            c = (u(-6, 6), org["spine_y"]["c"][1] + u(-4, 4), u(290, 850) * h)
            bg, d = b["suv_marrow"], min(d, 35)
        elif site == "bone_pelvis":
            c = (side * 0.52 * A * b["hips"], 0.35 * B, u(780, 830) * h)
            bg, d = b["suv_marrow"], min(d, 35)
        elif site == "bone_femur":
            c = (side * 0.5 * A * b["hips"], 0.1 * B, u(900, 1000) * h)
            bg, d = b["suv_marrow"], min(d, 25)
        else:  # next to a hot organ: lesion surface touching the organ surface
            key = {
                "near_bladder": "bladder",
                "near_kidney": "kidney_r" if side < 0 else "kidney_l",
                "near_heart": "heart",
            }[site]
            oc, os_ = np.array(org[key]["c"]), np.array(org[key]["s"])
            v = rng.normal(size=3)
            if key == "bladder":
                v[2] = abs(v[2]) * 0.3  # lateral / cranial of the bladder, not into the pelvic floor
            v /= np.linalg.norm(v)
            d = min(d, 40)
            reach = float(np.linalg.norm(v * os_)) + 0.45 * d
            c = tuple(oc + v * reach)
        suv_max = min(25.0, max(_loguniform(rng, 2.5, 25.0), 2.0 * bg + 0.5))
        big = d > 25 and u() < 0.5
        out.append(
            {
                "site": site,
                "centre_body": tuple(float(v) for v in c),
                "diameter_mm": float(d),
                "suv_max": float(suv_max),
                "necrotic": bool(big),
                "core_frac": float(u(0.3, 0.5)),
                "core_suv_frac": float(u(0.15, 0.4)),
                "aspect": rng.uniform(0.65, 1.0, size=3).tolist(),
                "rot": _rotation(rng).tolist(),
                "lobes": int(rng.integers(0, 4)),
                "lobe_dirs": rng.normal(size=(3, 3)).tolist(),
                "lobe_sizes": rng.uniform(0.4, 0.75, size=3).tolist(),
                "bumps": rng.normal(0, 1, size=(3, 3)).tolist(),
                "bump_phase": rng.uniform(0, 6.283, size=3).tolist(),
                "bump_amp": float(u(0.0, 0.25)),
                "edge_frac": float(u(0.55, 0.9)),
                "het": float(u(0.0, 0.25)),
                "hu": float(u(20, 50)),
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


class _Body:
    """Converts body-relative (x, y, t) to physical LPS mm and holds derived profiles."""

    def __init__(self, b: dict[str, Any]) -> None:
        self.b = b
        self.x0, self.y0 = b["centre_xy_mm"]

    def p(self, x: float, y: float, t: float) -> tuple[float, float, float]:
        return (self.x0 + x, self.y0 + y, -t)


def _trunk_profile(b: dict[str, Any]):
    """Control points (t, half width, half depth, centre y) of neck + torso, body-relative."""
    A, B, h = b["half_width_mm"], b["half_depth_mm"], b["height_scale"]
    belly, hips = b["belly"], b["hips"]
    rows = [
        (150, 45, 48, 12),
        (250, 55, 56, 12),
        (268, 0.6 * A, 0.65 * B, None),
        (300, 0.98 * A, 0.9 * B, None),
        (420, A, B, None),
        (560, 0.92 * A * (0.5 + 0.5 * belly), 0.96 * B * belly, None),
        (700, 0.95 * A * (0.4 + 0.6 * belly), B * belly, None),
        (830, A * hips, 0.92 * B * (0.5 + 0.5 * belly), None),
        (915, 0.92 * A * hips, 0.8 * B, None),
        (940, 0.6 * A * hips, 0.6 * B, None),
    ]
    t = np.array([r[0] * (h if r[0] > 200 else 1.0) for r in rows])
    a = np.array([r[1] for r in rows])
    bb = np.array([r[2] for r in rows])
    cy = np.array([r[3] if r[3] is not None else B - r[2] for r in rows])
    return t, a, bb, cy


def _render(
    cv: _Canvas, b: dict[str, Any], lesions: list[dict[str, Any]], tex_rng: np.random.Generator
) -> dict[str, Any]:
    """Paint anatomy + lesions onto the canvas (activity pre-blur, HU, label). Returns organ info."""
    body = _Body(b)
    P = body.p
    A, B, h, f, j = b["half_width_mm"], b["half_depth_mm"], b["height_scale"], b["fat_mm"], b["jitter"]
    org = _organs(b)
    mus, fat = b["suv_muscle"], b["suv_fat"]
    hu_mus, hu_fat, hu_cort, hu_canc = b["hu_muscle"], b["hu_fat"], b["hu_cortical"], b["hu_cancellous"]
    marrow = b["suv_marrow"]
    info_org: dict[str, Any] = {}

    def record(name: str, c_body, suv: float, hu: float, semi=None) -> None:
        info_org[name] = {"centre_mm": [float(v) for v in P(*c_body)], "suv": float(suv), "hu": float(hu)}
        if semi is not None:
            info_org[name]["semi_axes_mm"] = [float(v) for v in semi]

    # ---- couch (CT only) ----
    tt, ta, tb, tcy = _trunk_profile(b)
    if b["couch"]:
        y_top = body.y0 + B + 4
        blk = cv.block((body.x0 - 250, y_top, -5000), (body.x0 + 250, y_top + 60, 5000))
        if blk is not None:
            sl, x, y, z = blk
            xr = (x - np.float32(body.x0)) / np.float32(250)
            curve = y_top + 25 * xr**2
            m = ((y >= curve) & (y <= curve + 6)) | ((y >= curve + 30) & (y <= curve + 34))
            cv.paint(sl, np.broadcast_to(m, (len(cv.zs[sl[0]]),) + m.shape[1:]), hu=150.0)

    # ---- head ----
    hs = b["head_scale"]
    head_c, head_s = (0.0, 5.0, 105.0), (72 * hs, 92 * hs, 105 * hs)
    _ellipsoid(cv, P(*head_c), head_s, act=mus * 0.9, hu=hu_mus, shell=7, inner_act=0.5, inner_hu=hu_cort)
    _ellipsoid(cv, P(*head_c), tuple(s - 7 for s in head_s), act=marrow * 0.6, hu=hu_cort)
    brain = b["suv_brain"]
    bc, bs = org["brain"]["c"], org["brain"]["s"]
    _ellipsoid(cv, P(*bc), bs, act=brain, hu=35.0, shell=11, inner_act=brain * 0.42, inner_hu=30.0)
    record("brain", bc, brain, 35.0, bs)
    for sx in (-1, 1):
        _ellipsoid(cv, P(sx * 22 * hs, 0.0, 90 * h), (10, 15, 11), act=brain * 0.95)
        _ellipsoid(cv, P(sx * 25 * hs, 50 * hs, 150), (30 * hs, 28, 22), act=brain * 0.72, hu=35.0)
        _ellipsoid(cv, P(sx * 30 * hs, -55 * hs, 80), (12, 10, 10), act=0.3, hu=10.0)  # eyes
        _ellipsoid(cv, P(sx * 45 * hs, 10.0, 170), (14, 18, 20), act=b["suv_salivary"], hu=30.0)  # parotids
        _ellipsoid(cv, P(sx * 17, -15.0, 190), (8, 10, 12), act=b["suv_tonsil"], hu=40.0)  # tonsils
    _ellipsoid(cv, P(0.0, -70 * hs, 110), (12, 25, 18), act=0.2, hu=-600.0)  # nasal air

    # ---- trunk (neck + torso) with subcutaneous fat, muscle, ribs ----
    t_lo, t_hi = float(tt[0]), float(tt[-1])
    blk = cv.block(
        (body.x0 - ta.max() - 2, body.y0 - (tb - tcy).max() - 2, -t_hi),
        (body.x0 + ta.max() + 2, body.y0 + (tb + tcy).max() + 2, -t_lo),
    )
    if blk is not None:
        sl, x, y, z = blk
        tz = -z[:, 0, 0]
        a = np.interp(tz, tt, ta).astype(np.float32)[:, None, None]
        bb = np.interp(tz, tt, tb).astype(np.float32)[:, None, None]
        cy = np.interp(tz, tt, tcy).astype(np.float32)[:, None, None]
        dx = x - np.float32(body.x0)
        dy = y - np.float32(body.y0) - cy
        r2 = (dx / a) ** 2 + (dy / bb) ** 2
        fz = np.float32(f) * np.clip((tz[:, None, None] - 200) / 100, 0.3, 1).astype(np.float32)
        r2in = (dx / np.maximum(a - fz, 5)) ** 2 + (dy / np.maximum(bb - fz, 5)) ** 2
        cv.paint(sl, r2 <= 1, act=fat, hu=hu_fat)
        cv.paint(sl, r2in <= 1, act=mus, hu=hu_mus)
        # ribs: thin elliptic ring just inside the muscle wall, banded along z, sloping anteriorly
        thorax = ((tz > 300 * h) & (tz < 600 * h))[:, None, None]
        ri = (dx / np.maximum(a - fz - 14, 5)) ** 2 + (dy / np.maximum(bb - fz - 14, 5)) ** 2
        ro = (dx / np.maximum(a - fz - 6, 5)) ** 2 + (dy / np.maximum(bb - fz - 6, 5)) ** 2
        phase = np.mod(tz[:, None, None] - 0.35 * dy, 26.0)
        rib = thorax & (ro <= 1) & (ri > 1) & (phase < 10)
        cv.paint(sl, rib, act=marrow * 0.6, hu=hu_cort * 0.8)
        record("muscle", (0.0, B - f - 20, 480 * h), mus, hu_mus)

    # ---- legs and arms ----
    hips = b["hips"]
    leg_t = np.array([880, 1000, 1150, 1350, 1600, 1850]) * h
    for sx in (-1, 1):
        lx = sx * np.array([0.46 * A * hips, 0.42 * A * hips, 0.36 * A * hips, 85, 80, 80])
        lr = np.array([0.5 * A * hips, 0.45 * A * hips, 0.38 * A * hips, 55, 42, 38])
        pts = [P(xx, B - r, tv) for xx, r, tv in zip(lx, lr, leg_t, strict=True)]
        _tube(cv, pts, lr, act=fat, hu=hu_fat, wall=f * 0.6, inner_act=mus, inner_hu=hu_mus)
        bone = [P(sx * 0.55 * A * hips, 0.1 * B, 870 * h)] + [
            P(xx, B - r, tv) for xx, r, tv in zip(lx[1:], lr[1:], leg_t[1:], strict=True)
        ]
        _tube(
            cv,
            bone,
            [24, 14, 13, 14, 12, 10],
            act=marrow * 0.5,
            hu=hu_cort,
            wall=4,
            inner_act=marrow * 0.45,
            inner_hu=hu_canc * 0.6,
        )
        if b["arms"] == "down":
            ax = sx * (A + 50)
            arm = [P(ax, 0.0, 290 * h), P(ax * 1.02, 0.1 * B, 560 * h), P(ax * 1.0, -0.1 * B, 840 * h)]
            _tube(cv, arm, [45, 37, 30], act=fat, hu=hu_fat, wall=f * 0.5, inner_act=mus, inner_hu=hu_mus)
            _tube(
                cv,
                arm[:2],
                10,
                act=marrow * 0.5,
                hu=hu_cort,
                wall=3,
                inner_act=marrow * 0.4,
                inner_hu=hu_canc * 0.6,
            )
        elif b["arms"] == "up":
            ax = sx * (80 * hs + 45)
            arm = [P(sx * 0.9 * A, 0.1 * B, 300 * h), P(ax, 0.15 * B, 60), P(ax * 0.9, 0.0, -250)]
            _tube(cv, arm, [48, 40, 32], act=fat, hu=hu_fat, wall=f * 0.5, inner_act=mus, inner_hu=hu_mus)
        if b["injection_site"] and b["arms"] != "none" and sx == 1:
            _ellipsoid(
                cv,
                P(ax if b["arms"] == "down" else ax, 0.0, 700 * h if b["arms"] == "down" else 0.0),
                (10, 8, 25),
                act=15.0,
            )

    # ---- thyroid, brown fat ----
    _ellipsoid(cv, P(-14, -28.0, 240 * h), (9, 8, 20), act=b["suv_thyroid"], hu=70.0)
    _ellipsoid(cv, P(14, -28.0, 240 * h), (9, 8, 20), act=b["suv_thyroid"], hu=70.0)
    if b["brown_fat"]:
        for _ in range(24):
            sx = 1 if tex_rng.uniform() < 0.5 else -1
            if tex_rng.uniform() < 0.6:
                c = (
                    sx * tex_rng.uniform(40, 0.7 * A),
                    tex_rng.uniform(-0.3, 0.3) * B,
                    tex_rng.uniform(250, 320) * h,
                )
            else:
                c = (
                    sx * tex_rng.uniform(25, 55),
                    B - f - tex_rng.uniform(20, 40),
                    tex_rng.uniform(320, 520) * h,
                )
            _ellipsoid(
                cv,
                P(*c),
                tex_rng.uniform(5, 14, size=3),
                rot=_rotation(tex_rng),
                act=b["suv_brown_fat"] * tex_rng.uniform(0.5, 1.0),
                hu=hu_fat,
            )

    # ---- thorax ----
    lung = b["suv_lung"]
    for k in ("lung_r", "lung_l"):
        _ellipsoid(cv, P(*org[k]["c"]), org[k]["s"], act=lung, hu=b["hu_lung"])
    record("lung", org["lung_r"]["c"], lung, b["hu_lung"], org["lung_r"]["s"])
    blood = b["suv_blood"]
    hc, hsz = org["heart"]["c"], org["heart"]["s"]
    hrot = _rotation(angles=(0.3, 0.5, 0.5))
    _ellipsoid(cv, P(*hc), hsz, rot=hrot, act=blood, hu=b["hu_blood"])
    lv_c = (hc[0] + 14, hc[1] + 4, hc[2] + 10)
    lv_s = (40 * A / 165, 36, 46)
    _ellipsoid(
        cv,
        P(*lv_c),
        lv_s,
        rot=hrot,
        act=b["suv_myocardium"],
        hu=hu_mus,
        shell=11,
        inner_act=blood,
        inner_hu=b["hu_blood"],
    )
    record("blood_pool", lv_c, blood, b["hu_blood"])
    spine_y = org["spine_y"]["c"][1]
    aorta = [
        P(hc[0] - 10, hc[1] + 10, hc[2] - 55),
        P(5, -0.15 * B, 345 * h),
        P(18, spine_y - 30, 380 * h),
        P(15, spine_y - 32, 700 * h),
        P(0, spine_y - 35, 790 * h),
    ]
    ar = 11 + 4 * A / 215
    _tube(cv, aorta, ar, act=blood, hu=b["hu_blood"])
    record("aorta", (15, spine_y - 32, 550 * h), blood, b["hu_blood"])
    for sx in (-1, 1):
        _tube(
            cv,
            [
                P(0, spine_y - 35, 790 * h),
                P(sx * 55, 0.2 * B, 880 * h),
                P(sx * 0.46 * A * hips, 0.05 * B, 960 * h),
            ],
            7,
            act=blood,
            hu=b["hu_blood"],
        )
    _tube(
        cv,
        [P(-25, spine_y - 30, 480 * h), P(-22, spine_y - 30, 790 * h)],
        ar - 1,
        act=blood * 0.95,
        hu=b["hu_blood"],
    )
    _ellipsoid(cv, P(0, -B + f + 16, 400 * h), (15, 7, 80 * h), act=marrow, hu=hu_canc)  # sternum
    for sx in (-1, 1):  # clavicles
        _tube(
            cv,
            [P(sx * 18, -0.42 * B, 300 * h), P(sx * 0.82 * A, -0.08 * B, 292 * h)],
            7,
            act=marrow * 0.7,
            hu=hu_cort,
        )

    # ---- abdomen ----
    liv = b["suv_liver"]
    lrot = _rotation(angles=(0.0, 0.15, 0.1 * j[10]))
    _ellipsoid(cv, P(*org["liver"]["c"]), org["liver"]["s"], rot=lrot, act=liv, hu=b["hu_liver"])
    record("liver", org["liver"]["c"], liv, b["hu_liver"], org["liver"]["s"])
    lc = org["liver"]["c"]
    _ellipsoid(
        cv, P(lc[0] + 0.15 * A, lc[1] - 0.3 * B, lc[2] + 55), (15, 15, 30), act=0.4, hu=10.0
    )  # gallbladder
    spl = b["suv_spleen"]
    _ellipsoid(
        cv,
        P(*org["spleen"]["c"]),
        org["spleen"]["s"],
        rot=_rotation(angles=(0.2, 0.0, 0.6)),
        act=spl,
        hu=48.0,
    )
    record("spleen", org["spleen"]["c"], spl, 48.0, org["spleen"]["s"])
    sc = org["stomach"]["c"]
    gas = j[11] > 0
    _ellipsoid(
        cv,
        P(*sc),
        org["stomach"]["s"],
        act=b["suv_stomach"],
        hu=35.0,
        shell=6,
        inner_act=0.3 if gas else b["suv_stomach"] * 0.6,
        inner_hu=-950.0 if gas else 15.0,
    )
    # bowel: colon frame + small-bowel loops, with patchy, sometimes hot uptake and gas
    lvl = b["bowel_level"]
    colon = [
        (-0.55 * A, 0.0, 830),
        (-0.6 * A, -0.2 * B, 640),
        (-0.2 * A, -0.65 * B, 650),
        (0.25 * A, -0.6 * B, 640),
        (0.6 * A, -0.2 * B, 630),
        (0.6 * A, 0.05 * B, 790),
        (0.25 * A, -0.25 * B, 860),
        (0.0, 0.4 * B, 850),
    ]
    for i in range(len(colon) - 1):
        (x0, y0, t0), (x1, y1, t1) = colon[i], colon[i + 1]
        seg = [P(x0 + 8 * j[12 + i], y0, t0 * h), P(x1 + 8 * j[13 + i], y1, t1 * h)]
        suv = mus * tex_rng.uniform(1.0, 2.0) + lvl * tex_rng.uniform(0, 6) * (tex_rng.uniform() < 0.6)
        g = tex_rng.uniform() < 0.4
        _tube(
            cv,
            seg,
            19 + 3 * j[20 + i % 8],
            act=suv,
            hu=30.0,
            wall=4,
            inner_act=0.3 if g else suv * 0.7,
            inner_hu=-900.0 if g else 15.0,
        )
    for _ in range(int(4 + 10 * lvl)):
        c = (tex_rng.uniform(-0.35, 0.35) * A, tex_rng.uniform(-0.55, 0.1) * B, tex_rng.uniform(690, 810) * h)
        _ellipsoid(
            cv,
            P(*c),
            tex_rng.uniform(8, 20, size=3),
            rot=_rotation(tex_rng),
            act=mus * 1.3 + lvl * tex_rng.uniform(0, 4),
            hu=25.0,
        )
    for k, sx in (("kidney_r", -1), ("kidney_l", 1)):
        kc, ks = org[k]["c"], org[k]["s"]
        krot = _rotation(angles=(0.0, 0.25 * sx, -0.3 * sx))
        _ellipsoid(cv, P(*kc), ks, rot=krot, act=b["suv_kidney"], hu=35.0)
        pel = (kc[0] - sx * 10, kc[1] - 4, kc[2])
        _ellipsoid(cv, P(*pel), (8, 7, 15), rot=krot, act=b["suv_urine_kidney"], hu=10.0)
        if b["ureters"]:
            bc2 = org["bladder"]["c"]
            pts = [P(*pel), P(sx * 45, spine_y - 35, 760 * h), P(sx * 28, bc2[1], bc2[2] - 10)]
            for p0, p1 in zip(pts[:-1], pts[1:], strict=True):
                if tex_rng.uniform() < 0.5:
                    _tube(cv, [p0, p1], 2.5, act=b["suv_urine_kidney"] * tex_rng.uniform(0.3, 1.0), hu=15.0)
    record("kidney", org["kidney_r"]["c"], b["suv_kidney"], 35.0, org["kidney_r"]["s"])

    # ---- spine, pelvis, femoral heads ----
    sp_t = np.array([175, 260, 400, 600, 780, 850]) * np.array([1, h, h, h, h, h])
    sp_y = [30.0, 25.0, spine_y, spine_y, spine_y - 5, spine_y + 10]
    sp_r = [11, 12, 16, 20, 23, 20]
    _tube(
        cv,
        [P(0, y, t) for y, t in zip(sp_y, sp_t, strict=True)],
        sp_r,
        act=marrow * 0.7,
        hu=hu_cort,
        wall=3,
        inner_act=marrow,
        inner_hu=hu_canc,
    )
    record("spine", (0.0, spine_y, 600 * h + 18), marrow, hu_canc)  # mid-vertebra, not a disc
    blk = cv.block(
        (body.x0 - 30, body.y0 + spine_y - 30, -sp_t[-1]), (body.x0 + 30, body.y0 + spine_y + 30, -sp_t[0])
    )
    if blk is not None:  # intervertebral discs: cooler, soft tissue HU
        sl, x, y, z = blk
        disc = (np.mod(-z, 30.0 * h) < 6) & (cv.hu[sl] > hu_canc - 1)
        cv.paint(sl, disc & ((x - body.x0) ** 2 < 600), act=0.6, hu=80.0)
    for sx in (-1, 1):
        _ellipsoid(
            cv,
            P(sx * 0.52 * A * hips, 0.35 * B, 800 * h),
            (14, 0.35 * B, 55 * h),
            rot=_rotation(angles=(0.0, 0.0, 0.5 * sx)),
            act=marrow * 0.8,
            hu=hu_cort,
            shell=3,
            inner_act=marrow * 0.9,
            inner_hu=hu_canc,
        )
        _ellipsoid(
            cv,
            P(sx * 0.55 * A * hips, 0.1 * B, 870 * h),
            (24, 24, 24),
            act=marrow * 0.8,
            hu=hu_cort,
            shell=3,
            inner_act=marrow * 0.7,
            inner_hu=hu_canc,
        )
    _ellipsoid(
        cv,
        P(0.0, B - f - 30, 835 * h),
        (45, 18, 50 * h),
        act=marrow * 0.8,
        hu=hu_cort,
        shell=3,
        inner_act=marrow * 0.9,
        inner_hu=hu_canc,
    )  # sacrum
    bl = b["suv_bladder"]
    _ellipsoid(cv, P(*org["bladder"]["c"]), org["bladder"]["s"], act=bl, hu=10.0)
    record("bladder", org["bladder"]["c"], bl, 10.0, org["bladder"]["s"])

    # ---- physiological texture: smooth multiplicative field anchored in physical space ----
    field = _smooth_field(tex_rng, cv.xs, cv.ys, cv.zs)
    cv.act *= 1 + np.float32(b["texture_amp"]) * field
    np.maximum(cv.act, 0, out=cv.act)

    # ---- lesions ----
    for les in lesions:
        _paint_lesion(cv, P(*les["centre_body"]), les)
    return info_org


_LATTICE = 28.0  # mm between nodes of the physical texture lattice
_LAT_LO = np.array([-700.0, -700.0, -2100.0])
_LAT_N = (51, 51, 85)


def _smooth_field(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> np.ndarray:
    """Unit-variance smooth random field, defined on a fixed physical lattice and interpolated (separable)."""
    lat = ndimage.gaussian_filter(rng.standard_normal(_LAT_N[::-1]).astype(np.float32), 1.0)
    lat /= lat.std() + 1e-6

    def weights(coords: np.ndarray, lo: float, n: int) -> tuple[np.ndarray, int]:
        f = np.clip((coords - lo) / _LATTICE, 0, n - 1.001)
        i0 = np.floor(f).astype(int)
        k0, k1 = int(i0.min()), int(i0.max()) + 2
        w = np.zeros((len(coords), k1 - k0), np.float32)
        rows = np.arange(len(coords))
        w[rows, i0 - k0] = 1 - (f - i0)
        w[rows, i0 - k0 + 1] = f - i0
        return w, k0

    wx, kx = weights(xs, _LAT_LO[0], _LAT_N[0])
    wy, ky = weights(ys, _LAT_LO[1], _LAT_N[1])
    wz, kz = weights(zs, _LAT_LO[2], _LAT_N[2])
    sub = lat[kz : kz + wz.shape[1], ky : ky + wy.shape[1], kx : kx + wx.shape[1]]
    t = sub @ wx.T  # (kz, ky, nx)
    t = np.einsum("yk,zkx->zyx", wy, t)  # (kz, ny, nx)
    out = (wz @ t.reshape(t.shape[0], -1)).reshape(len(zs), len(ys), len(xs))
    return out.astype(np.float32)


def _paint_lesion(cv: _Canvas, centre: Vec3, les: dict[str, Any]) -> None:
    """Irregular lesion: union of a bumpy ellipsoid and up to three lobes; label = region before blur."""
    r = les["diameter_mm"] / 2
    rot = np.asarray(les["rot"])
    semi = r * np.asarray(les["aspect"]) / max(les["aspect"])
    comps = [(np.asarray(centre, float), semi)]
    for k in range(les["lobes"]):
        v = np.asarray(les["lobe_dirs"][k])
        v = v / (np.linalg.norm(v) + 1e-9)
        comps.append((np.asarray(centre) + rot @ (v * semi * 0.6), semi * les["lobe_sizes"][k]))
    ext = r * 1.6
    blk = cv.block(np.asarray(centre) - ext, np.asarray(centre) + ext)
    if blk is None:
        return
    sl, x, y, z = blk
    rho = None
    bumps = np.asarray(les["bumps"], np.float32)
    for c, s in comps:
        dx, dy, dz = x - np.float32(c[0]), y - np.float32(c[1]), z - np.float32(c[2])
        u = [(rot[0, i] * dx + rot[1, i] * dy + rot[2, i] * dz) / np.float32(s[i]) for i in range(3)]
        rk = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2) + np.float32(1e-6)
        g = (
            sum(
                np.cos(
                    3 * (bumps[m, 0] * u[0] + bumps[m, 1] * u[1] + bumps[m, 2] * u[2]) / rk
                    + les["bump_phase"][m]
                )
                for m in range(3)
            )
            / 3
        )
        rk = rk / (1 + np.float32(les["bump_amp"]) * g)
        rho = rk if rho is None else np.minimum(rho, rk)
    mask = rho <= 1
    if not mask.any():
        # smaller than a voxel: keep the voxel nearest the centre so the label is never silently empty
        d2 = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2
        mask = d2 <= d2.min() + 1e-3
        if float(d2.min()) > (r + 2) ** 2:
            return
    prof = 1 - (1 - np.float32(les["edge_frac"])) * np.minimum(rho, 1) ** 2
    het = np.cos(0.9 * x + 0.7 * y + 1.3 * z) * np.cos(0.5 * x - 1.1 * y + 0.8 * z)
    val = np.float32(les["suv_max"]) * np.clip(prof * (1 + np.float32(les["het"]) * het), 0, 1)
    if les["necrotic"]:
        val = np.where(rho < les["core_frac"], np.float32(les["suv_max"] * les["core_suv_frac"]), val)
    cv.paint(sl, mask, act=val, lab=1)
    if les["site"].startswith("bone"):
        return
    base = cv.hu[sl]
    cv.paint(
        sl,
        mask,
        hu=np.where(base > 100, base, np.float32(les["hu"]))
        if les["site"] != "liver"
        else base - np.float32(15),
    )


# --------------------------------------------------------------------------------------------
# Scanner model
# --------------------------------------------------------------------------------------------


def _gauss_gain(sigma_vox: Sequence[float]) -> float:
    """Variance gain of white noise through the (discrete) separable Gaussian."""
    gain = 1.0
    for s in sigma_vox:
        if s <= 0:
            continue
        k = np.arange(-int(4 * s + 1), int(4 * s + 1) + 1)
        g = np.exp(-0.5 * (k / s) ** 2)
        g /= g.sum()
        gain *= float((g**2).sum())
    return gain


def _scanner(cv: _Canvas, b: dict[str, Any], rng: np.random.Generator, spacing_zyx: Sequence[float]) -> None:
    """PSF blur + activity-dependent (Poisson-like), spatially correlated noise; CT noise."""
    sig = [b["psf_fwhm_mm"] / 2.3548 / s for s in spacing_zyx]
    gain = _gauss_gain(sig)
    scale = np.float32(b["noise_level"] / math.sqrt(gain))
    act = cv.act
    noise = rng.standard_normal(act.shape, dtype=np.float32)
    noise *= np.sqrt(act)
    noise *= scale
    act += noise
    del noise
    ndimage.gaussian_filter(act, sig, output=act, mode="nearest", truncate=3.0)
    np.maximum(act, 0, out=act)
    ctn = rng.standard_normal(act.shape, dtype=np.float32)
    ctn *= np.float32(b["ct_noise_hu"])
    ctn[cv.hu <= -999.5] = 0
    cv.hu += ctn


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def make_phantom(
    seed: int,
    shape: tuple[int, int, int] | None = None,
    spacing: Sequence[float] = AUTOPET_SPACING,
    direction: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    lesions: bool | None = None,
) -> Phantom:
    """Make one deterministic phantom.

    shape is (x, y, z) as Image.GetSize(); None gives autoPET's 400x400 in-plane matrix and as many
    slices as this body's field of view needs. origin None centres the grid on the field of view.
    lesions None: about half of the seeds are lesion-free; True: >= 1 lesion; False: none.
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng([int(seed), 0])
    b = _sample_body(rng)
    les = _sample_lesions(np.random.default_rng([int(seed), 1]), b, lesions)
    spacing = tuple(float(s) for s in spacing)
    d = _direction_matrix(direction)
    t_start, t_end = b["fov_t_mm"]
    fov_centre = np.array([0.0, 0.0, -(t_start + t_end) / 2])
    if shape is None:
        phys = np.array(
            [AUTOPET_INPLANE * AUTOPET_SPACING[0], AUTOPET_INPLANE * AUTOPET_SPACING[1], t_end - t_start]
        )
        k = np.argmax(np.abs(d), axis=0)
        shape = tuple(max(1, int(round(phys[k[c]] / spacing[c]))) for c in range(3))
    shape = tuple(int(v) for v in shape)
    if origin is None:
        origin = centred_origin(fov_centre, shape, spacing, d.ravel())
    origin = np.asarray(origin, float)

    perm = _signed_permutation(d)
    if perm is not None:
        axes, signs = perm
        coords = [None, None, None]
        rspacing = [0.0, 0.0, 0.0]
        for c in range(3):
            k = axes[c]
            steps = origin[k] + signs[c] * spacing[c] * np.arange(shape[c])
            coords[k] = np.sort(steps)
            rspacing[k] = spacing[c]
    else:  # oblique: render axis-aligned over the grid's bounding box, resample afterwards
        corners = np.array(
            [[i, jj, kk] for i in (0, shape[0] - 1) for jj in (0, shape[1] - 1) for kk in (0, shape[2] - 1)],
            float,
        )
        pts = origin[None, :] + (corners * np.asarray(spacing)) @ d.T
        lo, hi = pts.min(0), pts.max(0)
        k = np.argmax(np.abs(d), axis=1)
        rspacing = [spacing[k[i]] for i in range(3)]
        coords = [
            lo[i] + rspacing[i] * np.arange(int(math.ceil((hi[i] - lo[i]) / rspacing[i])) + 2) - rspacing[i]
            for i in range(3)
        ]
    full_shape = (len(coords[2]), len(coords[1]), len(coords[0]))

    # canvas: the part of the render grid that can contain the body (+ PSF margin)
    A, B = b["half_width_mm"], b["half_depth_mm"]
    x0, y0 = b["centre_xy_mm"]
    half_w = max(A * 1.02 + (2 * 48 + 5 if b["arms"] == "down" else 0), 255) + 25
    lo = np.array([x0 - half_w, y0 - B * 1.4 - 25, -1900.0])
    hi = np.array([x0 + half_w, y0 + B + 70, 420.0])
    cidx = [np.searchsorted(coords[i], [lo[i], hi[i]]) for i in range(3)]
    cv = _Canvas(*(coords[i][cidx[i][0] : cidx[i][1]] for i in range(3)))
    tex_rng = np.random.default_rng([int(seed), 2])
    if min(cv.act.shape) > 0:
        organs = _render(cv, b, les, tex_rng)
        _scanner(cv, b, np.random.default_rng([int(seed), 3]), rspacing[::-1])
    else:
        organs = {}
    sl = tuple(slice(int(cidx[i][0]), int(cidx[i][1])) for i in (2, 1, 0))
    pet = np.zeros(full_shape, np.float32)
    ct = np.full(full_shape, -1000, np.int16)
    lab = np.zeros(full_shape, np.uint8)
    pet[sl] = cv.act
    ct[sl] = np.clip(np.rint(cv.hu), -1024, 3071).astype(np.int16)
    lab[sl] = cv.lab
    del cv

    if perm is not None:
        axes, signs = perm
        flips = tuple(2 - axes[c] for c in range(3) if signs[c] < 0)
        order = [2 - axes[2 - a] for a in range(3)]

        def orient(arr: np.ndarray) -> np.ndarray:
            if flips:
                arr = np.flip(arr, axis=flips)
            if order != [0, 1, 2]:
                arr = np.transpose(arr, order)
            return np.ascontiguousarray(arr)

        images = []
        for arr in (pet, ct, lab):
            img = sitk.GetImageFromArray(orient(arr))
            img.SetSpacing(spacing)
            img.SetOrigin(tuple(origin))
            img.SetDirection(tuple(d.ravel()))
            images.append(img)
    else:
        ref = sitk.Image(list(shape), sitk.sitkUInt8)
        ref.SetSpacing(spacing)
        ref.SetOrigin(tuple(origin))
        ref.SetDirection(tuple(d.ravel()))
        images = []
        for arr, interp, fill in (
            (pet, sitk.sitkLinear, 0.0),
            (ct, sitk.sitkLinear, -1000.0),
            (lab, sitk.sitkNearestNeighbor, 0.0),
        ):
            src = sitk.GetImageFromArray(arr)
            src.SetSpacing(tuple(rspacing))
            src.SetOrigin(tuple(float(c[0]) for c in coords))
            images.append(sitk.Resample(src, ref, sitk.Transform(), interp, fill, src.GetPixelID()))
    pet_img, ct_img, lab_img = images

    body = _Body(b)
    lesion_info = []
    inv = np.linalg.inv(d)
    for le in les:
        c = body.p(*le["centre_body"])
        idx = inv @ (np.asarray(c) - origin) / np.asarray(spacing)
        lesion_info.append(
            {
                "centre_mm": [float(v) for v in c],
                "diameter_mm": le["diameter_mm"],
                "suv_max": le["suv_max"],
                "site": le["site"],
                "necrotic": le["necrotic"],
                "centre_in_grid": bool(np.all(idx > -0.5) and np.all(idx < np.asarray(shape) - 0.5)),
            }
        )
    body_info = {k: v for k, v in b.items() if k != "jitter"}
    info = {
        "seed": int(seed),
        "lesions": lesion_info,
        "body": body_info,
        "organs": organs,
        "shape": list(shape),
        "spacing": list(spacing),
        "generation_s": round(time.perf_counter() - t0, 3),
    }
    return Phantom(pet=pet_img, ct=ct_img, label=lab_img, info=info)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _flip_direction(axes: Sequence[str]) -> tuple[float, ...] | None:
    if not axes:
        return None
    d = np.eye(3)
    for a in axes:
        d[:, "xyz".index(a)] *= -1
    return tuple(d.ravel())


def main(argv: Sequence[str] | None = None) -> int:
    """Write N phantoms in one of the dataset layouts (see training/layouts.py)."""
    from training import layouts

    p = argparse.ArgumentParser(prog="python -m training.phantoms", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="case i uses seed + i")
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
    p.add_argument("--channel-order", choices=["ct_pet", "pet_ct"], default="ct_pet", help="nnU-Net only")
    p.add_argument(
        "--studies-per-patient",
        type=int,
        default=1,
        help="group consecutive cases under one patient id (tests patient-level splits)",
    )
    args = p.parse_args(argv)
    want = {"auto": None, "yes": True, "no": False}[args.lesions]
    direction = _flip_direction(args.flip_axes)
    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.cases):
        seed = args.seed + i
        t0 = time.perf_counter()
        ph = make_phantom(
            seed,
            shape=tuple(args.shape) if args.shape else None,
            spacing=tuple(args.spacing),
            direction=direction,
            lesions=want,
        )
        k = max(1, args.studies_per_patient)
        patient = f"PHANTOM{args.seed + (i // k) * k:05d}"  # named after the first seed of its group
        study = i % k
        rec = layouts.write_case(
            ph,
            args.out,
            args.layout,
            case_id=f"{patient}_{study}",
            patient_id=patient,
            channel_order=args.channel_order,
        )
        print(
            f"{rec.case_id}: {ph.pet.GetSize()} lesions={len(ph.info['lesions'])} "
            f"({time.perf_counter() - t0:.1f} s) -> {rec.pet.parent}",
            flush=True,
        )
    if args.layout == "nnunet":
        layouts.write_nnunet_dataset_json(args.out, channel_order=args.channel_order)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
