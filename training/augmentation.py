"""Intensity and resolution augmentation of the PET crop: the demo presets' addition to the paper's recipe.

Why: the paper's recipe augments geometry only (flips, 90-degree rotations). A network trained on one
generator's phantoms then fails on scans whose contrast, noise or resolution it has not seen
(the generalisation issue: bulky lesions reduced to their hot core, moderately hot lesions beside
the kidneys missed). nnU-Net's default training perturbs exactly these; the ranges and
probabilities below are nnU-Net's defaults, with the noise scaled to this pipeline's PET, which is
percentile-scaled to 0..1 (body 0.02-0.2) rather than z-scored.

Only the image is touched: the label of every crop stays where it is, voxel for voxel
(tests/test_augmentation.py). The ``paper`` preset does not use any of this.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from monai.transforms import (
    RandAdjustContrastd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandSimulateLowResolutiond,
)


@dataclass(frozen=True)
class IntensityAugmentation:
    """Probabilities (per crop) and ranges of the six image transforms, applied in this order."""

    noise_prob: float = 0.1
    noise_std: float = 0.03  # additive Gaussian noise, std drawn uniformly from 0 to this (scaled PET)
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)  # Gaussian blur, sigma in voxels drawn per axis
    brightness_prob: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)  # multiply every voxel by one factor
    contrast_prob: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)  # scale around the crop's mean, clipped to its old range
    low_res_prob: float = 0.25
    low_res_zoom: tuple[float, float] = (0.5, 1.0)  # down-sample (nearest) by this, up-sample (trilinear) back
    gamma_prob: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)  # ((x - min) / range) ** gamma, then mean and std restored

    def always(self) -> IntensityAugmentation:
        """Every transform with probability 1 (for tests and pictures)."""
        return replace(self, **{f.name: 1.0 for f in fields(self) if f.name.endswith("_prob")})

    def only(self, name: str) -> IntensityAugmentation:
        """Just one transform (``noise``, ``blur``, ``brightness``, ``contrast``, ``low_res``, ``gamma``), always."""
        probs = [f.name for f in fields(self) if f.name.endswith("_prob")]
        if f"{name}_prob" not in probs:
            raise ValueError(f"unknown transform {name!r}; choose one of {[p[:-5] for p in probs]}")
        return replace(self, **{p: 1.0 if p == f"{name}_prob" else 0.0 for p in probs})

    def transforms(self, keys: str = "pet") -> list[Any]:
        """The MONAI transforms on ``keys`` (the image only), skipping those with probability 0."""
        steps: list[Any] = []
        if self.noise_prob > 0:
            steps.append(RandGaussianNoised(keys=keys, prob=self.noise_prob, mean=0.0, std=self.noise_std,
                                            sample_std=True))
        if self.blur_prob > 0:
            steps.append(RandGaussianSmoothd(keys=keys, prob=self.blur_prob, sigma_x=self.blur_sigma,
                                             sigma_y=self.blur_sigma, sigma_z=self.blur_sigma))
        if self.brightness_prob > 0:
            lo, hi = self.brightness
            steps.append(RandScaleIntensityd(keys=keys, prob=self.brightness_prob, factors=(lo - 1.0, hi - 1.0)))
        if self.contrast_prob > 0:
            lo, hi = self.contrast
            steps.append(RandScaleIntensityFixedMeand(keys=keys, prob=self.contrast_prob,
                                                      factors=(lo - 1.0, hi - 1.0), fixed_mean=True,
                                                      preserve_range=True))
        if self.low_res_prob > 0:
            steps.append(RandSimulateLowResolutiond(keys=keys, prob=self.low_res_prob, zoom_range=self.low_res_zoom,
                                                    downsample_mode="nearest", upsample_mode="trilinear"))
        if self.gamma_prob > 0:
            steps.append(RandAdjustContrastd(keys=keys, prob=self.gamma_prob, gamma=self.gamma, retain_stats=True))
        return steps


#: the demo presets' augmentation (nnU-Net's defaults, noise scaled to percentile-scaled PET)
DEMO_AUGMENTATION = IntensityAugmentation()
