"""A sliding window that keeps each window's output, so that a change of the input recomputes only the
windows it reaches (with their batch-mates): how a click costs only the windows its guidance touches.

A window's output depends on its own input patch alone, and a click changes the guidance channels
only inside its support (``model/guidance.py``). So after a click only the windows that overlap the
changed boxes are run again; every other window's cached output is reused, and the blend is redone
over the union of the recomputed windows, each voxel summing the same windows in the same order as
a full pass. The refined scores are therefore bit-for-bit those of a full pass with all clicks.

The windows, padding and gaussian weights are MONAI's ``SlidingWindowInferer``'s (its
``dense_patch_slices`` order, its ``compute_importance_map``), so a full pass agrees with MONAI's
inferer to float precision (``tests/test_interactive.py``); ``model/sliding_window.py`` keeps using
MONAI's inferer for the automatic path.

The cache costs windows x networks x ROI voxels x 4 bytes (the demo network on a whole-body phantom:
about 60 windows of 64³, 63 MB; the paper's 128³ windows, 8 MB each). Above ``max_cache_bytes``
nothing is kept and each change is a full pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from monai.data.utils import compute_importance_map

from .boxes import Box
from .config import ModelConfig
from .sliding_window import score_function
from .window_grid import window_starts

#: Largest window cache kept by default (bytes); above it every update is a full pass.
MAX_CACHE_BYTES = 4 * 2 ** 30


def _overlaps(a: Box, b: Box) -> bool:
    return all(x.start < y.stop and y.start < x.stop for x, y in zip(a, b, strict=True))


class CachedSlidingWindow:
    """Per-network lesion-minus-background scores of a (C, X, Y, Z) volume, window outputs kept."""

    def __init__(self, networks: Sequence[torch.nn.Module], config: ModelConfig, device: torch.device,
                 sw_batch_size: int = 2, max_cache_bytes: int = MAX_CACHE_BYTES) -> None:
        self.networks, self.config, self.device = list(networks), config, device
        self.sw_batch_size = max(1, sw_batch_size)
        self.max_cache_bytes = max_cache_bytes
        self.score = score_function(self.networks, config.lesion_class, device.type == "cuda")
        roi = tuple(config.roi_size)
        self.weight = compute_importance_map(roi, mode=config.blend_mode, sigma_scale=config.sigma_scale,
                                             device="cpu", dtype=torch.float32).numpy()
        self.outputs: dict[int, np.ndarray] = {}
        self.windows: list[Box] = []
        self.shape: tuple[int, ...] = ()
        self.pad: list[tuple[int, int]] = []
        self.numerator = self.denominator = self.scores = np.zeros(0, np.float32)

    # -- geometry ----------------------------------------------------------------------------------

    def _layout(self, shape: Sequence[int]) -> None:
        roi, overlap = self.config.roi_size, self.config.overlap
        self.shape = tuple(int(n) for n in shape)
        self.pad = [((r - n) // 2, (r - n) - (r - n) // 2) if n < r else (0, 0)
                    for n, r in zip(shape, roi, strict=True)]
        padded = [n + lo + hi for n, (lo, hi) in zip(shape, self.pad, strict=True)]
        starts = [window_starts(n, r, overlap) for n, r in zip(padded, roi, strict=True)]
        self.windows = [tuple(slice(s, s + r) for s, r in zip(corner, roi, strict=True))  # type: ignore[misc]
                        for corner in itertools.product(*starts)]
        self.padded = tuple(padded)

    def _padded_input(self, volume: np.ndarray) -> np.ndarray:
        if not any(lo or hi for lo, hi in self.pad):
            return volume
        return np.pad(volume, [(0, 0), *self.pad], mode="constant", constant_values=0.0)

    @property
    def cache_bytes(self) -> int:
        return len(self.windows) * len(self.networks) * int(np.prod(self.config.roi_size)) * 4

    # -- running -----------------------------------------------------------------------------------

    def _run_windows(self, padded: np.ndarray, indices: Sequence[int]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        with torch.inference_mode():
            for first in range(0, len(indices), self.sw_batch_size):
                chunk = indices[first:first + self.sw_batch_size]
                batch = torch.as_tensor(np.stack([padded[(slice(None), *self.windows[i])] for i in chunk]))
                scores = self.score(batch.to(self.device)).float().cpu().numpy()
                for i, s in zip(chunk, scores, strict=True):
                    out[i] = s
        return out

    def _blend(self, region: Box, outputs: dict[int, np.ndarray] | None = None) -> None:
        """Sum the windows over ``region`` of the padded grid from zero, in window order, and divide."""
        outputs = self.outputs if outputs is None else outputs
        self.numerator[(slice(None), *region)] = 0.0
        for i, window in enumerate(self.windows):
            if not _overlaps(window, region):
                continue
            inter = tuple(slice(max(w.start, r.start), min(w.stop, r.stop))
                          for w, r in zip(window, region, strict=True))
            local = tuple(slice(s.start - w.start, s.stop - w.start) for s, w in zip(inter, window, strict=True))
            self.numerator[(slice(None), *inter)] += self.weight[local] * outputs[i][(slice(None), *local)]
        self.scores[(slice(None), *region)] = self.numerator[(slice(None), *region)] / self.denominator[region]

    def run(self, volume: np.ndarray) -> np.ndarray:
        """Every window of ``volume`` (C, X, Y, Z): (M, X, Y, Z) scores, the windows' outputs kept (or,
        above ``max_cache_bytes``, each batch blended in as it comes and none kept)."""
        self._layout(volume.shape[1:])
        padded = self._padded_input(volume)
        self.denominator = np.zeros(self.padded, np.float32)
        for window in self.windows:
            self.denominator[window] += self.weight
        self.numerator = np.zeros((len(self.networks), *self.padded), np.float32)
        keep = self.cache_bytes <= self.max_cache_bytes
        self.outputs = {}
        for first in range(0, len(self.windows), self.sw_batch_size):  # window order, as _blend sums
            batch = self._run_windows(padded, list(range(first, min(first + self.sw_batch_size, len(self.windows)))))
            for i, out in batch.items():
                self.numerator[(slice(None), *self.windows[i])] += self.weight * out
            if keep:
                self.outputs.update(batch)
        self.scores = self.numerator / self.denominator
        return self.result()

    def update(self, volume: np.ndarray, changed: Sequence[Box]) -> tuple[np.ndarray, int]:
        """The scores after ``volume`` changed inside the ``changed`` boxes (unpadded coordinates), and
        how many windows were run; without a cache (too large) a full pass."""
        if volume.shape[1:] != self.shape:
            raise ValueError(f"volume of shape {volume.shape[1:]}, the cached one was {self.shape}")
        if not self.outputs:
            return self.run(volume), len(self.windows)
        shifted = [tuple(slice(b.start + lo, b.stop + lo) for b, (lo, _) in zip(box, self.pad, strict=True))
                   for box in changed]
        touched = {i for i, w in enumerate(self.windows) if any(_overlaps(w, box) for box in shifted)}
        if not touched:
            return self.result(), 0
        # whole batches, as the full pass formed them: a network's output for a window may differ in the
        # last bits with the batch it ran in (seen on the CPU), and the update must equal a full pass
        size = self.sw_batch_size
        groups = sorted({i // size for i in touched})
        redo = [i for g in groups for i in range(g * size, min((g + 1) * size, len(self.windows)))]
        self.outputs.update(self._run_windows(self._padded_input(volume), redo))
        union = tuple(slice(min(self.windows[i][a].start for i in redo), max(self.windows[i][a].stop for i in redo))
                      for a in range(3))
        self._blend(union)  # type: ignore[arg-type]
        return self.result(), len(redo)

    def result(self) -> np.ndarray:
        inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(self.pad, self.shape, strict=True))
        return self.scores[(slice(None), *inner)]
