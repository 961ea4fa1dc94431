"""The scanner model: what turns the painted activity into a PET-looking image, plus CT noise.

Why noise before blur: reconstructed PET noise is spatially correlated and grows with the local
activity, so Poisson-like white noise is added to the activity and then blurred together with it by
the PSF; its level is corrected for the blur so that noise_level means the same for every grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .canvas import Canvas
from .params import ScannerModel


def gauss_gain(sigma_vox: Sequence[float]) -> float:
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


def apply_scanner(cv: Canvas, sm: ScannerModel, rng: np.random.Generator, spacing_zyx: Sequence[float]) -> None:
    """PSF blur + activity-dependent (Poisson-like), spatially correlated noise; CT noise (not in air)."""
    sig = [sm.psf_fwhm_mm / 2.3548 / s for s in spacing_zyx]
    gain = gauss_gain(sig)
    scale = np.float32(sm.noise_level / math.sqrt(gain))
    act = cv.act
    noise = rng.standard_normal(act.shape, dtype=np.float32)
    noise *= np.sqrt(act)
    noise *= scale
    act += noise
    del noise
    ndimage.gaussian_filter(act, sig, output=act, mode="nearest", truncate=3.0)
    np.maximum(act, 0, out=act)
    ctn = rng.standard_normal(act.shape, dtype=np.float32)
    ctn *= np.float32(sm.ct_noise_hu)
    ctn[cv.hu <= -999.5] = 0
    cv.hu += ctn
