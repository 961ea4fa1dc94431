"""Drawing a patient and its lesions from a seed, before any image grid is looked at.

Why the order of draws matters: every value comes from one generator in sequence, so drawing one
number earlier or later (or skipping one, e.g. by short-circuiting a condition) changes every
value after it and thus every phantom. The functions below keep the historical order exactly; when
a value is no longer needed it is still drawn (CtNumbers.soft). Do not reorder statements here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .anatomy import Organ, Organs, organ_layout
from .geometry import rotation
from .params import (
    Build,
    CtNumbers,
    Lesion,
    LesionContrast,
    LesionShape,
    Patient,
    ScannerModel,
    Uptake,
    Variants,
    Vec3,
)
from .ranges import LOW_CONTRAST_SITES, STANDARD, PhantomRanges


def loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One draw, uniform in log space: for quantities that span orders of magnitude (uptake, size)."""
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _tuples(a: np.ndarray) -> Any:
    """Nested tuples of Python floats (as .tolist() gives lists): frozen, and the same numbers downstream."""
    return tuple(_tuples(v) for v in a) if np.ndim(a) > 1 else tuple(a.tolist())


# --------------------------------------------------------------------------------------------
# Patient
# --------------------------------------------------------------------------------------------


def _draw_build(rng: np.random.Generator, r: PhantomRanges) -> Build:
    u = rng.uniform
    h = u(*r.height_scale)  # height scale along z
    big = u(0.0, 1.0) ** 1.5  # 0 = slim, 1 = obese
    A = r.width_mm[0] + (r.width_mm[1] - r.width_mm[0]) * big + rng.normal(0, 8)  # torso half width at chest
    B = A * u(0.6, 0.75)  # torso half depth
    return Build(
        height_scale=h,
        half_width_mm=A,
        half_depth_mm=B,
        fat_mm=u(4, 10) + 30 * big * u(0.5, 1.0),
        belly=u(0.9, 1.1) + 0.25 * big,
        hips=u(0.95, 1.12),
        centre_xy_mm=(float(rng.normal(0, 12)), float(rng.normal(0, 12))),
        head_scale=u(0.92, 1.08),
        arms=str(rng.choice(["down", "up", "none"], p=[0.45, 0.35, 0.2])),
        couch=bool(u() < 0.8),
    )


def _draw_organ_uptake(rng: np.random.Generator, r: PhantomRanges) -> dict[str, float]:
    """Uptake of the organs that every patient has (keyword arguments of Uptake)."""
    u = rng.uniform
    return {
        "brain": u(*r.brain),
        "liver": u(*r.liver),
        "blood": u(1.3, 2.2),
        "muscle": u(0.4, 1.0),
        "lung": u(0.2, 0.6),
        "marrow": u(1.0, 2.0),
        "myocardium": min(loguniform(rng, 1.5, 14.0), 10.0),
        "bladder": loguniform(rng, *r.bladder),
        "kidney": u(*r.kidney),
        "urine_kidney": loguniform(rng, *r.urine_kidney),
        "stomach": u(1.0, 3.5),
        "salivary": u(1.2, 3.5),
        "tonsil": u(1.5, 6.0),
        "thyroid": u(1.0, 2.0) if u() > 0.12 else u(3, 8),
    }


def _draw_variants(rng: np.random.Generator, r: PhantomRanges) -> tuple[Variants, float]:
    """The optional findings, and the brown-fat SUV that is drawn between them (whether or not it is used)."""
    u = rng.uniform
    bladder_semi = (u(*r.bladder_semi_mm), u(*r.bladder_semi_ap_mm), u(*r.bladder_semi_ap_mm))
    brown_fat = bool(u() < 0.1)
    suv_brown_fat = u(2, 12)
    variants = Variants(
        bladder_semi_mm=bladder_semi,
        brown_fat=brown_fat,
        bowel_level=float(u(0, 1) ** 2),
        ureters=bool(u() < 0.5),
        injection_site=bool(u() < 0.05),
    )
    return variants, suv_brown_fat


