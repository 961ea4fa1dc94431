"""Painting the organs inside the body walls: chest, abdomen, bowel, kidneys, skeleton and bladder.

The steps run in render.render's order; several paint over each other on purpose (the left
ventricle inside the heart, discs between vertebrae, the bladder last so that it stays hot).
Where an organ's values are ground truth for tests, it is recorded in the scene (Scene.record).
"""

from __future__ import annotations

import numpy as np

from .canvas import ellipsoid, tube
from .geometry import rotation
from .scene import Scene


def paint_lungs_and_heart(s: Scene) -> None:
    """Both lungs, the heart's blood pool and the left-ventricular myocardium (a shell around blood)."""
    p, cv, P, org = s.patient, s.cv, s.at, s.org
    for lung in (org.lung_r, org.lung_l):
        ellipsoid(cv, P(*lung.centre), lung.semi, act=p.suv.lung, hu=p.hu.lung)
    s.record("lung", org.lung_r.centre, p.suv.lung, p.hu.lung, org.lung_r.semi)
    blood = p.suv.blood
    hc, hsz = org.heart.centre, org.heart.semi
    hrot = rotation(angles=(0.3, 0.5, 0.5))
    lv_c = (hc[0] + 14, hc[1] + 4, hc[2] + 10)
    lv_s = (40 * p.build.half_width_mm / 165, 36, 46)
    with cv.painting("heart"):
        ellipsoid(cv, P(*hc), hsz, rot=hrot, act=blood, hu=p.hu.blood)
        ellipsoid(
            cv,
            P(*lv_c),
            lv_s,
            rot=hrot,
            act=p.suv.myocardium,
            hu=p.hu.muscle,
            shell=11,
            inner_act=blood,
            inner_hu=p.hu.blood,
        )
    s.record("blood_pool", lv_c, blood, p.hu.blood)


def paint_great_vessels(s: Scene) -> None:
    """Aorta from the heart to its bifurcation, the iliac arteries, and the inferior vena cava."""
    p, cv, P = s.patient, s.cv, s.at
    A, B, h, hips = p.build.half_width_mm, p.build.half_depth_mm, p.build.height_scale, p.build.hips
    blood, hu_blood = p.suv.blood, p.hu.blood
    hc, spine_y = s.org.heart.centre, s.org.spine_y
    aorta = [
        P(hc[0] - 10, hc[1] + 10, hc[2] - 55),
        P(5, -0.15 * B, 345 * h),
        P(18, spine_y - 30, 380 * h),
        P(15, spine_y - 32, 700 * h),
        P(0, spine_y - 35, 790 * h),
    ]
    ar = 11 + 4 * A / 215
    tube(cv, aorta, ar, act=blood, hu=hu_blood)
    s.record("aorta", (15, spine_y - 32, 550 * h), blood, hu_blood)
    for sx in (-1, 1):
        iliac = [P(0, spine_y - 35, 790 * h), P(sx * 55, 0.2 * B, 880 * h), P(sx * 0.46 * A * hips, 0.05 * B, 960 * h)]
        tube(cv, iliac, 7, act=blood, hu=hu_blood)
    tube(cv, [P(-25, spine_y - 30, 480 * h), P(-22, spine_y - 30, 790 * h)], ar - 1, act=blood * 0.95, hu=hu_blood)


def paint_chest_bones(s: Scene) -> None:
    """Sternum and clavicles (marrow-hot bone in PET, cortical bone in CT)."""
    p, cv, P = s.patient, s.cv, s.at
    A, B, h, marrow = p.build.half_width_mm, p.build.half_depth_mm, p.build.height_scale, p.suv.marrow
    ellipsoid(cv, P(0, -B + p.build.fat_mm + 16, 400 * h), (15, 7, 80 * h), act=marrow, hu=p.hu.cancellous)
    for sx in (-1, 1):
        clavicle = [P(sx * 18, -0.42 * B, 300 * h), P(sx * 0.82 * A, -0.08 * B, 292 * h)]
        tube(cv, clavicle, 7, act=marrow * 0.7, hu=p.hu.cortical)


