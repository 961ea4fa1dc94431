"""The ranges a phantom's random values are drawn from, as named profiles.

Why profiles: a model trained on one generator's ranges meets other bodies, lesions and scanners
first. ``standard`` is the historical generator (every seed's phantom is unchanged, the shipped
weights' training and held-out data); ``wide`` is what the demo weights now train on (bulky and
confluent lesions with necrotic centres, low-contrast lesions in liver, spleen and bone, lesions
touching the kidneys, spine, bladder, heart and brain, wider bodies, uptake, scanners and SUV
calibration); ``shifted`` lies outside ``wide`` on purpose and makes a held-out set that no
training run has seen the like of (docs/phantoms.md lists every range side by side).

A range is ``(low, high)``; draws keep the order of sampling.py, so ``standard`` gives exactly the
numbers the generator gave before profiles existed (tests/test_phantoms.py pins them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

Span = tuple[float, float]

#: lesion site: relative frequency (the standard profile's table; wide and shifted add sites)
STANDARD_SITES = {
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

#: wide: every hot neighbour and every organ site more often, plus the spine's and the brain's surface
WIDE_SITES = {
    **STANDARD_SITES,
    "liver": 1.2,
    "spleen": 0.5,
    "bone_spine": 0.9,
    "bone_pelvis": 0.6,
    "near_bladder": 0.8,
    "near_kidney": 0.8,
    "near_heart": 0.6,
    "near_spine": 0.7,
    "near_brain": 0.4,
}

#: sites whose lesions may be of low contrast (the organ's or the marrow's uptake is the background)
LOW_CONTRAST_SITES = ("liver", "spleen", "bone_spine", "bone_pelvis", "bone_femur")


@dataclass(frozen=True)
class PhantomRanges:
    """Every range that sampling.py draws from; the defaults are the standard profile."""

    name: str = "standard"
    # body
    height_scale: Span = (0.9, 1.1)
    width_mm: Span = (140.0, 215.0)  # torso half width from slim to obese (before a N(0, 8) mm jitter)
    # uptake (SUV)
    brain: Span = (6.0, 12.0)
    liver: Span = (1.5, 3.0)
    bladder: Span = (5.0, 40.0)  # log-uniform
    bladder_semi_mm: Span = (18.0, 65.0)  # left-right semi-axis
    bladder_semi_ap_mm: Span = (16.0, 50.0)  # front-back and head-foot semi-axes
    kidney: Span = (2.0, 7.0)
    urine_kidney: Span = (3.0, 30.0)  # log-uniform
    # scanner
    psf_fwhm_mm: Span = (5.0, 8.0)
    noise_level: Span = (0.12, 0.3)
    suv_calibration: Span = (1.0, 1.0)  # every SUV times this (weight, dose or timing off); 1 = exact
    # lesions
    max_lesions: int = 10
    many_lesions_share: float = 0.0  # share of lesion patients with max_lesions // 2 .. max_lesions lesions
    diameter_mm: Span = (4.0, 60.0)  # log-uniform
    bulky_share: float = 0.0  # share of lesions drawn from bulky_mm instead
    bulky_mm: Span = (60.0, 130.0)
    size_cap: float = 1.0  # the per-site caps on the diameter (node stations, organs, bone) times this
    suv_max: Span = (2.5, 25.0)  # log-uniform, then at least contrast_floor x background + 0.5
    contrast_floor: float = 2.0
    low_contrast_share: float = 0.0  # share of lesions at LOW_CONTRAST_SITES drawn at low_contrast x background
    low_contrast: Span = (1.3, 2.0)
    necrosis_above_mm: float = 25.0
    necrosis_share: float = 0.5
    core_frac: Span = (0.3, 0.5)
    core_suv_frac: Span = (0.15, 0.4)
    lobe_size: Span = (0.4, 0.75)
    sites: dict[str, float] = field(default_factory=lambda: dict(STANDARD_SITES))


STANDARD = PhantomRanges()

WIDE = replace(
    STANDARD,
    name="wide",
    height_scale=(0.85, 1.15),
    width_mm=(125.0, 230.0),
    brain=(4.0, 15.0),
    liver=(1.2, 3.5),
    bladder=(3.0, 80.0),
    bladder_semi_mm=(15.0, 80.0),
    bladder_semi_ap_mm=(14.0, 65.0),
    kidney=(2.0, 10.0),
    urine_kidney=(3.0, 60.0),
    psf_fwhm_mm=(4.0, 9.5),
    noise_level=(0.08, 0.45),
    suv_calibration=(0.75, 1.3),
    max_lesions=20,
    many_lesions_share=0.1,
    diameter_mm=(4.0, 80.0),
    bulky_share=0.12,
    bulky_mm=(60.0, 120.0),
    size_cap=2.5,
    suv_max=(1.8, 30.0),
    contrast_floor=1.4,
    low_contrast_share=0.35,
    low_contrast=(1.3, 2.2),
    necrosis_above_mm=20.0,
    necrosis_share=0.6,
    core_frac=(0.3, 0.65),
    core_suv_frac=(0.05, 0.4),
    lobe_size=(0.4, 0.95),
    sites=dict(WIDE_SITES),
)

#: outside WIDE on purpose: a sharper, noisier scanner, off calibration, bigger bodies and bladders,
#: hotter brains and urine, larger and fainter lesions, more of them
SHIFTED = replace(
    WIDE,
    name="shifted",
    height_scale=(1.15, 1.22),
    width_mm=(230.0, 260.0),
    brain=(15.0, 20.0),
    bladder=(80.0, 120.0),
    bladder_semi_mm=(80.0, 95.0),
    bladder_semi_ap_mm=(65.0, 75.0),
    kidney=(10.0, 13.0),
    urine_kidney=(60.0, 100.0),
    psf_fwhm_mm=(2.5, 4.0),
    noise_level=(0.45, 0.6),
    suv_calibration=(1.3, 1.6),
    max_lesions=24,
    many_lesions_share=0.25,
    diameter_mm=(8.0, 80.0),
    bulky_share=0.2,
    bulky_mm=(120.0, 140.0),
    size_cap=3.0,
    low_contrast_share=0.5,
    low_contrast=(1.15, 1.3),
)

PROFILES = {p.name: p for p in (STANDARD, WIDE, SHIFTED)}


def phantom_ranges(name: str | PhantomRanges) -> PhantomRanges:
    """A profile by name (``standard``, ``wide``, ``shifted``), or the ranges given."""
    if isinstance(name, PhantomRanges):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown phantom ranges {name!r}; choose one of {sorted(PROFILES)}") from None