def _draw_ct(rng: np.random.Generator) -> CtNumbers:
    u = rng.uniform
    return CtNumbers(
        lung=u(-900, -700),
        fat=u(-120, -80),
        muscle=u(35, 60),
        soft=u(20, 45),
        liver=u(45, 70),
        blood=u(30, 50),
        cortical=u(800, 1400),
        cancellous=u(300, 450),
    )


def _draw_scanner(rng: np.random.Generator, half_width_mm: float, r: PhantomRanges) -> ScannerModel:
    u = rng.uniform
    return ScannerModel(
        psf_fwhm_mm=u(*r.psf_fwhm_mm),
        noise_level=u(*r.noise_level) * math.sqrt(half_width_mm / 165),
        texture_amp=u(0.05, 0.15),
        ct_noise_hu=u(5, 20),
    )


def _draw_fov(rng: np.random.Generator, height_scale: float) -> tuple[float, float]:
    """Scan range: vertex (or skull base) to mid-thigh in 75%, to the knees, or head to toe."""
    u = rng.uniform
    r = u()
    t_end = (u(860, 1060) if r < 0.75 else u(1060, 1450) if r < 0.9 else u(1650, 1880)) * height_scale
    t_start = -u(5, 30) if u() < 0.85 else u(60, 170)
    return float(t_start), float(t_end)


def sample_patient(rng: np.random.Generator, r: PhantomRanges = STANDARD) -> Patient:
    """Body shape, organ positions and uptake for one patient (mm, SUV, HU), drawn from ``r``."""
    build = _draw_build(rng, r)
    organ_suv = _draw_organ_uptake(rng, r)
    variants, suv_brown_fat = _draw_variants(rng, r)
    ct = _draw_ct(rng)
    scanner = _draw_scanner(rng, build.half_width_mm, r)
    u = rng.uniform
    suv_fat = organ_suv["muscle"] * u(0.35, 0.6)
    suv_spleen = min(max(organ_suv["liver"] * u(0.75, 1.0), 1.5), 2.5)
    suv = Uptake(**organ_suv, brown_fat=suv_brown_fat, fat=suv_fat, spleen=suv_spleen)
    fov = _draw_fov(rng, build.height_scale)
    jitter = tuple(rng.normal(0, 1, size=32).tolist())
    return Patient(build=build, suv=suv, hu=ct, variants=variants, scanner=scanner, fov_t_mm=fov, jitter=jitter)


def sample_calibration(rng: np.random.Generator, r: PhantomRanges = STANDARD) -> float:
    """The factor a study's SUV is off by (1 where the profile calibrates exactly: then nothing is drawn)."""
    if r.suv_calibration == (1.0, 1.0):
        return 1.0
    return float(rng.uniform(*r.suv_calibration))


# --------------------------------------------------------------------------------------------
# Lesions
# --------------------------------------------------------------------------------------------


def _node_site(site: str, u, side: int, d: float, p: Patient, org: Organs, cap: float
               ) -> tuple[Vec3, float, float]:
    """Lymph-node stations: (body centre, diameter, local background SUV)."""
    A, B, h = p.build.half_width_mm, p.build.half_depth_mm, p.build.height_scale
    bg = p.suv.muscle
    if site == "neck_node":
        c = (side * u(20, 45), u(-25, 15), u(195, 265) * h)
        d = min(d, 40 * cap)
    elif site == "supraclavicular":
        c = (side * u(40, 0.55 * A), u(-0.3, 0.1) * B, u(270, 305) * h)
    elif site == "axilla":
        c = (side * u(0.72, 0.88) * A, u(-0.3, 0.2) * B, u(300, 360) * h)
    elif site == "mediastinum":
        c = (u(-25, 25), u(-0.45, 0.05) * B, u(340, 420) * h)
        bg = p.suv.blood
    elif site == "hilum":
        c = (side * u(30, 50), u(-0.1, 0.2) * B, u(400, 450) * h)
        bg = p.suv.blood
    elif site == "paraaortic":
        c = (u(-35, 45), org.spine_y - u(25, 45), u(620, 780) * h)
    elif site == "mesenteric":
        c = (u(-0.3, 0.3) * A, u(-0.35, 0.1) * B, u(660, 790) * h)
    elif site == "iliac":
        c = (side * u(45, 75), u(-0.05, 0.3) * B, u(800, 870) * h)
    else:  # inguinal
        c = (side * u(0.3, 0.5) * A, u(-0.65, -0.35) * B, u(895, 935) * h)
        d = min(d, 40 * cap)
    return c, d, bg


