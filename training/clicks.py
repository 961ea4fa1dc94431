"""Clicks simulated during training, as the authors trained SW-FastEdit: corrections of the network's
own current mistakes.

Each training step starts with empty guidance. For a number of rounds the network segments its
crops without gradients, and every crop gets a tumour click in its missed lesion voxels (label and
not predicted) and a background click in its false positives (predicted and not label), where it has
any. The step then trains on the crops with the clicks gathered. Where the clicks go:

- ``uniform``: a random voxel of the error, as the authors' ``find_guidance`` samples in practice
  (its weights, exp(distance) - 1 clipped at about 1e-7, are equal on every error voxel);
- ``centre``: the voxel deepest inside the largest error component (the maximum of its Euclidean
  distance transform), as autoPET IV's click simulation places its clicks.

The number of rounds is ``click_rounds`` every step (the authors: 10), or drawn uniformly from
0 to ``click_rounds`` (``click_rounds_random``), so that some steps train without any click and the
network still segments alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from model.config import ModelConfig
from model.guidance import CLICK_PLACES, LABELS, click_voxel, encode


class ClickSimulator:
    """Guidance channels for a training batch from the network's own errors (see the module's doc)."""

    def __init__(self, config: ModelConfig, rounds: int, random_rounds: bool, where: str) -> None:
        if not config.interactive:
            raise ValueError(f"'{config.name}' reads no clicks; click simulation needs an interactive config")
        if where not in CLICK_PLACES:
            raise ValueError(f"click place must be one of {CLICK_PLACES}, got {where!r}")
        self.config, self.rounds, self.random_rounds, self.where = config, rounds, random_rounds, where

    def draw_rounds(self) -> int:
        return int(np.random.randint(self.rounds + 1)) if self.random_rounds else self.rounds  # noqa: NPY002

    @torch.no_grad()
    def guidance(self, forward: Callable[[torch.Tensor], torch.Tensor], pet: torch.Tensor,
                 label: torch.Tensor) -> torch.Tensor:
        """(B, 2, ...) click channels for ``pet`` (B, 1, ...) after this step's rounds of corrections."""
        spatial = tuple(pet.shape[2:])
        truth = label[:, 0].detach().cpu().numpy() > 0
        voxels: list[dict[str, list[tuple[int, int, int]]]] = [{k: [] for k in LABELS} for _ in range(pet.shape[0])]
        channels = torch.zeros((pet.shape[0], len(LABELS), *spatial), dtype=pet.dtype, device=pet.device)
        for _ in range(self.draw_rounds()):
            logits = forward(torch.cat([pet, channels], dim=1))
            lesion = self.config.lesion_class
            predicted = (logits[:, lesion] > logits[:, 1 - lesion]).cpu().numpy()
            for b in range(pet.shape[0]):
                errors = {"tumor": truth[b] & ~predicted[b], "background": predicted[b] & ~truth[b]}
                for label_name, error in errors.items():
                    voxel = click_voxel(error, self.where)
                    if voxel is not None:
                        voxels[b][label_name].append(voxel)
                channels[b] = torch.as_tensor(encode(voxels[b], spatial, self.config), device=pet.device)
        return channels
