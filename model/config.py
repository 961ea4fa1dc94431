"""The one object that says how a checkpoint was built and how its input must be prepared.

It is saved inside every checkpoint this project writes (nnU-Net's "plans" idea), so a
checkpoint alone is enough to reproduce the preprocessing and the sliding-window settings.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

Stride = int | tuple[int, int, int]

#: How clicks become input channels (``model/guidance.py``).
GUIDANCE_KINDS = ("none", "gaussian", "disk", "edt")
#: autoPET's median voxel size (mm), the paper's target spacing.
AUTOPET_SPACING = (2.03642011, 2.03642011, 3.0)


def _as_tuple(value: Any) -> Any:
    """JSON gives lists; the config holds tuples (hashable, immutable)."""
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value


@dataclass(frozen=True)
class ModelConfig:
    """Network shape, preprocessing and sliding-window settings of one model."""

    # --- network (MONAI DynUNet) ---
    filters: tuple[int, ...] = (32, 64, 128, 256, 320, 320)
    kernel_size: tuple[int, ...] = (3, 3, 3, 3, 3, 3)
    strides: tuple[Stride, ...] = (1, 2, 2, 2, 2, (2, 2, 1))
    upsample_kernel_size: tuple[Stride, ...] = (2, 2, 2, 2, (2, 2, 1))
    norm_name: str = "instance"
    res_block: bool = True
    in_channels: int = 1
    out_channels: int = 2
    lesion_class: int = 1
    # --- preprocessing (PET only) ---
    spacing: tuple[float, float, float] = AUTOPET_SPACING
    percentiles: tuple[float, float] = (0.05, 99.95)
    # --- sliding window ---
    roi_size: tuple[int, int, int] = (128, 128, 128)
    overlap: float = 0.75
    blend_mode: str = "gaussian"
    sigma_scale: float = 0.125
    # --- ensemble ---
    vote: str = "majority"  # "majority" (the authors' rule) or "soft" (mean of softmax)
    # --- interactive guidance (model/guidance.py): clicks as two more input channels after the PET,
    # tumour then background (SW-FastEdit's and autoPET IV's baseline's order); "none": PET only ---
    guidance: str = "none"  # "gaussian", "disk" (the authors' default), "edt" (truncated distance), "none"
    guidance_sigma: float = 1.0  # gaussian and disk: the Gaussian's sigma in working-grid voxels (the authors': 1)
    guidance_radius: float = 5.0  # edt: the distance in working-grid voxels where the channel reaches 0
    # --- training crop (kept here so the preset is one object) ---
    crop_size: tuple[int, int, int] = (224, 224, 224)
    name: str = "paper"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.filters)
        if not (len(self.kernel_size) == len(self.strides) == n and len(self.upsample_kernel_size) == n - 1):
            raise ValueError(
                f"config '{self.name}': filters, kernel_size and strides need one entry per level "
                f"and upsample_kernel_size one fewer (got {n}, {len(self.kernel_size)}, "
                f"{len(self.strides)}, {len(self.upsample_kernel_size)})"
            )
        if self.out_channels != 2 or self.lesion_class not in (0, 1):
            raise ValueError(f"config '{self.name}': two output classes expected (background, lesion)")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"config '{self.name}': overlap must be in [0, 1), got {self.overlap}")
        if self.guidance not in GUIDANCE_KINDS:
            raise ValueError(f"config '{self.name}': guidance must be one of {GUIDANCE_KINDS}, got {self.guidance!r}")
        expected = 1 + (2 if self.interactive else 0)
        if self.in_channels != expected:
            what = "the PET and two click channels" if self.interactive else "the PET"
            raise ValueError(f"config '{self.name}': guidance {self.guidance!r} needs in_channels {expected} "
                             f"({what}), got {self.in_channels}")
        if self.guidance_sigma <= 0 or self.guidance_radius <= 0:
            raise ValueError(f"config '{self.name}': guidance_sigma and guidance_radius must be positive")
        if self.vote not in ("majority", "soft"):
            raise ValueError(f"config '{self.name}': vote must be 'majority' or 'soft', got {self.vote!r}")
        divisor = self.size_divisor
        for what, size in (("roi_size", self.roi_size), ("crop_size", self.crop_size)):
            if any(s % d for s, d in zip(size, divisor, strict=True)):
                raise ValueError(f"config '{self.name}': {what} {size} must be divisible by {divisor}")

    @property
    def interactive(self) -> bool:
        """Whether the network reads clicks (two guidance channels after the PET)."""
        return self.guidance != "none"

    def with_guidance(self, guidance: str, **changes: Any) -> ModelConfig:
        """The same network reading clicks (or not), with the input channels that takes."""
        return self.with_(guidance=guidance, in_channels=1 if guidance == "none" else 3, **changes)

    @property
    def size_divisor(self) -> tuple[int, int, int]:
        """Product of the strides per axis: window sides must be multiples of it."""
        out = [1, 1, 1]
        for s in self.strides:
            per_axis = (s, s, s) if isinstance(s, int) else s
            out = [a * b for a, b in zip(out, per_axis, strict=True)]
        return (out[0], out[1], out[2])

    def to_dict(self) -> dict[str, Any]:
        """The fields, without the click settings of a network that reads none: an automatic checkpoint's
        config reads as it did before they existed (older code loads it, runs resume)."""
        data = asdict(self)
        if not self.interactive:
            for name in ("guidance", "guidance_sigma", "guidance_radius"):
                data.pop(name)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        values = {k: (v if k == "extra" else _as_tuple(v)) for k, v in data.items()}
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))

    def same_network(self, other: ModelConfig) -> bool:
        """The same weights fit both and see the same preprocessed input: all but the training crop."""
        return self.with_(crop_size=other.crop_size).to_json() == other.to_json()

    def with_(self, **changes: Any) -> ModelConfig:
        return replace(self, **changes)


def paper_config() -> ModelConfig:
    """The authors' submitted network and inference settings."""
    return ModelConfig()