def _organ_site(site: str, rng: np.random.Generator, side: int, d: float, p: Patient, org: Organs, cap: float):
    """Inside lung, liver or spleen: anywhere within 70% of the organ's radius."""
    organ = org.get({"lung": "lung_r" if side < 0 else "lung_l", "liver": "liver", "spleen": "spleen"}[site])
    oc, os_ = np.array(organ.centre), np.array(organ.semi)
    v = rng.normal(size=3)
    v *= rng.uniform(0, 0.7) / np.linalg.norm(v)
    c = tuple(oc + v * os_)
    bg = {"lung": p.suv.lung, "liver": p.suv.liver, "spleen": p.suv.spleen}[site]
    d = min(d, 0.9 * float(min(os_)) * 2, 45 * cap)
    return c, d, bg


def _bone_site(site: str, u, side: int, d: float, p: Patient, org: Organs, cap: float
               ) -> tuple[Vec3, float, float]:
    """Spine, pelvis or femur, in the marrow."""
    A, B, h, hips = p.build.half_width_mm, p.build.half_depth_mm, p.build.height_scale, p.build.hips
    if site == "bone_spine":
        c = (u(-6, 6), org.spine_y + u(-4, 4), u(290, 850) * h)
        return c, min(d, 35 * cap), p.suv.marrow
    if site == "bone_pelvis":
        return (side * 0.52 * A * hips, 0.35 * B, u(780, 830) * h), min(d, 35 * cap), p.suv.marrow
    return (side * 0.5 * A * hips, 0.1 * B, u(900, 1000) * h), min(d, 25 * cap), p.suv.marrow


def _touching_site(site: str, rng: np.random.Generator, side: int, d: float, p: Patient, org: Organs, cap: float):
    """Next to a hot organ, the lesion surface touching the organ surface: hard cases for a model."""
    if site == "near_spine":  # beside a vertebral body (paravertebral), anywhere from neck to sacrum
        organ = Organ((0.0, org.spine_y, float(rng.uniform(290, 850)) * p.build.height_scale), (20.0, 17.0, 14.0))
    else:
        organ = org.get({
            "near_bladder": "bladder",
            "near_kidney": "kidney_r" if side < 0 else "kidney_l",
            "near_heart": "heart",
            "near_brain": "brain",
        }[site])
    oc, os_ = np.array(organ.centre), np.array(organ.semi)
    v = rng.normal(size=3)
    if site == "near_bladder":
        v[2] = abs(v[2]) * 0.3  # lateral / cranial of the bladder, not into the pelvic floor
    elif site == "near_spine":
        v[2] *= 0.2  # beside the vertebra, not on the next one
    v /= np.linalg.norm(v)
    d = min(d, 40 * cap)
    reach = float(np.linalg.norm(v * os_)) + 0.45 * d
    return tuple(oc + v * reach), d, p.suv.muscle


def _place(site: str, rng: np.random.Generator, side: int, d: float, p: Patient, org: Organs, cap: float):
    """Centre (body-relative), diameter (capped per site, the caps times ``cap``) and local background SUV."""
    if site in ("lung", "liver", "spleen"):
        return _organ_site(site, rng, side, d, p, org, cap)
    if site.startswith("bone_"):
        return _bone_site(site, rng.uniform, side, d, p, org, cap)
    if site.startswith("near_"):
        return _touching_site(site, rng, side, d, p, org, cap)
    return _node_site(site, rng.uniform, side, d, p, org, cap)


