"""Painting the body outline: couch, head, neck and torso walls, limbs, neck glands and brown fat.

Each function paints one part in place; later paints overwrite earlier ones, so render.render calls
them in a fixed order (organs go inside the walls painted here). Lengths are body-relative mm
(see anatomy.py); `s.at` converts to physical coordinates.
"""

from __future__ import annotations

import numpy as np

from .anatomy import trunk_profile
from .canvas import ellipsoid, tube
from .geometry import rotation
from .scene import Scene


def paint_couch(s: Scene) -> None:
    """Scanner couch below the back (CT only): two curved plates, as seen on most PET/CT scans."""
    b, cv = s.patient.build, s.cv
    if not b.couch:
        return
    y_top = s.frame.y0 + b.half_depth_mm + 4
    blk = cv.block((s.frame.x0 - 250, y_top, -5000), (s.frame.x0 + 250, y_top + 60, 5000))
    if blk is None:
        return
    sl, x, y, z = blk
    xr = (x - np.float32(s.frame.x0)) / np.float32(250)
    curve = y_top + 25 * xr**2
    m = ((y >= curve) & (y <= curve + 6)) | ((y >= curve + 30) & (y <= curve + 34))
    cv.paint(sl, np.broadcast_to(m, (len(cv.zs[sl[0]]),) + m.shape[1:]), hu=150.0)


def paint_head(s: Scene) -> None:
    """Scalp and skull, brain (cortex hot, white matter cooler), basal ganglia, cerebellum, eyes, glands."""
    p, cv, P = s.patient, s.cv, s.at
    hs, h = p.build.head_scale, p.build.height_scale
    head_c, head_s = (0.0, 5.0, 105.0), (72 * hs, 92 * hs, 105 * hs)
    ellipsoid(
        cv, P(*head_c), head_s, act=p.suv.muscle * 0.9, hu=p.hu.muscle, shell=7, inner_act=0.5, inner_hu=p.hu.cortical
    )
    with cv.painting("marrow"):
        ellipsoid(cv, P(*head_c), tuple(v - 7 for v in head_s), act=p.suv.marrow * 0.6, hu=p.hu.cortical)
    brain = p.suv.brain
    bc, bs = s.org.brain.centre, s.org.brain.semi
    with cv.painting("brain"):
        ellipsoid(cv, P(*bc), bs, act=brain, hu=35.0, shell=11, inner_act=brain * 0.42, inner_hu=30.0)
        for sx in (-1, 1):  # basal ganglia and cerebellum
            ellipsoid(cv, P(sx * 22 * hs, 0.0, 90 * h), (10, 15, 11), act=brain * 0.95)
            ellipsoid(cv, P(sx * 25 * hs, 50 * hs, 150), (30 * hs, 28, 22), act=brain * 0.72, hu=35.0)
    s.record("brain", bc, brain, 35.0, bs)
    for sx in (-1, 1):
        ellipsoid(cv, P(sx * 30 * hs, -55 * hs, 80), (12, 10, 10), act=0.3, hu=10.0)  # eyes
        ellipsoid(cv, P(sx * 45 * hs, 10.0, 170), (14, 18, 20), act=p.suv.salivary, hu=30.0)  # parotids
        ellipsoid(cv, P(sx * 17, -15.0, 190), (8, 10, 12), act=p.suv.tonsil, hu=40.0)  # tonsils
    ellipsoid(cv, P(0.0, -70 * hs, 110), (12, 25, 18), act=0.2, hu=-600.0)  # nasal air


def paint_trunk(s: Scene) -> None:
    """Neck and torso: an elliptic cross-section following the profile, fat over muscle, and ribs."""
    p, cv = s.patient, s.cv
    tt, ta, tb, tcy = trunk_profile(p)
    t_lo, t_hi = float(tt[0]), float(tt[-1])
    x0, y0 = s.frame.x0, s.frame.y0
    blk = cv.block(
        (x0 - ta.max() - 2, y0 - (tb - tcy).max() - 2, -t_hi),
        (x0 + ta.max() + 2, y0 + (tb + tcy).max() + 2, -t_lo),
    )
    if blk is None:
        return
    sl, x, y, z = blk
    tz = -z[:, 0, 0]
    a = np.interp(tz, tt, ta).astype(np.float32)[:, None, None]
    bb = np.interp(tz, tt, tb).astype(np.float32)[:, None, None]
    cy = np.interp(tz, tt, tcy).astype(np.float32)[:, None, None]
    dx = x - np.float32(x0)
    dy = y - np.float32(y0) - cy
    r2 = (dx / a) ** 2 + (dy / bb) ** 2
    fz = np.float32(p.build.fat_mm) * np.clip((tz[:, None, None] - 200) / 100, 0.3, 1).astype(np.float32)
    r2in = (dx / np.maximum(a - fz, 5)) ** 2 + (dy / np.maximum(bb - fz, 5)) ** 2
    cv.paint(sl, r2 <= 1, act=p.suv.fat, hu=p.hu.fat)
    cv.paint(sl, r2in <= 1, act=p.suv.muscle, hu=p.hu.muscle)
    # ribs: thin elliptic ring just inside the muscle wall, banded along z, sloping anteriorly
    h = p.build.height_scale
    thorax = ((tz > 300 * h) & (tz < 600 * h))[:, None, None]
    ri = (dx / np.maximum(a - fz - 14, 5)) ** 2 + (dy / np.maximum(bb - fz - 14, 5)) ** 2
    ro = (dx / np.maximum(a - fz - 6, 5)) ** 2 + (dy / np.maximum(bb - fz - 6, 5)) ** 2
    phase = np.mod(tz[:, None, None] - 0.35 * dy, 26.0)
    rib = thorax & (ro <= 1) & (ri > 1) & (phase < 10)
    cv.paint(sl, rib, act=p.suv.marrow * 0.6, hu=p.hu.cortical * 0.8)
    s.record("muscle", (0.0, p.build.half_depth_mm - p.build.fat_mm - 20, 480 * h), p.suv.muscle, p.hu.muscle)


