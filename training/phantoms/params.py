"""The random parameters of one phantom: a patient (build, uptake, CT numbers, scanner) and its lesions.

Why typed groups: the renderer reads about a hundred of these values, and a misspelt key in a plain
dict only fails when that line runs. Frozen dataclasses make every name checkable and keep a drawn
patient from being changed half-way through rendering. The values are drawn in sampling.py; nothing
here touches a random generator.

Distances are mm, uptake SUV, CT numbers HU. Positions marked "body" are body-relative (x, y, t):
x = patient left of the body axis, y = posterior of it, t = mm below the vertex (see anatomy.BodyFrame).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

Vec3 = tuple[float, float, float]
Matrix3 = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]


@dataclass(frozen=True)
class Build:
    """Body size and pose: what makes one patient look slim or obese, arms up or down, on a couch or not."""

    height_scale: float  # multiplies every length along z (t)
    half_width_mm: float  # torso half width at the chest ("A" in the layout formulas)
    half_depth_mm: float  # torso half depth ("B")
    fat_mm: float  # subcutaneous fat thickness over the torso
    belly: float  # abdominal girth relative to the chest
    hips: float  # pelvic width relative to the chest
    centre_xy_mm: tuple[float, float]  # where the body axis sits in the scanner (x, y)
    head_scale: float
    arms: str  # "down", "up" or "none" (out of the field of view)
    couch: bool  # a scanner couch under the patient (CT only)


@dataclass(frozen=True)
class Uptake:
    """Background SUV of each tissue; organs with variable physiology (heart, bladder, bowel) vary widely."""

    brain: float
    liver: float
    blood: float
    muscle: float
    lung: float
    marrow: float
    myocardium: float
    bladder: float
    kidney: float  # cortex
    urine_kidney: float  # renal pelvis and ureters
    stomach: float
    salivary: float
    tonsil: float
    thyroid: float
    brown_fat: float
    fat: float  # a fraction of muscle
    spleen: float  # follows the liver


@dataclass(frozen=True)
class CtNumbers:
    """HU of the tissues that the CT distinguishes (soft is drawn but not painted; kept for the draw order)."""

    lung: float
    fat: float
    muscle: float
    soft: float
    liver: float
    blood: float
    cortical: float
    cancellous: float


@dataclass(frozen=True)
class Variants:
    """Physiological findings that only some patients have, the classic false positives of FDG PET."""

    bladder_semi_mm: Vec3  # bladder filling
    brown_fat: bool
    bowel_level: float  # 0 quiet .. 1 very hot bowel
    ureters: bool  # urine visible in the ureters
    injection_site: bool  # paravenous tracer at the injection site


@dataclass(frozen=True)
class ScannerModel:
    """Resolution and noise of the PET, noise of the CT, and the amplitude of physiological texture."""

    psf_fwhm_mm: float
    noise_level: float  # relative noise; grows with body size
    texture_amp: float
    ct_noise_hu: float


@dataclass(frozen=True)
class Patient:
    """Everything drawn for one patient; the renderer turns it into voxels on any grid."""

    build: Build
    suv: Uptake
    hu: CtNumbers
    variants: Variants
    scanner: ScannerModel
    fov_t_mm: tuple[float, float]  # scan range (t at the first and the last slice)
    jitter: tuple[float, ...]  # 32 unit normals: small organ position jitters

    def info(self) -> dict[str, Any]:
        """Flat ground-truth record (the keys of info["body"]): suv_* and hu_* prefixed, jitter left out."""
        out: dict[str, Any] = dict(asdict(self.build))
        out.update({f"suv_{k}": v for k, v in asdict(self.suv).items()})
        out.update(asdict(self.variants))
        out.update({f"hu_{k}": v for k, v in asdict(self.hu).items()})
        out.update(asdict(self.scanner))
        out["fov_t_mm"] = self.fov_t_mm
        return out


@dataclass(frozen=True)
class LesionShape:
    """Outline of a lesion: a rotated, squashed, bumpy ellipsoid united with up to three lobes."""

    aspect: Vec3  # relative semi-axes (the largest becomes the radius)
    rot: Matrix3
    lobes: int  # 0-3
    lobe_dirs: Matrix3  # one direction per lobe (unnormalised)
    lobe_sizes: Vec3  # lobe size relative to the main body
    bumps: Matrix3  # three wave vectors that modulate the surface
    bump_phase: Vec3
    bump_amp: float


@dataclass(frozen=True)
class LesionContrast:
    """How a lesion looks in PET (peak, profile, necrosis, texture) and in CT."""

    suv_max: float
    necrotic: bool
    core_frac: float  # radius of the necrotic core relative to the lesion
    core_suv_frac: float  # core uptake relative to suv_max
    edge_frac: float  # uptake at the rim relative to the centre
    het: float  # amplitude of the internal texture
    hu: float  # soft-tissue lesions only


@dataclass(frozen=True)
class Lesion:
    """One lesion: where (site and body-relative centre), how big, its outline and its contrast."""

    site: str
    centre_body: Vec3
    diameter_mm: float
    shape: LesionShape
    contrast: LesionContrast