def demo_config() -> ModelConfig:
    """A 1.5 M-parameter variant that trains and runs on two CPU cores (4 mm voxels, 64^3 windows).

    Training crops are 96^3: at the training window's overlap 0.25 that is 2 x 2 x 2 windows of 64^3,
    as the authors' 224^3 crops hold 2 x 2 x 2 windows of 128^3 (112^3 would keep their 25 % overlap
    between windows but is no multiple of the network's stride of 32, which the whole-crop forward
    pass of ``--train-inferer simple`` needs).
    """
    return ModelConfig(
        filters=(8, 16, 32, 64, 64, 64),
        spacing=(4.0, 4.0, 4.0),
        roi_size=(64, 64, 64),
        overlap=0.5,
        crop_size=(96, 96, 96),
        name="demo",
    )


def demo_wide_config() -> ModelConfig:
    """The demo network with three times the parameters (4.5 M), all of them in the coarse levels.

    Filters 96/128/128 at 1/8, 1/16 and 1/32 of the window's resolution add capacity where the
    network decides which hot structure is a lesion, at little extra compute (on two cores: training
    epochs 12-19 s against 9-13 s, a whole phantom through ``process.py`` 45 s against 37 s).
    ``python -m training widen`` turns trained ``demo`` weights into this network's without changing
    what they compute.
    """
    return demo_config().with_(filters=(8, 16, 32, 96, 128, 128), name="demo-wide")


def tiny_config() -> ModelConfig:
    """A four-level network for unit tests: seconds per volume on one core."""
    return ModelConfig(
        filters=(4, 8, 16, 16),
        kernel_size=(3, 3, 3, 3),
        strides=(1, 2, 2, 2),
        upsample_kernel_size=(2, 2, 2),
        spacing=(4.0, 4.0, 4.0),
        roi_size=(32, 32, 32),
        overlap=0.5,
        crop_size=(32, 32, 32),
        name="tiny",
    )


def paper_interactive_config() -> ModelConfig:
    """The authors' interactive network (SW-FastEdit): the paper's, with a tumour and a background click
    channel, disks from a Gaussian of sigma 1 voxel (their defaults ``--sigma 1``, disks on)."""
    return paper_config().with_guidance("disk", name="paper-interactive")


def interactive_demo_config() -> ModelConfig:
    """The demo network reading clicks: ``demo-wide`` plus the two click channels, disks as the authors'."""
    return demo_wide_config().with_guidance("disk", name="interactive-demo")


PRESETS = {"paper": paper_config, "paper-interactive": paper_interactive_config, "demo": demo_config,
           "demo-wide": demo_wide_config, "interactive-demo": interactive_demo_config, "tiny": tiny_config}


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
