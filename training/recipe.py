"""The paper's training recipe as MONAI components, plus the demo's options beyond it.

Everything that decides *how* a network is trained (not what it is: that is ``ModelConfig``) lives in
``TrainConfig``, so a run's checkpoint can record it and ``--resume`` can refuse a changed recipe.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceCELoss
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    Randomizable,
    RandRotate90d,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    SpatialPadd,
)

from model.config import ModelConfig
from training.augmentation import DEMO_AUGMENTATION

KEYS = ("pet", "label")
#: With organ supervision the organ map travels with them through every spatial transform.
ORGAN_KEY = "organs"
#: MONAI's axis labels for RAS (its default would read the codes in LPS terms).
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


TRAIN_INFERERS = ("sliding", "simple")
#: 90-degree rotation planes by name, as spatial axis pairs of the RAS-ordered crop
ROT90_PLANES = {"xy": (0, 1), "yz": (1, 2), "xz": (0, 2)}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, sampling and augmentation settings of one training run."""

    lr: float = 2e-4
    eta_min: float = 1e-8
    epochs: int = 800
    iters_per_epoch: int = 250  # optimiser steps per epoch and process; 0 = one pass over the training cases
    batch_size: int = 2  # crops per optimiser step and process
    samples_per_volume: int = 1  # crops cut from one loaded volume (RandCropByPosNegLabeld num_samples)
    pos: float = 0.6  # share of crops centred on a lesion voxel
    neg: float = 0.4  # share centred on any non-lesion voxel
    hot_neg: float = 0.0  # share centred on a hot non-lesion voxel (demo option; 0 = the paper's sampler)
    air: float = 0.0  # demo: share centred on any non-lesion voxel, air included (with body_threshold > 0)
    # share centred on a lesion voxel within ``adjacent_mm`` of hot non-lesion uptake beyond the lesion's own
    # rim (a lesion beside a kidney, the bladder, the heart: the demo ensemble's misses); 0 = off
    adjacent: float = 0.0
    adjacent_mm: float = 15.0
    hot_threshold: float = 0.3  # "hot" = percentile-scaled PET above this
    hot_balance: float = 1.0  # demo: a hot structure's share of hot crops grows as size**hot_balance (1 = per voxel)
    lesion_balance: float = 1.0  # a lesion's share of lesion crops grows as size**lesion_balance (1 = per voxel)
    body_threshold: float = 0.0  # demo: background crops centred where scaled PET > this (0 = anywhere)
    lesion_case_share: float = 0.0  # demo: share of volume draws from lesion cases (0 = uniform, the paper)
    dice_batch: bool = False  # demo: one Dice over the whole batch (nnU-Net's batch Dice), not one per crop
    flip_prob: float = 0.1
    rot90_prob: float = 0.1
    # planes of the 90-degree rotations, as RAS axis pairs "xy" (0, 1), "yz" (1, 2), "xz" (0, 2); the
    # authors rotate in "xy" only (RandRotate90d's default axes), which never swaps the 3 mm axis
    rot90_planes: str = "xy,yz,xz"
    amp: bool = True  # mixed precision: fp16 + GradScaler on CUDA, bf16 on CPUs with native bf16
    # the forward pass: "sliding" runs the crop through a SlidingWindowInferer (the model's ROI,
    # gaussian blending) and takes the loss on the stitched output, as the authors trained; "simple"
    # runs the network on the whole crop at once
    train_inferer: str = "simple"
    train_sw_overlap: float = 0.25
    train_sw_batch: int = 8  # windows per network call (the authors: min(windows, 8))
    # a study shorter than the crop gives a smaller crop (RandCropByPosNegLabeld allow_smaller, as the
    # authors) instead of one padded with zeros; needs one volume per step (crops of unequal size)
    allow_smaller: bool = False
    # demo: gamma, contrast, brightness, noise, blur and low-resolution augmentation of the PET crop
    # (training/augmentation.py, nnU-Net's defaults); the paper's recipe has none
    intensity_aug: bool = False
    # interactive networks (a config with guidance; training/clicks.py): rounds of simulated corrective
    # clicks per step, every step (the authors: 10) or drawn from 0..click_rounds; where a click goes
    click_rounds: int = 0
    click_rounds_random: bool = False
    click_place: str = "uniform"
    # warm start of an interactive network from an automatic one: the click channels' first weights as
    # this multiple of the PET channel's (tumour) and its negative (background); 0 = zeros
    click_init_gain: float = 0.0
    # organ supervision (training/organ_head.py): weight of the organ map's cross-entropy beside the
    # lesion DiceCE, and its classes (the phantoms' ORGAN_CLASSES); 0 = off, the paper's recipe
    organ_weight: float = 0.0
    organ_classes: int = 11
    # the organ head's own learning rate: it starts from random weights, and at a fine-tuning's lr 1e-4
    # it did not learn the organs in 1375 steps (docs/results/organ_supervision.md)
    organ_head_lr: float = 1e-2
    # decoder levels the head reads (training/organ_head.py): the demo's last level alone (8 channels)
    # did not carry the organs, the last three did
    organ_head_levels: int = 3
    val_every: int = 10
    val_max_cases: int = 0  # 0 = the whole validation fold
    seed: int = 0
    # cuDNN's deterministic kernels and no autotuning (the authors: set_determinism + cudnn.deterministic)
    deterministic: bool = False
    # a step whose loss is not finite: "skip" it (the demo's choice) or "stop" the run there with one line
    # naming the step and the case (the authors' TerminateOnNan)
    nonfinite: str = "skip"
    name: str = "paper"

    def __post_init__(self) -> None:
        total = self.pos + self.neg + self.hot_neg + self.air + self.adjacent
        if min(self.pos, self.neg, self.hot_neg, self.air, self.adjacent) < 0 or total <= 0:
            raise ValueError(f"crop ratios must be non-negative with a positive sum, got {self}")
        for name in ("hot_balance", "lesion_balance"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.lesion_balance < 1.0 and not self.uses_hot_sampler:
            raise ValueError("lesion_balance < 1 needs the demo's crop sampler (hot_neg or air > 0); "
                             "RandCropByPosNegLabeld draws lesion centres per voxel")
        if self.train_inferer not in TRAIN_INFERERS:
            raise ValueError(f"train_inferer must be one of {TRAIN_INFERERS}, got {self.train_inferer!r}")
        if not 0.0 <= self.train_sw_overlap < 1.0:
            raise ValueError(f"train_sw_overlap must be in [0, 1), got {self.train_sw_overlap}")
        if self.allow_smaller and self.batch_size != self.samples_per_volume:
            raise ValueError("allow_smaller needs one volume per step (batch_size == samples_per_volume): "
                             "crops of different studies may differ in size")
        if self.click_rounds < 0 or self.click_place not in ("uniform", "centre"):
            raise ValueError(f"click_rounds must be >= 0 and click_place uniform or centre, got "
                             f"{self.click_rounds}, {self.click_place!r}")
        if self.organ_head_lr <= 0 or self.organ_head_levels < 1:
            raise ValueError(f"organ_head_lr must be > 0 and organ_head_levels >= 1, got {self.organ_head_lr}, "
                             f"{self.organ_head_levels}")
        if self.organ_weight < 0 or self.organ_classes < 2:
            raise ValueError(f"organ_weight must be >= 0 and organ_classes >= 2, got {self.organ_weight}, "
                             f"{self.organ_classes}")
        if self.nonfinite not in ("skip", "stop"):
            raise ValueError(f"nonfinite must be skip or stop, got {self.nonfinite!r}")
        unknown = [p for p in self.rot90_planes.split(",") if p.strip() not in ROT90_PLANES]
        if unknown or not self.rot90_planes.strip():
            raise ValueError(f"rot90_planes: a comma list of {sorted(ROT90_PLANES)}, got {self.rot90_planes!r}")
        if self.iters_per_epoch < 0:
            raise ValueError(f"iters_per_epoch must be >= 0 (0 = one pass over the cases), got {self.iters_per_epoch}")
        if self.batch_size % self.samples_per_volume:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of samples_per_volume {self.samples_per_volume}"
            )

    @property
    def keys(self) -> list[str]:
        """The arrays every spatial transform moves together: PET and label, and the organ map when used."""
        return [*KEYS, ORGAN_KEY] if self.organ_weight > 0 else list(KEYS)

    @property
    def rot90_axes(self) -> list[tuple[int, int]]:
        return [ROT90_PLANES[p.strip()] for p in self.rot90_planes.split(",")]

    @property
    def uses_hot_sampler(self) -> bool:
        """Whether crops come from RandCropByPosHotNegd (the demo's sampler), not RandCropByPosNegLabeld."""
        return self.hot_neg > 0 or self.air > 0 or self.adjacent > 0

    @property
    def volumes_per_step(self) -> int:
        return self.batch_size // self.samples_per_volume

    def steps_per_epoch(self, n_cases: int, world: int = 1) -> int:
        """``iters_per_epoch``, or with 0 one pass over the training cases shared by ``world`` processes."""
        return self.iters_per_epoch or -(-n_cases // max(1, world * self.volumes_per_step))

    def differences(self, other: TrainConfig) -> list[str]:
        """Settings that differ from ``other``, as "name value (now other's value)" (why a resume is refused)."""
        return [
            f"{f.name} {getattr(self, f.name)!r} (now {getattr(other, f.name)!r})"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_(self, **changes: Any) -> TrainConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


class NonFiniteLoss(RuntimeError):
    """A run whose recipe stops at a non-finite loss (``TrainConfig.nonfinite == "stop"``) met one."""


def paper_train_config() -> TrainConfig:
    """Table 7 of the paper: Adam 2e-4, cosine over 800 epochs to 1e-8, 60/40 crops, flips and
    rot90 at 0.1, AMP; and where the authors' code (commit c377616) differs from or adds to the
    paper, the code: the forward pass through a 128^3 sliding window at overlap 0.25 over the 224^3
    crop (8 windows, stitched, then DiceCE; ``get_inferers`` in their api.py), an epoch as one pass
    over the training cases with one crop per step, studies shorter than the crop cropped smaller
    (``allow_smaller``), rotations in the axial plane only (``RandRotate90d``'s default axes), seed
    36 with cuDNN's deterministic kernels, and a run that stops at a non-finite loss
    (``TerminateOnNan``). docs/training.md lists every point against the authors'."""
    return TrainConfig(train_inferer="sliding", iters_per_epoch=0, batch_size=1, allow_smaller=True,
                       rot90_planes="xy", seed=36, deterministic=True, nonfinite="stop")


def demo_train_config() -> TrainConfig:
    """Two CPU cores: a shorter, faster schedule and hot non-lesion crops against false positives.

    Beyond the paper (see docs/training.md): 30 % of crops centred on hot physiological uptake,
    balanced over hot structures (a structure's share grows with the square root of its size, so the
    bladder, kidneys and heart are not drowned by the brain), 15 % on other body voxels and 10 %
    anywhere outside lesions (mostly air: without them the network never sees a window of pure air
    and may call one lesion), 70 % of volume draws from lesion cases, the Dice term computed over the
    batch (``dice_batch``: per crop, a lesion-free crop's foreground Dice is ~0 whatever the network
    does, so false positives there were taught by cross-entropy alone), Adam at 5e-4 because a fold
    gets a few thousand steps rather than 800 epochs, and bf16 autocast where the CPU has native bf16.
    ``epochs`` is a cap: ``--time-budget-min`` plans the cosine schedule's length from measured speed.
    The forward pass is the paper's, scaled: 64^3 windows at overlap 0.25 over the 96^3 crop.
    Each crop's PET is also perturbed in contrast, brightness, noise, sharpness and resolution
    (``intensity_aug``, training/augmentation.py), so that the network meets more than one
    generator's images.
    """
    return TrainConfig(
        lr=5e-4,
        epochs=40,
        iters_per_epoch=25,
        batch_size=2,
        samples_per_volume=1,
        pos=0.45,
        neg=0.15,
        hot_neg=0.3,
        air=0.1,
        hot_balance=0.5,
        body_threshold=0.01,
        lesion_case_share=0.7,
        dice_batch=True,
        amp=True,  # bf16 on CPUs with AMX / AVX-512 BF16 (2.8x faster steps), fp32 elsewhere
        train_inferer="sliding",  # 64^3 windows over the 96^3 crop: the paper's forward pass, scaled
        intensity_aug=True,
        val_every=8,
        val_max_cases=4,
        name="demo",
    )


def tiny_train_config() -> TrainConfig:
    return TrainConfig(
        epochs=2,
        iters_per_epoch=2,
        batch_size=2,
        samples_per_volume=2,
        amp=False,
        val_every=1,
        val_max_cases=2,
        name="tiny",
    )


def paper_interactive_train_config() -> TrainConfig:
    """The paper's recipe with the authors' interactive training (SW-FastEdit's defaults): 10 rounds of
    corrective clicks every step (``--max_train_interactions 10``, deepgrow probability 1), each at a
    random voxel of the current error. For a GPU."""
    return paper_train_config().with_(click_rounds=10, click_place="uniform", name="paper-interactive")


def interactive_demo_train_config() -> TrainConfig:
    """The demo recipe reading clicks, for two CPU cores: 0 to 3 rounds of corrective clicks per step
    (a quarter of the steps without any, so the network still segments alone; each round is one more
    forward pass), placed at the centre of the largest error as autoPET IV's evaluation places them;
    warm-started click weights at 2 x the PET's (``click_init_gain``)."""
    return demo_train_config().with_(click_rounds=3, click_rounds_random=True, click_place="centre",
                                     click_init_gain=2.0, name="interactive-demo")


TRAIN_PRESETS = {
    "paper": paper_train_config,
    "paper-interactive": paper_interactive_train_config,
    "demo": demo_train_config,
    "demo-wide": demo_train_config,  # the same recipe; only the network is wider
    "interactive-demo": interactive_demo_train_config,
    "tiny": tiny_train_config,
}


def train_preset(name: str) -> TrainConfig:
    try:
        return TRAIN_PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(TRAIN_PRESETS)}") from None


# ----------------------------------------------------------------------------------------------
# transforms
# ----------------------------------------------------------------------------------------------


def deterministic_transforms(config: ModelConfig) -> Compose:
    """Load -> channel first -> RAS -> target spacing -> per-volume percentile scaling (the cache point).

    The same steps, in the same order, as the container's preprocessing (``model/preprocessing.py``
    ``prepare``; ``tests/test_preprocessing.py`` checks that both give the same working volume, and
    ``benchmarks/monai_reference.py`` is the third copy); only PET and label are used.
    NaN and Inf voxels become 0 first, as in inference: one such voxel would otherwise make the
    percentiles NaN and the whole scaled PET NaN (then zero), with its labels still in place.
    """
    return Compose(
        [
            LoadImaged(keys=list(KEYS), image_only=True),
            EnsureChannelFirstd(keys=list(KEYS)),
            NonFiniteToZerod(keys="pet", keep_meta=True),  # before the percentiles, as inference's read_array
            Orientationd(keys=list(KEYS), axcodes="RAS", labels=RAS_LABELS),
            Spacingd(keys=list(KEYS), pixdim=config.spacing, mode=("bilinear", "nearest")),
            ScaleIntensityRangePercentilesd(
                keys="pet",
                lower=config.percentiles[0],
                upper=config.percentiles[1],
                b_min=0.0,
                b_max=1.0,
                clip=True,
            ),
        ]
    )


def organ_map_transforms(config: ModelConfig) -> Compose:
    """The organ map onto the working grid, the label's steps of ``deterministic_transforms`` (its grid
    is the label's, so it lands on the label's working grid; nearest neighbour keeps the classes)."""
    return Compose(
        [
            LoadImaged(keys=ORGAN_KEY, image_only=True),
            EnsureChannelFirstd(keys=ORGAN_KEY),
            Orientationd(keys=ORGAN_KEY, axcodes="RAS", labels=RAS_LABELS),
            Spacingd(keys=ORGAN_KEY, pixdim=config.spacing, mode="nearest"),
        ]
    )


class NonFiniteToZerod(MapTransform):
    """Replace NaN/Inf by 0; unless ``keep_meta``, also drop MONAI metadata (the last step of the
    training chain, after the paper's AMP NaN post-mortem; with ``keep_meta`` the first, on the raw PET)."""

    def __init__(self, keys: Any, keep_meta: bool = False, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.keep_meta = keep_meta

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            value = out[key] if self.keep_meta else torch.as_tensor(out[key])
            if not self.keep_meta and hasattr(value, "as_tensor"):
                value = value.as_tensor()
            out[key] = torch.nan_to_num(value, nan=0.0, posinf=0.0, neginf=0.0)
        return out


class RandCropByPosHotNegd(Randomizable, MapTransform):
    """Crops centred on a lesion, a hot non-lesion, a body or any non-lesion voxel, with given probabilities.

    Beyond the paper: on phantoms (and in autoPET) most false positives are physiological uptake
    (brain, heart, bladder); RandCropByPosNegLabeld rarely centres a crop there because hot organs are
    a tiny share of all background voxels. Reads only the crop from memory-mapped arrays.
    Expects ``fg_idx`` and ``hot_idx`` (flat indices) in the data, as ``CropDataset`` provides, and
    ``adj_idx`` (lesion voxels beside hot uptake) for an ``adjacent`` share; where a volume has none,
    that share centres on any lesion voxel. On a
    lesion-free volume the lesion share goes to hot voxels: such volumes teach what is *not* a lesion.
    Background (``neg``) centres need PET above ``body_threshold``; ``air`` centres may be any
    non-lesion voxel, so that some crops do land in air.
    """

    def __init__(
        self,
        keys: Sequence[str],
        label_key: str,
        spatial_size: Sequence[int],
        pos: float,
        hot: float,
        neg: float,
        num_samples: int = 1,
        air: float = 0.0,
        image_key: str = "pet",
        body_threshold: float = 0.0,
        adjacent: float = 0.0,
    ) -> None:
        MapTransform.__init__(self, keys)
        self.label_key = label_key
        self.spatial_size = tuple(int(s) for s in spatial_size)
        total = pos + hot + neg + air + adjacent
        self.probs = np.array([pos, hot, neg, air, adjacent], dtype=float) / total
        self.num_samples = num_samples
        self.image_key = image_key
        self.body_threshold = body_threshold

    def _center(self, data: Mapping[Hashable, Any], shape: tuple[int, ...]) -> tuple[int, ...]:
        kind = int(self.R.choice(len(self.probs), p=self.probs))
        fg, hot, adj = data.get("fg_idx"), data.get("hot_idx"), data.get("adj_idx")
        if kind == 4:  # beside hot uptake, where the volume has such lesion voxels; else any lesion voxel
            kind, fg = (0, adj) if adj is not None and len(adj) else (0, fg)
        if kind == 0 and (fg is None or not len(fg)):
            kind = 1
        pool = fg if kind == 0 else hot if kind == 1 else None
        if pool is not None and len(pool):
            flat = int(pool[self.R.randint(len(pool))])
            return tuple(int(v) for v in np.unravel_index(flat, shape))
        label, image = data[self.label_key], data[self.image_key]
        floor = -np.inf if kind == 3 else self.body_threshold  # only the air share may land in air
        for _ in range(50):  # rejection sampling: lesions are a tiny share, the body a large one
            center = tuple(int(self.R.randint(s)) for s in shape)
            if label[(0, *center)] == 0 and image[(0, *center)] > floor:
                return center
        return center

    def randomize(self, data: Any = None) -> None:  # interface of Randomizable; sampling happens per crop
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        shape = tuple(data[self.label_key].shape[1:])
        results = []
        for _ in range(self.num_samples):
            center = self._center(data, shape)
            slices = []
            pads = []
            for c, size, dim in zip(center, self.spatial_size, shape, strict=True):
                start = min(max(c - size // 2, 0), max(dim - size, 0))
                stop = min(start + size, dim)
                slices.append(slice(start, stop))
                pads.append((0, size - (stop - start)))
            out = {k: v for k, v in data.items() if k not in ("fg_idx", "hot_idx", "adj_idx")}
            for key in self.key_iterator(out):
                crop = np.asarray(data[key][(slice(None), *slices)])
                if any(p for _, p in pads):
                    crop = np.pad(crop, [(0, 0), *pads])
                out[key] = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))
            out["crop_center"] = torch.tensor(center)
            results.append(out)
        return results


def crop_transform(config: ModelConfig, train: TrainConfig) -> MapTransform:
    """The paper's RandCropByPosNegLabeld, or the demo's sampler when it has hot or air shares."""
    if train.uses_hot_sampler:
        return RandCropByPosHotNegd(
            keys=train.keys,
            label_key="label",
            spatial_size=config.crop_size,
            pos=train.pos,
            hot=train.hot_neg,
            neg=train.neg,
            air=train.air,
            num_samples=train.samples_per_volume,
            body_threshold=train.body_threshold,
            adjacent=train.adjacent,
        )
    return RandCropByPosNegLabeld(
        keys=train.keys,
        label_key="label",
        spatial_size=config.crop_size,
        pos=train.pos,
        neg=train.neg,
        num_samples=train.samples_per_volume,
        allow_smaller=train.allow_smaller,
    )


def random_transforms(config: ModelConfig, train: TrainConfig) -> Compose:
    """After the cache point: crop, flips on each axis, 90-degree rotations in the recipe's planes, the demo's
    intensity augmentation where enabled, NaN -> 0 last."""
    steps: list[Any] = []
    if not train.uses_hot_sampler and not train.allow_smaller:
        # a batch of several volumes needs crops of one size: pad studies shorter than the crop
        steps.append(SpatialPadd(keys=train.keys, spatial_size=config.crop_size))
    steps.append(crop_transform(config, train))
    steps += [RandFlipd(keys=train.keys, prob=train.flip_prob, spatial_axis=axis) for axis in range(3)]
    steps += [
        RandRotate90d(keys=train.keys, prob=train.rot90_prob, max_k=3, spatial_axes=axes)
        for axes in train.rot90_axes
    ]
    if train.intensity_aug:  # the image only, after the geometry: the label is never touched
        steps += DEMO_AUGMENTATION.transforms(keys="pet")
    steps.append(NonFiniteToZerod(keys=train.keys))
    return Compose(steps)


def transform_names(config: ModelConfig, train: TrainConfig) -> list[str]:
    """The whole pipeline as class names, in order (documented and tested)."""
    return (
        [type(t).__name__ for t in deterministic_transforms(config).transforms]
        + ["<cache>"]
        + [type(t).__name__ for t in random_transforms(config, train).transforms]
    )


def make_train_inferer(config: ModelConfig, train: TrainConfig) -> SlidingWindowInferer | None:
    """The training forward pass's inferer (None: the network on the whole crop).

    With "sliding" the crop is cut into the model's ROI-sized windows at ``train_sw_overlap``,
    each window goes through the network and the gaussian-weighted windows are stitched; the loss
    is taken on the stitched output, so instance-norm statistics and context are those of a
    window, as at inference. Gradients flow through the stitching into every window.
    """
    if train.train_inferer == "simple":
        return None
    return SlidingWindowInferer(roi_size=config.roi_size, sw_batch_size=train.train_sw_batch,
                                overlap=train.train_sw_overlap, mode=config.blend_mode,
                                sigma_scale=config.sigma_scale)


# ----------------------------------------------------------------------------------------------
# loss, optimiser, schedule
# ----------------------------------------------------------------------------------------------


def make_loss(train: TrainConfig) -> DiceCELoss:
    """The paper's DiceCE; ``train.dice_batch`` sums the Dice over the batch instead of per crop.

    Per crop (the paper), a crop without lesion has a foreground Dice of smooth/(sum p^2 + smooth),
    about 0 for any non-zero softmax, so its Dice term is constant and only cross-entropy (averaged
    over the crop's quarter-million voxels) pushes its false positives down. Over the batch, those
    voxels enter the denominator of a Dice that a lesion crop in the same batch makes meaningful.
    """
    return DiceCELoss(
        to_onehot_y=True, softmax=True, squared_pred=True, include_background=True, batch=train.dice_batch
    )


def make_optimizer(params: Any, train: TrainConfig, organ_head: Any = None) -> torch.optim.Adam:
    """Adam at ``train.lr``; an ``organ_head``'s parameters (a fresh head) in a group of their own at
    ``train.organ_head_lr``."""
    if organ_head is None:
        return torch.optim.Adam(params, lr=train.lr)
    return torch.optim.Adam([{"params": list(params)}, {"params": list(organ_head), "lr": train.organ_head_lr}],
                            lr=train.lr)


def make_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine from lr to eta_min over the planned epochs, stepped once per epoch."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(train.epochs, 1), eta_min=train.eta_min)
