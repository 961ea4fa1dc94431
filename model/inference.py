"""Sliding-window ensemble inference: one function from a PET image to a mask on the PET's grid.

Work shared across the ensemble: the PET is read, reoriented, resampled and scaled once, cropped
to the body once, and every window is cut once and fed to all networks. Per network only the
lesion-minus-background logit is kept: with two classes, softmax-argmax is its sign, and linear
resampling and gaussian blending commute with the difference, so nothing the vote needs is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.inferers import SlidingWindowInferer

from .config import ModelConfig
from .io import same_geometry
from .manifest import read_manifest, verify_manifest
from .network import checkpoint_files, load_ensemble
from .preprocessing import (
    Grid,
    Orientation,
    body_box,
    needs_resampling,
    paste,
    percentiles,
    read_array,
    resample_back,
    resample_to_spacing,
    scale_box,
    scale_intensity,
    sub_grid,
    target_grid,
)

log = logging.getLogger(__name__)

#: Score given to voxels outside the body crop: background for every network, finite (no NaN).
BACKGROUND_SCORE = -1.0e4
#: Body = voxels above this fraction of the scaled intensity range (scale-free: SUV or Bq/ml alike).
BODY_LEVEL = 0.01
#: CT voxels above this (HU) are body too, when a CT on the PET's grid is given.
BODY_HU = -500.0


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is available")
    return resolved


def _score_function(networks: Sequence[torch.nn.Module], lesion_class: int, amp: bool
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    other = 1 - lesion_class

    def scores(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            out = []
            for net in networks:
                logits = net(batch)
                out.append((logits[:, lesion_class] - logits[:, other]).float())
        return torch.stack(out, dim=1)

    return scores


def make_inferer(config: ModelConfig, sw_batch_size: int, device: str | torch.device = "cpu"
                 ) -> SlidingWindowInferer:
    """MONAI's inferer with the gaussian map built once and reused for every volume.

    Windows run on ``device``; where the stitched output lives is chosen per call.
    """
    return SlidingWindowInferer(
        roi_size=config.roi_size, sw_batch_size=sw_batch_size, overlap=config.overlap,
        mode=config.blend_mode, sigma_scale=config.sigma_scale, padding_mode="constant", cval=0.0,
        sw_device=torch.device(device), device=torch.device(device), cache_roi_weight_map=True,
    )


@torch.inference_mode()
def sliding_window_scores(volume: torch.Tensor | np.ndarray, networks: Sequence[torch.nn.Module],
                          config: ModelConfig, device: str | torch.device = "cpu", sw_batch_size: int = 4,
                          inferer: SlidingWindowInferer | None = None) -> torch.Tensor:
    """Per-network lesion-minus-background logits over a preprocessed (X, Y, Z) volume.

    Returns (M, X, Y, Z) float32 on the CPU; a positive score means that network's argmax is
    lesion. Windows are stitched on the device; if that runs out of GPU memory the stitching moves
    to the CPU and the volume is redone.
    """
    device = torch.device(device)
    tensor = torch.as_tensor(volume, dtype=torch.float32)
    while tensor.dim() < 5:
        tensor = tensor.unsqueeze(0)
    amp = device.type == "cuda"
    fn = _score_function(networks, config.lesion_class, amp)
    inferer = inferer or make_inferer(config, sw_batch_size, device)
    try:
        out = inferer(tensor.to(device), fn, device=device)
    except torch.OutOfMemoryError:
        if device.type != "cuda":
            raise
        log.warning("GPU memory ran out while stitching; stitching on the CPU instead")
        torch.cuda.empty_cache()
        out = inferer(tensor, fn, device=torch.device("cpu"))
    return out[0].float().cpu()


def vote(scores: Sequence[np.ndarray] | np.ndarray, rule: str = "majority") -> np.ndarray:
    """Combine per-network scores into one boolean mask.

    majority: each network's argmax, then lesion where more than half agree (a tie is background,
    as the authors' mean-and-round gives). soft: mean of the lesion softmax above 0.5.
    """
    n = len(scores)
    if rule == "majority":
        votes = np.zeros(np.shape(scores[0]), dtype=np.uint8)
        for s in scores:
            votes += np.asarray(s) > 0
        return votes * 2 > n
    if rule == "soft":
        total = np.zeros(np.shape(scores[0]), dtype=np.float32)
        for s in scores:
            total += 1.0 / (1.0 + np.exp(-np.clip(np.asarray(s, dtype=np.float32), -60, 60)))
        return total / n > 0.5
    raise ValueError(f"unknown vote rule {rule!r}")


@dataclass
class PredictionInfo:
    """What one prediction did, for logs and benchmarks."""

    nonfinite_voxels: int = 0
    resampled: bool = False
    working_shape: tuple[int, ...] = ()
    crop_shape: tuple[int, ...] = ()
    windows: int = 0
    windows_uncropped: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def window_step(roi: int, overlap: float) -> int:
    """Distance between window starts along an axis longer than the ROI (MONAI's scan interval)."""
    return max(int(roi * (1 - overlap)), 1)


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Where MONAI's sliding window puts its windows along one axis (after padding to the ROI)."""
    if size <= roi:
        return [0]
    step = window_step(roi, overlap)
    starts = []
    k = 0
    while True:
        start = min(k * step, size - roi)
        starts.append(start)
        if start + roi >= size:
            return starts
        k += 1


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of windows MONAI's sliding window visits for a volume."""
    return int(np.prod([len(window_starts(n, r, overlap)) for n, r in zip(shape, roi, strict=True)]))


def window_aligned_box(box: tuple[slice, slice, slice], shape: Sequence[int], roi: Sequence[int],
                       overlap: float) -> tuple[slice, slice, slice]:
    """Grow a box to the union of the whole-volume windows that touch it.

    Inside such a crop MONAI's sliding window visits exactly those windows, so every voxel of the
    box gets the same windows, weights and sum as without the crop: cropping changes no score
    there, it only skips the windows that see nothing of the body.
    """
    out = []
    for sl, n, r in zip(box, shape, roi, strict=True):
        if n <= r:
            out.append(slice(0, n))
            continue
        touching = [s for s in window_starts(n, r, overlap) if s < sl.stop and s + r > sl.start]
        out.append(slice(touching[0], touching[-1] + r))
    return out[0], out[1], out[2]


def grid_aligned_box(box: tuple[slice, slice, slice], shape: Sequence[int], roi: Sequence[int],
                     overlap: float) -> tuple[slice, slice, slice]:
    """Snap a box (at least one window long per axis) outward onto the whole volume's window grid.

    The start moves down to a whole-volume window start and the length up to one window plus
    whole steps (or to the volume's end), so every window MONAI visits inside the crop is a window
    of the uncropped run too, at the same place with the same gaussian. Scores then differ from
    the uncropped ones only through windows that straddle the box's edge, not through a shifted
    window grid, which a network trained on lesion-centred crops is sensitive to. It costs at
    most one step more per side and axis than the bare box; over three axes the window count
    multiplies (24 -> 64 windows for the paper networks on a 400 x 400 x 326 phantom).
    """
    out = []
    for sl, n, r in zip(box, shape, roi, strict=True):
        if n <= r:
            out.append(slice(0, n))
            continue
        step = window_step(r, overlap)
        start = (sl.start // step) * step
        length = max(sl.stop - start, r)
        length = r + -(-(length - r) // step) * step
        out.append(slice(start, min(start + length, n)))
    return out[0], out[1], out[2]


CROP_MODES = ("body", "exact", "none")


def at_least_roi(box: tuple[slice, slice, slice], shape: Sequence[int], roi: Sequence[int]
                 ) -> tuple[slice, slice, slice]:
    """Grow a box around its centre to one window where the volume allows, rather than pad with air."""
    out = []
    for sl, n, r in zip(box, shape, roi, strict=True):
        length = sl.stop - sl.start
        if length >= r or n <= r:
            out.append(sl if n > r else slice(0, n))
            continue
        start = min(max(0, sl.start - (r - length) // 2), n - r)
        out.append(slice(start, start + r))
    return out[0], out[1], out[2]


class Predictor:
    """A config, its networks, and the device they run on: ``predict(pet) -> mask``.

    crop: "body" (default) runs the sliding window over the body's bounding box only, snapped to
    the uncropped run's window grid (``grid_aligned_box``); "exact"
    grows that box to the whole-volume windows that touch it, which gives the uncropped scores to
    float precision but saves little at high overlap; "none" runs over the whole field of view.
    """

    def __init__(self, networks: Sequence[torch.nn.Module], config: ModelConfig,
                 device: str | torch.device = "auto", crop: str = "body", sw_batch_size: int | None = None,
                 margin_mm: float = 10.0, vote: str | None = None) -> None:
        if not networks:
            raise ValueError("a Predictor needs at least one network")
        self.config = config if vote is None else config.with_(vote=vote)
        self.device = resolve_device(device)
        self.networks = [net.to(self.device).eval() for net in networks]
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
        self.crop = crop
        self.margin_mm = margin_mm
        self.sw_batch_size = sw_batch_size or (8 if self.device.type == "cuda" else 2)
        self.inferer = make_inferer(self.config, self.sw_batch_size, self.device)
        self.last_info = PredictionInfo()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    @classmethod
    def from_weights(cls, path: str | Path, device: str | torch.device = "auto", **kwargs) -> Predictor:
        """Load a checkpoint file, or a folder whose checkpoints form the ensemble.

        A folder with a manifest.json has its sha256s checked first, so a corrupt or missing
        file fails here, naming it, before any case is read.
        """
        path = Path(path)
        if path.is_dir() and read_manifest(path) is not None:
            files = verify_manifest(path)
        else:
            files = checkpoint_files(path)
        loaded = load_ensemble(files)
        predictor = cls([c.network for c in loaded], loaded[0].config, device=device, **kwargs)
        predictor.files = files
        return predictor

    # -- the pipeline ---------------------------------------------------------------------------

    def predict(self, pet: sitk.Image, ct: sitk.Image | None = None) -> sitk.Image:
        """uint8 lesion mask (0/1) with exactly the PET's size, spacing, origin and direction."""
        parts = self._scores_on_input_grid(pet, ct)
        orient, ras, box, crop_scores = parts
        t0 = time.perf_counter()
        if box is None:  # flat or empty PET: nothing can be a lesion
            mask_ras = np.zeros(ras.size, np.uint8)
        else:
            mask_ras = paste(vote(crop_scores, self.config.vote).astype(np.uint8), box, ras.size, 0)
        mask = orient.from_ras(mask_ras)
        image = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)))
        image.CopyInformation(pet)
        self.last_info.seconds["vote"] = time.perf_counter() - t0
        return image

    def predict_scores(self, pet: sitk.Image, ct: sitk.Image | None = None) -> np.ndarray:
        """Per-network scores on the PET's own grid, (M, x, y, z) float32 (for tests and analysis)."""
        orient, ras, box, crop_scores = self._scores_on_input_grid(pet, ct)
        if box is None:  # flat or empty PET: background everywhere
            return np.full((len(self.networks), *pet.GetSize()), BACKGROUND_SCORE, np.float32)
        return np.stack([orient.from_ras(paste(s, box, ras.size, BACKGROUND_SCORE)) for s in crop_scores])

    def _scores_on_input_grid(self, pet: sitk.Image, ct: sitk.Image | None):
        """Scores of every network on the body box of the PET's RAS grid."""
        info = self.last_info = PredictionInfo()
        cfg = self.config
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            info.seconds[name] = now - clock
            clock = now

        check_image(pet, "PET")
        grid = Grid.of(pet)
        orient = Orientation.of(grid.direction)
        array, info.nonfinite_voxels = read_array(pet)
        ras_array = orient.to_ras(array)
        ras = orient.ras_grid(grid)
        info.resampled = needs_resampling(ras.spacing, cfg.spacing)
        if info.resampled:
            work_grid = target_grid(ras, cfg.spacing)
            work = resample_to_spacing(ras_array, ras, work_grid)
        else:
            work_grid = ras
            work = np.ascontiguousarray(ras_array)
        del array
        lap("preprocess")
        a_min, a_max = percentiles(work, *cfg.percentiles)
        work = scale_intensity(work, a_min, a_max)
        info.working_shape = work.shape
        lap("percentiles")

        # Body box on the input's RAS grid; the working grid's box covers the same place.
        body = ras_array > (a_min + BODY_LEVEL * (a_max - a_min)) if a_max > a_min else None
        if body is not None and ct is not None and same_geometry(ct, pet):
            ct_array = sitk.GetArrayViewFromImage(ct).transpose(2, 1, 0)
            body |= orient.to_ras(ct_array) > BODY_HU
        del ras_array
        if body is None:
            box = None
        elif self.crop != "none":
            margin = tuple(int(np.ceil(self.margin_mm / s)) for s in ras.spacing)
            box = body_box(body, margin)
        else:
            box = (slice(0, ras.size[0]), slice(0, ras.size[1]), slice(0, ras.size[2]))
        del body
        info.windows_uncropped = count_windows(work.shape, cfg.roi_size, cfg.overlap)
        if box is None:  # flat or empty PET: nothing can be a lesion
            lap("crop")
            return orient, ras, None, []
        work_box = scale_box(box, ras, work_grid) if info.resampled else box
        if self.crop == "exact":
            work_box = window_aligned_box(work_box, work.shape, cfg.roi_size, cfg.overlap)
        else:
            work_box = grid_aligned_box(at_least_roi(work_box, work.shape, cfg.roi_size), work.shape,
                                        cfg.roi_size, cfg.overlap)
        crop = work[work_box]
        info.crop_shape = crop.shape
        info.windows = count_windows(crop.shape, cfg.roi_size, cfg.overlap)
        lap("crop")

        scores = sliding_window_scores(crop, self.networks, cfg, self.device, self.sw_batch_size, self.inferer)
        del work, crop
        lap("network")

        crop_scores = []
        inner = tuple(slice(b.start - w.start, b.stop - w.start) for b, w in zip(box, work_box, strict=True))
        for s in scores.numpy():
            if info.resampled:
                s = resample_back(s, sub_grid(work_grid, work_box), sub_grid(ras, box), BACKGROUND_SCORE)
            else:
                s = s[inner]
            crop_scores.append(s)
        lap("resample_back")
        return orient, ras, box, crop_scores


class InputImageError(ValueError):
    """An input image that cannot be segmented (wrong dimension, vector pixels, ...)."""


def check_image(image: sitk.Image, what: str) -> None:
    if image.GetDimension() != 3:
        raise InputImageError(f"{what} must be a 3D image, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputImageError(
            f"{what} must have scalar voxels, got {image.GetNumberOfComponentsPerPixel()} components per voxel")
    if min(image.GetSize()) < 1:
        raise InputImageError(f"{what} is empty (size {image.GetSize()})")
