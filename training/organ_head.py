"""Organ supervision (the autoPET III winner's extra task): a training-only head that segments the
organs with physiological uptake beside the lesions, so that the network learns where such uptake
lives. Inference never sees it: checkpoints and exports keep the lesion network alone.

The head is a 1x1x1 convolution on the same last decoder features the lesion output reads (a hook on
the DynUNet's ``output_block`` takes them), so both outputs share every layer but their last. The
wrapper returns ``[lesion logits | organ logits]`` as one tensor, so MONAI's sliding window stitches
both during training's forward pass.
"""

from __future__ import annotations

from typing import Any

import torch


class OrganHead(torch.nn.Module):
    """``net`` (the lesion DynUNet) plus a head of ``classes`` organ logits on its last features."""

    def __init__(self, net: torch.nn.Module, classes: int) -> None:
        super().__init__()
        self.net = net
        features = net.output_block.conv.conv.in_channels
        self.head = torch.nn.Conv3d(features, classes, kernel_size=1)
        self._features: torch.Tensor | None = None
        self._capturing = False
        net.output_block.register_forward_hook(self._keep_input)

    @property
    def lesion_network(self) -> torch.nn.Module:
        """What validation, checkpoints and exports use: the network inference runs."""
        return self.net

    def _keep_input(self, module: torch.nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if self._capturing:  # only inside this wrapper's forward: validation runs the lesion network alone
            self._features = inputs[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._capturing = True
        try:
            lesion = self.net(x)
        finally:
            self._capturing = False
        organs = self.head(self._features)
        self._features = None
        return torch.cat([lesion, organs.to(lesion.dtype)], dim=1)


def organ_loss(logits: torch.Tensor, organs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the organ logits against the organ map (class indices, channel dim 1 of size 1)."""
    return torch.nn.functional.cross_entropy(logits.float(), organs[:, 0].long())