def paint_upper_abdomen(s: Scene) -> None:
    """Liver with gallbladder, spleen, and the stomach (a hot wall around food or gas)."""
    p, cv, P, org = s.patient, s.cv, s.at, s.org
    A, B = p.build.half_width_mm, p.build.half_depth_mm
    lrot = rotation(angles=(0.0, 0.15, 0.1 * p.jitter[10]))
    with cv.painting("liver"):
        ellipsoid(cv, P(*org.liver.centre), org.liver.semi, rot=lrot, act=p.suv.liver, hu=p.hu.liver)
    s.record("liver", org.liver.centre, p.suv.liver, p.hu.liver, org.liver.semi)
    lc = org.liver.centre
    ellipsoid(cv, P(lc[0] + 0.15 * A, lc[1] - 0.3 * B, lc[2] + 55), (15, 15, 30), act=0.4, hu=10.0)  # gallbladder
    srot = rotation(angles=(0.2, 0.0, 0.6))
    with cv.painting("spleen"):
        ellipsoid(cv, P(*org.spleen.centre), org.spleen.semi, rot=srot, act=p.suv.spleen, hu=48.0)
    s.record("spleen", org.spleen.centre, p.suv.spleen, 48.0, org.spleen.semi)
    gas = p.jitter[11] > 0
    with cv.painting("bowel"):  # the stomach, with the bowel: the digestive tract
        ellipsoid(
            cv,
            P(*org.stomach.centre),
            org.stomach.semi,
            act=p.suv.stomach,
            hu=35.0,
            shell=6,
            inner_act=0.3 if gas else p.suv.stomach * 0.6,
            inner_hu=-950.0 if gas else 15.0,
        )


#: colon frame, body-relative (x as a fraction of A, y of B, t in mm before height scaling)
_COLON = [
    (-0.55, 0.0, 830),
    (-0.6, -0.2, 640),
    (-0.2, -0.65, 650),
    (0.25, -0.6, 640),
    (0.6, -0.2, 630),
    (0.6, 0.05, 790),
    (0.25, -0.25, 860),
    (0.0, 0.4, 850),
]


