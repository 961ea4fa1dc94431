"""Sliding-window scoring: MONAI's inferer over a volume, every window cut once for all networks.

Per network only the lesion-minus-background logit is kept: with two classes softmax-argmax is its
sign, and gaussian blending and linear resampling are linear, so they commute with the
difference and nothing the vote needs is lost. On CUDA the networks run under fp16 autocast and
the blend is accumulated in fp32.

"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer

from .config import ModelConfig

log = logging.getLogger(__name__)


def parse_axes(text: str) -> tuple[int, ...]:
    """``"012"`` -> (0, 1, 2): the axes a command line names for test-time mirroring."""
    if any(c not in "012" for c in text):
        raise ValueError(f"--tta takes axes among 0, 1, 2 (e.g. 012), got {text!r}")
    return tuple(sorted({int(c) for c in text}))


def mirror_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every combination of flips over ``axes`` (spatial 0-2), the identity first: nnU-Net's mirroring."""
    return [combo for k in range(len(axes) + 1) for combo in itertools.combinations(sorted(axes), k)]


def score_function(networks: Sequence[torch.nn.Module], lesion_class: int, amp: bool,
                   tta_axes: Sequence[int] = ()) -> Callable[[torch.Tensor], torch.Tensor]:
    """Batch of windows (B, 1, X, Y, Z) -> (B, M, X, Y, Z) lesion-minus-background logits.

    With ``tta_axes`` each network's logits are averaged over the window flipped on every
    combination of those axes (flipped back before averaging), before the blend.
    """
    other = 1 - lesion_class
    mirrors = mirror_sets(tta_axes)

    def scores(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            out = []
            for net in networks:
                total = None
                for flip in mirrors:
                    dims = [2 + a for a in flip]
                    logits = net(torch.flip(batch, dims) if dims else batch)
                    diff = (logits[:, lesion_class] - logits[:, other]).float()
                    diff = torch.flip(diff, [d - 1 for d in dims]) if dims else diff
                    total = diff if total is None else total + diff
                out.append(total / len(mirrors))
        return torch.stack(out, dim=1)

    return scores


def make_inferer(config: ModelConfig, sw_batch_size: int, device: str | torch.device = "cpu"
                 ) -> SlidingWindowInferer:
    """MONAI's inferer with the gaussian map built once and reused for every volume."""
    return SlidingWindowInferer(
        roi_size=config.roi_size, sw_batch_size=sw_batch_size, overlap=config.overlap,
        mode=config.blend_mode, sigma_scale=config.sigma_scale, padding_mode="constant", cval=0.0,
        sw_device=torch.device(device), device=torch.device(device), cache_roi_weight_map=True,
    )


@dataclass(frozen=True)
class Attempt:
    """One way to run the windows: how many per network call, where they run, where they are stitched."""

    sw_batch_size: int
    sw_device: torch.device
    device: torch.device

    def describe(self) -> str:
        where = ("on the CPU" if self.sw_device.type == "cpu" else
                 "stitched on the CPU" if self.device.type == "cpu" else f"on {self.sw_device}")
        return f"{self.sw_batch_size} window(s) per call {where}"


def out_of_memory_attempts(device: torch.device, sw_batch_size: int) -> list[Attempt]:
    """What to try, in order, when the network step runs out of memory: the window batch halved down
    to 1, then (on a GPU) the stitching on the CPU, then everything on the CPU. Same windows and blend
    each time, so the same mask (the CPU runs in fp32 where the GPU ran fp16)."""
    attempts, batch = [], max(1, sw_batch_size)
    while True:
        attempts.append(Attempt(batch, device, device))
        if batch == 1:
            break
        batch = max(1, batch // 2)
    if device.type == "cuda":
        cpu = torch.device("cpu")
        attempts += [Attempt(1, device, cpu), Attempt(1, cpu, cpu)]
    return attempts


@torch.inference_mode()
def sliding_window_scores(volume: torch.Tensor | np.ndarray, networks: Sequence[torch.nn.Module],
                          config: ModelConfig, device: str | torch.device = "cpu", sw_batch_size: int = 4,
                          inferer: SlidingWindowInferer | None = None, tta_axes: Sequence[int] = (),
                          fallbacks: list[str] | None = None) -> torch.Tensor:
    """Per-network lesion-minus-background logits over a preprocessed (X, Y, Z) volume.

    Returns (M, X, Y, Z) float32 on the CPU; a positive score means that network's argmax is
    lesion. When the network step runs out of memory the volume is redone the next way of
    ``out_of_memory_attempts``; each step down is logged and appended to ``fallbacks``.
    """
    device = torch.device(device)
    tensor = torch.as_tensor(volume, dtype=torch.float32)
    while tensor.dim() < 5:
        tensor = tensor.unsqueeze(0)
    inferer = inferer or make_inferer(config, sw_batch_size, device)
    attempts = out_of_memory_attempts(device, getattr(inferer, "sw_batch_size", sw_batch_size))
    for i, attempt in enumerate(attempts):
        nets = networks if attempt.sw_device == device else [copy.deepcopy(n).to(attempt.sw_device) for n in networks]
        fn = score_function(nets, config.lesion_class, attempt.sw_device.type == "cuda", tta_axes)
        runner = copy.copy(inferer)
        if hasattr(runner, "sw_batch_size"):
            runner.sw_batch_size, runner.sw_device = attempt.sw_batch_size, attempt.sw_device
        try:
            out = runner(tensor.to(attempt.device), fn, device=attempt.device)
            return out[0].float().cpu()
        except torch.OutOfMemoryError:
            if i + 1 == len(attempts):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            event = f"out of memory with {attempt.describe()}; retrying with {attempts[i + 1].describe()}"
            log.warning("%s", event)
            if fallbacks is not None:
                fallbacks.append(event)
    raise AssertionError("unreachable")
