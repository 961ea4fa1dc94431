"""The demo presets' intensity augmentation: each transform does what it says to the PET, never to the label.

References are independent: numpy formulas for brightness, contrast and gamma, scipy's Gaussian
filter for the blur, a nearest/trilinear resize written with torch for the low resolution, and
the sample statistics of the added noise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from model.config import preset
from training.augmentation import DEMO_AUGMENTATION, IntensityAugmentation
from training.recipe import random_transforms, train_preset, transform_names

NAMES = ("noise", "blur", "brightness", "contrast", "low_res", "gamma")


def _crop(seed: int = 0, size: int = 32) -> dict[str, torch.Tensor]:
    """A percentile-scaled-looking PET crop (0..1, a hot blob on a textured body) and its label."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:size, :size, :size].astype(np.float32)
    r2 = (x - 16) ** 2 + (y - 14) ** 2 + (z - 18) ** 2
    pet = 0.08 + 0.02 * rng.random((size, size, size), dtype=np.float32) + 0.8 * np.exp(-r2 / 20).astype(np.float32)
    pet[:, :, :4] = 0.0  # some air
    label = (r2 <= 16).astype(np.float32)
    return {"pet": torch.from_numpy(pet[None].copy()), "label": torch.from_numpy(label[None].copy())}


def _apply(name: str, data: dict, seed: int = 3) -> tuple[dict, object]:
    (transform,) = DEMO_AUGMENTATION.only(name).transforms()
    transform.set_random_state(seed)
    out = transform({k: v.clone() for k, v in data.items()})
    return out, transform


@pytest.mark.parametrize("name", NAMES)
def test_each_transform_changes_the_pet_and_never_the_label(name: str) -> None:
    data = _crop()
    out, _ = _apply(name, data)
    assert torch.equal(torch.as_tensor(out["label"]), data["label"])
    pet = torch.as_tensor(out["pet"])
    assert pet.shape == data["pet"].shape and pet.dtype == torch.float32
    assert not torch.allclose(pet, data["pet"])


def test_brightness_multiplies_every_voxel_by_one_factor_in_range() -> None:
    data = _crop()
    out, _ = _apply("brightness", data)
    before, after = data["pet"].numpy(), np.asarray(out["pet"])
    body = before > 0
    ratios = after[body] / before[body]
    assert np.ptp(ratios) < 1e-5
    assert DEMO_AUGMENTATION.brightness[0] <= ratios[0] <= DEMO_AUGMENTATION.brightness[1]
    assert np.all(after[~body] == 0)


def test_contrast_scales_around_the_mean_and_keeps_the_range() -> None:
    data = _crop()
    for seed in range(6):
        out, _ = _apply("contrast", data, seed)
        before, after = data["pet"].numpy().astype(np.float64), np.asarray(out["pet"], np.float64)
        mean = before.mean()
        # the factor the transform drew, from a voxel inside the range's bounds
        inside = (after > before.min() + 1e-4) & (after < before.max() - 1e-4) & (np.abs(before - mean) > 0.05)
        factor = np.median((after[inside] - mean) / (before[inside] - mean))
        assert DEMO_AUGMENTATION.contrast[0] - 1e-4 <= factor <= DEMO_AUGMENTATION.contrast[1] + 1e-4
        expected = np.clip((before - mean) * factor + mean, before.min(), before.max())
        np.testing.assert_allclose(after, expected, atol=1e-5)


def test_gamma_follows_the_power_law_with_mean_and_std_restored() -> None:
    data = _crop()
    before = data["pet"].numpy().astype(np.float64)
    lo, span = before.min(), np.ptp(before)
    for seed in range(4):
        out, transform = _apply("gamma", data, seed)
        after = np.asarray(out["pet"], np.float64)
        gamma = transform.adjuster.gamma_value
        assert DEMO_AUGMENTATION.gamma[0] <= gamma <= DEMO_AUGMENTATION.gamma[1]
        powered = ((before - lo) / span) ** gamma * span + lo
        expected = (powered - powered.mean()) / powered.std() * before.std() + before.mean()
        np.testing.assert_allclose(after, expected, atol=1e-4)
        assert abs(after.mean() - before.mean()) < 1e-5 and abs(after.std() - before.std()) < 1e-5