def paint_bowel(s: Scene) -> None:
    """Colon frame and small-bowel loops with patchy, sometimes very hot uptake and gas (texture draws)."""
    p, cv, P, rng, j = s.patient, s.cv, s.at, s.tex_rng, s.patient.jitter
    A, B, h, mus = p.build.half_width_mm, p.build.half_depth_mm, p.build.height_scale, p.suv.muscle
    lvl = p.variants.bowel_level
    colon = [(fx * A, fy * B, t) for fx, fy, t in _COLON]
    for i in range(len(colon) - 1):
        (x0, y0, t0), (x1, y1, t1) = colon[i], colon[i + 1]
        seg = [P(x0 + 8 * j[12 + i], y0, t0 * h), P(x1 + 8 * j[13 + i], y1, t1 * h)]
        suv = mus * rng.uniform(1.0, 2.0) + lvl * rng.uniform(0, 6) * (rng.uniform() < 0.6)
        g = rng.uniform() < 0.4
        tube(
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
        c = (rng.uniform(-0.35, 0.35) * A, rng.uniform(-0.55, 0.1) * B, rng.uniform(690, 810) * h)
        ellipsoid(
            cv, P(*c), rng.uniform(8, 20, size=3), rot=rotation(rng), act=mus * 1.3 + lvl * rng.uniform(0, 4), hu=25.0
        )


def paint_kidneys(s: Scene) -> None:
    """Kidneys (cortex) with hot urine in the renal pelvis and, in half the patients, patchy ureters."""
    p, cv, P, org, rng = s.patient, s.cv, s.at, s.org, s.tex_rng
    h, urine = p.build.height_scale, p.suv.urine_kidney
    for kidney, sx in ((org.kidney_r, -1), (org.kidney_l, 1)):
        kc, ks = kidney.centre, kidney.semi
        krot = rotation(angles=(0.0, 0.25 * sx, -0.3 * sx))
        ellipsoid(cv, P(*kc), ks, rot=krot, act=p.suv.kidney, hu=35.0)
        pel = (kc[0] - sx * 10, kc[1] - 4, kc[2])
        ellipsoid(cv, P(*pel), (8, 7, 15), rot=krot, act=urine, hu=10.0)
        if not p.variants.ureters:
            continue
        bc = org.bladder.centre
        pts = [P(*pel), P(sx * 45, org.spine_y - 35, 760 * h), P(sx * 28, bc[1], bc[2] - 10)]
        for p0, p1 in zip(pts[:-1], pts[1:], strict=True):
            if rng.uniform() < 0.5:
                tube(cv, [p0, p1], 2.5, act=urine * rng.uniform(0.3, 1.0), hu=15.0)
    s.record("kidney", org.kidney_r.centre, p.suv.kidney, 35.0, org.kidney_r.semi)


def paint_spine(s: Scene) -> None:
    """Vertebral column as a cortical tube with marrow inside, cut by cooler intervertebral discs."""
    p, cv, P, spine_y = s.patient, s.cv, s.at, s.org.spine_y
    h, marrow, hu_canc = p.build.height_scale, p.suv.marrow, p.hu.cancellous
    sp_t = np.array([175, 260, 400, 600, 780, 850]) * np.array([1, h, h, h, h, h])
    sp_y = [30.0, 25.0, spine_y, spine_y, spine_y - 5, spine_y + 10]
    sp_r = [11, 12, 16, 20, 23, 20]
    axis = [P(0, y, t) for y, t in zip(sp_y, sp_t, strict=True)]
    tube(cv, axis, sp_r, act=marrow * 0.7, hu=p.hu.cortical, wall=3, inner_act=marrow, inner_hu=hu_canc)
    s.record("spine", (0.0, spine_y, 600 * h + 18), marrow, hu_canc)  # mid-vertebra, not a disc
    x0, y0 = s.frame.x0, s.frame.y0
    blk = cv.block((x0 - 30, y0 + spine_y - 30, -sp_t[-1]), (x0 + 30, y0 + spine_y + 30, -sp_t[0]))
    if blk is not None:  # intervertebral discs: cooler, soft tissue HU
        sl, x, y, z = blk
        disc = (np.mod(-z, 30.0 * h) < 6) & (cv.hu[sl] > hu_canc - 1)
        cv.paint(sl, disc & ((x - x0) ** 2 < 600), act=0.6, hu=80.0)


def paint_pelvis(s: Scene) -> None:
    """Iliac wings, femoral heads and sacrum: cortical shells around marrow."""
    p, cv, P = s.patient, s.cv, s.at
    A, B, h, hips = p.build.half_width_mm, p.build.half_depth_mm, p.build.height_scale, p.build.hips
    marrow = p.suv.marrow
    bone = {"hu": p.hu.cortical, "shell": 3, "inner_hu": p.hu.cancellous}
    for sx in (-1, 1):
        wing = rotation(angles=(0.0, 0.0, 0.5 * sx))
        ellipsoid(
            cv,
            P(sx * 0.52 * A * hips, 0.35 * B, 800 * h),
            (14, 0.35 * B, 55 * h),
            rot=wing,
            act=marrow * 0.8,
            inner_act=marrow * 0.9,
            **bone,
        )
        ellipsoid(
            cv,
            P(sx * 0.55 * A * hips, 0.1 * B, 870 * h),
            (24, 24, 24),
            act=marrow * 0.8,
            inner_act=marrow * 0.7,
            **bone,
        )
    sacrum = P(0.0, B - p.build.fat_mm - 30, 835 * h)
    ellipsoid(cv, sacrum, (45, 18, 50 * h), act=marrow * 0.8, inner_act=marrow * 0.9, **bone)


def paint_bladder(s: Scene) -> None:
    """The urinary bladder, last of the organs: the hottest structure in many FDG scans."""
    p, org = s.patient, s.org
    ellipsoid(s.cv, s.at(*org.bladder.centre), org.bladder.semi, act=p.suv.bladder, hu=10.0)
    s.record("bladder", org.bladder.centre, p.suv.bladder, 10.0, org.bladder.semi)
