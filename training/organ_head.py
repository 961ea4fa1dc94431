"""Organ supervision (the autoPET III winner's extra task): a training-only head that segments the
organs with physiological uptake beside the lesions, so that the network learns where such uptake
lives. Inference never sees it: checkpoints and exports keep the lesion network alone.

The head is a 1x1x1 convolution on the decoder's last ``levels`` outputs (hooks on the DynUNet's
``upsamples``), the coarser ones trilinearly upsampled to the full-resolution grid and concatenated,
so both outputs share every layer but their last. Why more than the last level: the demo networks'
last decoder level has 8 channels, shaped by the lesion task; a linear read-out of those 8 alone
did not find the organs (frozen shipped fold 0, 400 crops at lr 1e-2: brain and liver Dice 0.00 and
0.09), one of the last three levels (8 + 16 + 32 channels) did (0.47 and 0.56;
docs/benchmarks/organ_readout.json). The wrapper returns ``[lesion logits | organ
logits]`` as one tensor, so MONAI's sliding window stitches both during training's forward pass.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

#: Decoder levels the head reads by default (``TrainConfig.organ_head_levels``).
DEFAULT_LEVELS = 3


def head_channels(net: torch.nn.Module, levels: int) -> int:
    """Channels of the decoder's last ``levels`` outputs together (full resolution first)."""
    if not 1 <= levels <= len(net.upsamples):
        raise ValueError(f"organ head levels must be 1-{len(net.upsamples)} for this network, got {levels}")
    return int(sum(net.filters[:levels]))


def levels_of(net: torch.nn.Module, in_channels: int) -> int:
    """The ``levels`` of a saved head from its input channels (a head of 8 inputs is one level's)."""
    for levels in range(1, len(net.upsamples) + 1):
        if head_channels(net, levels) == in_channels:
            return levels
    raise ValueError(f"an organ head of {in_channels} input channels does not fit this network's decoder "
                     f"({list(net.filters)})")


class OrganHead(torch.nn.Module):
    """``net`` (the lesion DynUNet) plus a head of ``classes`` organ logits on its last ``levels``
    decoder outputs."""

    def __init__(self, net: torch.nn.Module, classes: int, levels: int = DEFAULT_LEVELS) -> None:
        super().__init__()
        self.net = net
        self.levels = levels
        self.head = torch.nn.Conv3d(head_channels(net, levels), classes, kernel_size=1)
        self._features: dict[int, torch.Tensor] = {}
        self._capturing = False
        for depth in range(1, levels + 1):  # upsamples[-1] is the full-resolution level
            net.upsamples[-depth].register_forward_hook(self._keeper(depth))

    @property
    def lesion_network(self) -> torch.nn.Module:
        """What validation, checkpoints and exports use: the network inference runs."""
        return self.net

    def _keeper(self, depth: int) -> Any:
        def keep_output(module: torch.nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
            if self._capturing:  # only inside this wrapper's forward: validation runs the lesion network alone
                self._features[depth] = output
        return keep_output

    def decoder_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The lesion logits and what the head reads: the last ``levels`` decoder outputs on the
        full-resolution grid, full resolution first (``benchmarks/organ_readout.py`` trains heads on them)."""
        self._capturing = True
        try:
            lesion = self.net(x)
        finally:
            self._capturing = False
        full = self._features[1]
        features = [full] + [F.interpolate(self._features[d], size=full.shape[2:], mode="trilinear",
                                           align_corners=False) for d in range(2, self.levels + 1)]
        self._features = {}
        return lesion, torch.cat(features, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lesion, features = self.decoder_features(x)
        return torch.cat([lesion, self.head(features).to(lesion.dtype)], dim=1)


def organ_loss(logits: torch.Tensor, organs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the organ logits against the organ map (class indices, channel dim 1 of size 1)."""
    return torch.nn.functional.cross_entropy(logits.float(), organs[:, 0].long())