def _lesion_count(rng: np.random.Generator, want: bool | None, r: PhantomRanges) -> int:
    """0 (about half the patients with want=None, like autoPET) to ``r.max_lesions``; few in most patients."""
    if want is None:
        want = bool(rng.uniform() < 0.5)
    if not want:
        return 0
    if r.many_lesions_share > 0 and rng.uniform() < r.many_lesions_share:  # lymphoma-like disease
        return int(rng.integers(r.max_lesions // 2, r.max_lesions + 1))
    return int(min(r.max_lesions, 1 + rng.geometric(0.35) - 1 + (rng.uniform() < 0.15) * rng.integers(2, 6)))


def _draw_lesion(rng: np.random.Generator, site: str, p: Patient, org: Organs, r: PhantomRanges) -> Lesion:
    """One lesion at a site: its place first, then its contrast and outline (in the historical order)."""
    u = rng.uniform
    d = loguniform(rng, *r.diameter_mm)
    if r.bulky_share > 0 and u() < r.bulky_share:
        d = loguniform(rng, *r.bulky_mm)
    side = 1 if u() < 0.5 else -1
    c, d, bg = _place(site, rng, side, d, p, org, r.size_cap)
    suv_max = min(r.suv_max[1], max(loguniform(rng, *r.suv_max), r.contrast_floor * bg + 0.5))
    if r.low_contrast_share > 0 and site in LOW_CONTRAST_SITES and u() < r.low_contrast_share:
        suv_max = bg * u(*r.low_contrast)  # barely above the organ or the marrow around it
    necrotic = bool(d > r.necrosis_above_mm and u() < r.necrosis_share)  # short-circuit: big lesions only
    core_frac, core_suv_frac = float(u(*r.core_frac)), float(u(*r.core_suv_frac))
    shape = LesionShape(
        aspect=_tuples(rng.uniform(0.65, 1.0, size=3)),
        rot=_tuples(rotation(rng)),
        lobes=int(rng.integers(0, 4)),
        lobe_dirs=_tuples(rng.normal(size=(3, 3))),
        lobe_sizes=_tuples(rng.uniform(*r.lobe_size, size=3)),
        bumps=_tuples(rng.normal(0, 1, size=(3, 3))),
        bump_phase=_tuples(rng.uniform(0, 6.283, size=3)),
        bump_amp=float(u(0.0, 0.25)),
    )
    contrast = LesionContrast(
        suv_max=float(suv_max),
        necrotic=necrotic,
        core_frac=core_frac,
        core_suv_frac=core_suv_frac,
        edge_frac=float(u(0.55, 0.9)),
        het=float(u(0.0, 0.25)),
        hu=float(u(20, 50)),
    )
    return Lesion(site, tuple(float(v) for v in c), float(d), shape, contrast)


def sample_lesions(rng: np.random.Generator, p: Patient, want: bool | None, count: int | None = None,
                   r: PhantomRanges = STANDARD) -> list[Lesion]:
    """Lesions at plausible sites (body-relative coordinates; converted to physical later), drawn from
    ``r``; exactly ``count`` when given (a benchmark's disease burden; the seeds' default draws are unchanged)."""
    n = _lesion_count(rng, want, r) if count is None else count
    if n == 0:
        return []
    org = organ_layout(p)
    names = list(r.sites)
    prob = np.array([r.sites[k] for k in names])
    prob /= prob.sum()
    favoured = rng.choice(names, size=2, p=prob)  # a patient's lesions tend to cluster in a few sites
    out = []
    for _ in range(n):
        site = str(favoured[rng.integers(2)]) if rng.uniform() < 0.5 else str(rng.choice(names, p=prob))
        out.append(_draw_lesion(rng, site, p, org, r))
    return out