def test_blur_equals_scipys_gaussian_with_the_drawn_sigmas() -> None:
    data = _crop()
    out, transform = _apply("blur", data)
    sigmas = (transform.rand_smooth.x, transform.rand_smooth.y, transform.rand_smooth.z)
    lo, hi = DEMO_AUGMENTATION.blur_sigma
    assert all(lo <= s <= hi for s in sigmas)
    expected = ndimage.gaussian_filter(data["pet"][0].numpy().astype(np.float64), sigmas, mode="constant",
                                       truncate=4.0)
    after = np.asarray(out["pet"][0], np.float64)
    # MONAI uses an erf-sampled kernel; compare away from the border where both see the same voxels
    inner = (slice(6, -6),) * 3
    np.testing.assert_allclose(after[inner], expected[inner], atol=0.02 * float(expected.max()))
    assert after.max() < data["pet"].max()  # the hot spot is spread out


def test_noise_is_additive_zero_mean_with_std_in_range() -> None:
    data = _crop(size=48)
    out, _ = _apply("noise", data, seed=11)
    diff = np.asarray(out["pet"], np.float64) - data["pet"].numpy()
    assert abs(diff.mean()) < 3 * diff.std() / np.sqrt(diff.size)
    assert 0 < diff.std() <= DEMO_AUGMENTATION.noise_std * 1.01


def test_low_resolution_is_nearest_down_and_trilinear_up() -> None:
    data = _crop()
    out, transform = _apply("low_res", data)
    zoom = transform.sim_lowres_tfm.zoom_factor
    lo, hi = DEMO_AUGMENTATION.low_res_zoom
    assert lo <= zoom <= hi
    size = data["pet"].shape[1:]
    small = [int(round(s * zoom)) for s in size]
    down = torch.nn.functional.interpolate(data["pet"][None], size=small, mode="nearest")
    up = torch.nn.functional.interpolate(down, size=size, mode="trilinear", align_corners=False)[0]
    np.testing.assert_allclose(np.asarray(out["pet"]), up.numpy(), atol=1e-5)


def test_only_and_always_select_transforms() -> None:
    assert len(DEMO_AUGMENTATION.always().transforms()) == 6
    assert all(t.prob == 1.0 for t in DEMO_AUGMENTATION.always().transforms())
    assert len(IntensityAugmentation(noise_prob=0, blur_prob=0).transforms()) == 4
    with pytest.raises(ValueError, match="unknown transform"):
        DEMO_AUGMENTATION.only("rotation")


def test_demo_presets_augment_and_the_paper_does_not() -> None:
    paper = transform_names(preset("paper"), train_preset("paper"))
    assert not any(name in paper for name in ("RandGaussianNoised", "RandAdjustContrastd"))
    for name in ("demo", "demo-wide"):
        assert train_preset(name).intensity_aug
        names = transform_names(preset(name), train_preset(name))
        tail = names[names.index("RandRotate90d") + 3:]
        assert tail == ["RandGaussianNoised", "RandGaussianSmoothd", "RandScaleIntensityd",
                        "RandScaleIntensityFixedMeand", "RandSimulateLowResolutiond", "RandAdjustContrastd",
                        "NonFiniteToZerod"]
    assert not train_preset("demo").with_(intensity_aug=False).intensity_aug


def test_a_demo_training_crop_keeps_its_label_under_every_augmentation() -> None:
    """The whole random chain of the demo preset, crop included: the label crop equals the label
    cut from the volume at the crop's centre, flipped and rotated as the PET was."""
    config, train = preset("tiny"), train_preset("demo").with_(flip_prob=0.0, rot90_prob=0.0, samples_per_volume=1)
    chain = random_transforms(config, train)
    always = DEMO_AUGMENTATION.always().transforms()
    chain.transforms = (*chain.transforms[:-7], *always, chain.transforms[-1])
    chain.set_random_state(5)
    volume = _crop(size=48)
    label = volume["label"].numpy()
    fg = np.flatnonzero(label[0])
    hot = np.flatnonzero(volume["pet"][0].numpy().ravel() > 0.3)
    for _ in range(4):
        (crop,) = chain({"pet": volume["pet"].numpy(), "label": label, "fg_idx": fg, "hot_idx": hot})
        centre = [int(c) for c in crop["crop_center"]]
        starts = [min(max(c - s // 2, 0), max(d - s, 0)) for c, s, d in zip(centre, config.crop_size, label.shape[1:],
                                                                            strict=True)]
        expected = label[(0, *[slice(a, a + s) for a, s in zip(starts, config.crop_size, strict=True)])]
        assert np.array_equal(np.asarray(crop["label"][0]), expected)