def _paint_leg(s: Scene, sx: int) -> None:
    """Thigh to ankle: fat over muscle, and the femur/tibia as a marrow-filled tube."""
    p, b, P = s.patient, s.patient.build, s.at
    A, B, h, hips, marrow = b.half_width_mm, b.half_depth_mm, b.height_scale, b.hips, p.suv.marrow
    leg_t = np.array([880, 1000, 1150, 1350, 1600, 1850]) * h
    lx = sx * np.array([0.46 * A * hips, 0.42 * A * hips, 0.36 * A * hips, 85, 80, 80])
    lr = np.array([0.5 * A * hips, 0.45 * A * hips, 0.38 * A * hips, 55, 42, 38])
    pts = [P(xx, B - r, tv) for xx, r, tv in zip(lx, lr, leg_t, strict=True)]
    tube(s.cv, pts, lr, act=p.suv.fat, hu=p.hu.fat, wall=b.fat_mm * 0.6, inner_act=p.suv.muscle, inner_hu=p.hu.muscle)
    bone = [P(sx * 0.55 * A * hips, 0.1 * B, 870 * h)] + [
        P(xx, B - r, tv) for xx, r, tv in zip(lx[1:], lr[1:], leg_t[1:], strict=True)
    ]
    tube(
        s.cv,
        bone,
        [24, 14, 13, 14, 12, 10],
        act=marrow * 0.5,
        hu=p.hu.cortical,
        wall=4,
        inner_act=marrow * 0.45,
        inner_hu=p.hu.cancellous * 0.6,
    )


def _paint_arm(s: Scene, sx: int) -> float | None:
    """An arm down beside the torso (with its humerus) or up beside the head; returns its x, None if out."""
    p, b, P = s.patient, s.patient.build, s.at
    A, B, h, f = b.half_width_mm, b.half_depth_mm, b.height_scale, b.fat_mm
    walls = {"act": p.suv.fat, "hu": p.hu.fat, "wall": f * 0.5, "inner_act": p.suv.muscle, "inner_hu": p.hu.muscle}
    if b.arms == "down":
        ax = sx * (A + 50)
        arm = [P(ax, 0.0, 290 * h), P(ax * 1.02, 0.1 * B, 560 * h), P(ax * 1.0, -0.1 * B, 840 * h)]
        tube(s.cv, arm, [45, 37, 30], **walls)
        tube(
            s.cv,
            arm[:2],
            10,
            act=p.suv.marrow * 0.5,
            hu=p.hu.cortical,
            wall=3,
            inner_act=p.suv.marrow * 0.4,
            inner_hu=p.hu.cancellous * 0.6,
        )
        return ax
    if b.arms == "up":
        ax = sx * (80 * b.head_scale + 45)
        arm = [P(sx * 0.9 * A, 0.1 * B, 300 * h), P(ax, 0.15 * B, 60), P(ax * 0.9, 0.0, -250)]
        tube(s.cv, arm, [48, 40, 32], **walls)
        return ax
    return None


def paint_limbs(s: Scene) -> None:
    """Legs and arms, one side after the other, and a paravenous injection site in the left arm (5%)."""
    b = s.patient.build
    for sx in (-1, 1):
        _paint_leg(s, sx)
        ax = _paint_arm(s, sx)
        if s.patient.variants.injection_site and ax is not None and sx == 1:
            t = 700 * b.height_scale if b.arms == "down" else 0.0
            ellipsoid(s.cv, s.at(ax, 0.0, t), (10, 8, 25), act=15.0)


def paint_neck_glands(s: Scene) -> None:
    """Thyroid lobes, and brown fat (10%): up to 24 hot blobs in the neck and along the spine."""
    p, cv, P, rng = s.patient, s.cv, s.at, s.tex_rng
    A, B, h, f = p.build.half_width_mm, p.build.half_depth_mm, p.build.height_scale, p.build.fat_mm
    ellipsoid(cv, P(-14, -28.0, 240 * h), (9, 8, 20), act=p.suv.thyroid, hu=70.0)
    ellipsoid(cv, P(14, -28.0, 240 * h), (9, 8, 20), act=p.suv.thyroid, hu=70.0)
    if not p.variants.brown_fat:
        return
    for _ in range(24):
        sx = 1 if rng.uniform() < 0.5 else -1
        if rng.uniform() < 0.6:
            c = (sx * rng.uniform(40, 0.7 * A), rng.uniform(-0.3, 0.3) * B, rng.uniform(250, 320) * h)
        else:
            c = (sx * rng.uniform(25, 55), B - f - rng.uniform(20, 40), rng.uniform(320, 520) * h)
        with cv.painting("brown_fat"):
            ellipsoid(
                cv,
                P(*c),
                rng.uniform(5, 14, size=3),
                rot=rotation(rng),
                act=p.suv.brown_fat * rng.uniform(0.5, 1.0),
                hu=p.hu.fat,
            )
