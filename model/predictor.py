"""``Predictor``: a PET image in, a mask on the PET's grid out, as one call per pipeline stage.

    prepare: RAS, spacing, percentiles; the body      model/preprocessing.py  ``prepare``
    region: the windows' crop (crop mode)             model/cropping.py       ``find_region``
    score: every network over its windows             model/sliding_window.py
    undo: resample back, orient back, uncrop          model/preprocessing.py  ``PreparedVolume.undo``
    vote                                              model/ensemble.py

With a time budget the networks are scored one group at a time, and the budget decides what the
networks after the first may cost (``model/time_budget.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from common.geometry import Grid, same_geometry

from .config import ModelConfig
from .cropping import CROP_MODES, DEFAULT_CROP, FAST_CONTEXT_MM, MARGIN_MM, Region, fast_region, find_region
from .ensemble import mean_probability, vote, vote_counts
from .guidance import Clicks, GuidanceVolume
from .manifest import read_manifest, verify_manifest
from .network import checkpoint_files, load_ensemble
from .preprocessing import BACKGROUND_SCORE, OnInput, PreparedVolume, prepare
from .sliding_window import make_inferer, mirror_sets, sliding_window_scores
from .time_budget import Step, plan_rest
from .window_grid import count_windows
from .windows import CachedSlidingWindow


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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is available")
    return resolved


@dataclass
class PredictionInfo:
    """What one prediction did, for logs, results.json and benchmarks."""

    nonfinite_voxels: int = 0
    resampled: bool = False
    working_shape: tuple[int, ...] = ()
    crop_shape: tuple[int, ...] = ()
    windows: int = 0
    windows_uncropped: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    #: One entry per group of networks scored together: networks, crop mode, TTA axes, windows, seconds.
    steps: list[dict] = field(default_factory=list)
    #: What the time budget decided, when one was set.
    budget: dict | None = None
    #: Each step down after running out of memory (smaller window batches, CPU stitching, CPU).
    fallbacks: list[str] = field(default_factory=list)


#: Metadata key of the vote map (MetaImage headers keep it): how many networks voted.
NETWORKS_KEY = "networks"


@dataclass
class Prediction:
    """What ``Predictor.predict_all`` returns, every image on the PET's grid.

    ``networks``: how many networks voted (fewer than loaded when the time budget dropped some);
    ``votes``: uint8 count of them that voted lesion; ``probability``: float32 mean lesion softmax.
    """

    mask: sitk.Image
    networks: int
    votes: sitk.Image | None = None
    probability: sitk.Image | None = None

    def __post_init__(self) -> None:
        if self.votes is not None:  # the vote map's file says what its counts are out of
            self.votes.SetMetaData(NETWORKS_KEY, str(self.networks))


class Predictor:
    """A config, its networks, and the device they run on: ``predict(pet) -> mask``.

    crop: "exact" (default, the uncropped pipeline's scores inside the body), "body" (fast,
    approximate; see model/cropping.py and docs/performance.md) or "none" (whole field of view).
    tta_axes: spatial axes (0-2 of the RAS working volume) whose flips each network's logits are
    averaged over (nnU-Net's mirroring); empty as the authors ran it.
    time_budget_s: seconds one ``predict`` may take; once the first network has run, the rest run
    only as the budget allows (TTA dropped first, then the fast crop, then fewer networks).
    """

    def __init__(self, networks: Sequence[torch.nn.Module], config: ModelConfig,
                 device: str | torch.device = "auto", crop: str = DEFAULT_CROP, sw_batch_size: int | None = None,
                 margin_mm: float = MARGIN_MM, context_mm: float = FAST_CONTEXT_MM, vote: str | None = None,
                 tta_axes: Sequence[int] = (), time_budget_s: float | None = None) -> None:
        if not networks:
            raise ValueError("a Predictor needs at least one network")
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
        if any(a not in (0, 1, 2) for a in tta_axes):
            raise ValueError(f"tta_axes must be spatial axes 0, 1, 2, got {tuple(tta_axes)}")
        self.config = config if vote is None else config.with_(vote=vote)
        self.device = resolve_device(device)
        self.networks = [net.to(self.device).eval() for net in networks]
        self.crop = crop
        self.margin_mm = margin_mm
        self.context_mm = context_mm
        self.tta_axes = tuple(sorted(set(tta_axes)))
        self.time_budget_s = time_budget_s
        self.sw_batch_size = sw_batch_size or (8 if self.device.type == "cuda" else 2)
        self.inferer = make_inferer(self.config, self.sw_batch_size, self.device)
        self.last_info = PredictionInfo()
        self.files: list[Path] = []
        # held by callers around a prediction and its last_info: a case abandoned by the watchdog
        # (runner/watchdog.py ``within``) may still be inside; the next waits rather than share it
        self.lock = threading.Lock()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    @classmethod
    def from_weights(cls, path: str | Path, device: str | torch.device = "auto", **kwargs) -> Predictor:
        """Load a checkpoint file, or a folder whose checkpoints form the ensemble.

        A folder with a manifest.json has its sha256s checked first, so a corrupt or missing
        file fails here, naming it, before any case is read.
        """
        path = Path(path)
        files = verify_manifest(path) if path.is_dir() and read_manifest(path) is not None else checkpoint_files(path)
        loaded = load_ensemble(files)
        predictor = cls([c.network for c in loaded], loaded[0].config, device=device, **kwargs)
        predictor.files = files
        return predictor

    # -- the pipeline ---------------------------------------------------------------------------

    def predict(self, pet: sitk.Image, ct: sitk.Image | None = None) -> sitk.Image:
        """uint8 lesion mask (0/1) with exactly the PET's size, spacing, origin and direction."""
        return self.predict_all(pet, ct).mask

    def predict_all(self, pet: sitk.Image, ct: sitk.Image | None = None, votes: bool = False,
                    probability: bool = False) -> Prediction:
        """The mask and, when asked, how many networks voted lesion and their mean lesion
        probability, all with exactly the PET's geometry."""
        back = self._on_input(pet, ct)
        if not back.scores:                                    # flat or empty PET: nothing can be a lesion
            empty = np.zeros((0, 0, 0), np.uint8)
            return Prediction(back.image(empty), len(self.networks), back.image(empty) if votes else None,
                              back.image(empty.astype(np.float32)) if probability else None)
        mask = vote(back.scores, self.config.vote)
        return Prediction(back.image(mask.astype(np.uint8)), len(back.scores),
                          back.image(vote_counts(back.scores)) if votes else None,
                          back.image(mean_probability(back.scores)) if probability else None)

    def predict_scores(self, pet: sitk.Image, ct: sitk.Image | None = None) -> np.ndarray:
        """Per-network scores on the PET's own grid, (M, x, y, z) float32 (for tests and analysis)."""
        back = self._on_input(pet, ct)
        if not back.scores:
            return np.full((len(self.networks), *pet.GetSize()), BACKGROUND_SCORE, np.float32)
        return np.stack([back.full(s, BACKGROUND_SCORE) for s in back.scores])

    def predict_working(self, volume: PreparedVolume) -> np.ndarray:
        """Boolean mask of an already preprocessed volume on its own grid: the stages after
        ``prepare``, exactly as ``predict`` runs them (training's validation uses this)."""
        back = self._after_prepare(volume, time.perf_counter())
        if not back.scores:
            return np.zeros(volume.work.shape, bool)
        return back.full(vote(back.scores, self.config.vote), False)

    def _on_input(self, pet: sitk.Image, ct: sitk.Image | None) -> OnInput:
        """prepare -> region -> score -> undo: every network's scores on the PET's grid (the vote is the caller's)."""
        started = time.perf_counter()
        self.last_info = PredictionInfo()
        volume = self._prepare(pet, ct)
        info = self.last_info
        info.nonfinite_voxels, info.resampled, info.working_shape = (volume.nonfinite_voxels, volume.resampled,
                                                                     volume.work.shape)
        info.seconds["preprocess"] = time.perf_counter() - started
        return self._after_prepare(volume, started)

    def _prepare(self, pet: sitk.Image, ct: sitk.Image | None) -> PreparedVolume:
        """The checked PET on the working grid; a CT on the PET's grid counts as body too."""
        check_image(pet, "PET")
        usable_ct = ct if ct is not None and same_geometry(ct, pet) else None
        return prepare(pet, self.config.spacing, *self.config.percentiles, ct=usable_ct)

    def _region(self, volume: PreparedVolume) -> Region | None:
        """Where this predictor's crop mode runs the windows (None: a flat PET, nothing to score)."""
        cfg = self.config
        return find_region(volume, self.crop, cfg.roi_size, cfg.overlap, self.margin_mm, self.context_mm)

    def _after_prepare(self, volume: PreparedVolume, started: float) -> OnInput:
        cfg, info = self.config, self.last_info
        info.windows_uncropped = count_windows(volume.work.shape, cfg.roi_size, cfg.overlap)
        clock = time.perf_counter()
        region = self._region(volume)
        info.seconds["crop"] = time.perf_counter() - clock
        if region is None:
            return volume.nothing()
        info.crop_shape = volume.work[region.work_box].shape
        info.windows = count_windows(info.crop_shape, cfg.roi_size, cfg.overlap)
        parts = self._score(volume, region, started)
        clock = time.perf_counter()
        back = volume.undo(parts)
        info.seconds["resample_back"] = time.perf_counter() - clock
        return back

    # -- the networks and the time budget -------------------------------------------------------

    def _score(self, volume: PreparedVolume, region: Region, started: float) -> list[tuple[Region, np.ndarray]]:
        """Every network's scores over its windows' crop, as (region, scores) per group; with a time budget the
        first network runs alone and the budget plans the rest (``model/time_budget.py``)."""
        cfg, info = self.config, self.last_info
        first = Step(tuple(range(len(self.networks))), self.crop, self.tta_axes)
        if self.time_budget_s is not None and len(self.networks) > 1:
            first = Step((0,), self.crop, self.tta_axes)
        parts = [(region, self._run_step(first, volume, region))]
        if len(first.networks) < len(self.networks):
            fast = fast_region(volume, region, cfg.roi_size, cfg.overlap, self.context_mm)
            rest, info.budget = plan_rest(first, info.steps[0]["seconds"], time.perf_counter() - started,
                                          self.time_budget_s, len(self.networks), info.windows,
                                          count_windows(volume.work[fast.work_box].shape, cfg.roi_size, cfg.overlap))
            for step in rest:
                where = fast if step.crop == "body" else region
                parts.append((where, self._run_step(step, volume, where)))
        info.seconds["network"] = sum(s["seconds"] for s in info.steps)
        return parts

    def _run_step(self, step: Step, volume: PreparedVolume, region: Region) -> np.ndarray:
        """One group of networks' scores over ``region``'s windows, (M, ...) on ``region.work_box``."""
        cfg = self.config
        clock = time.perf_counter()
        networks = [self.networks[i] for i in step.networks]
        scores = sliding_window_scores(network_input(volume, region, cfg), networks, cfg, self.device,
                                       self.sw_batch_size, self.inferer, step.tta_axes,
                                       self.last_info.fallbacks).numpy()
        self.last_info.steps.append({
            "networks": list(step.networks), "crop": step.crop, "tta_axes": list(step.tta_axes),
            "mirrors": len(mirror_sets(step.tta_axes)),
            "windows": count_windows(volume.work[region.work_box].shape, cfg.roi_size, cfg.overlap),
            "seconds": round(time.perf_counter() - clock, 3)})
        return scores

    # -- interactive refinement ------------------------------------------------------------------

    def refine(self, pet: sitk.Image, clicks: Clicks, previous: Refinement | None = None,
               ct: sitk.Image | None = None) -> Refinement:
        """The mask of an interactive network given ``clicks``; pass the last result as ``previous`` and
        only the windows the new clicks reach are run again (the mask is the same as without it).

        ``previous`` is used when it came from this predictor for a PET on the same grid and ``clicks``
        are its clicks plus new ones; otherwise everything is computed afresh. No TTA, no time budget.
        ``ct`` on the PET's grid counts as body for the crop, as in ``predict``.
        """
        if not self.config.interactive:
            raise ValueError(f"'{self.config.name}' reads no clicks (guidance 'none'); use predict(), or "
                             "interactive weights (a config with guidance)")
        started = time.perf_counter()
        check_image(pet, "PET")  # before a previous state is compared with it
        state = previous.state if previous is not None else None
        if state is not None and not state.continues(self, pet, clicks):
            state = None
        fresh = state is None
        if fresh:
            volume = self._prepare(pet, ct)
            region = self._region(volume)
            inputs = network_input(volume, region, self.config) if region is not None else None
            guidance = GuidanceVolume(self.config, volume.work_grid, region.work_box if region else None,
                                      inputs[1:] if inputs is not None else None)
            state = RefineState(self, Grid.of(pet), _fingerprint(pet), volume, region, guidance, inputs,
                                CachedSlidingWindow(self.networks, self.config, self.device, self.sw_batch_size))
        try:  # a failure half-way (out of memory, a signal) must not leave clicks painted but not computed
            changed = state.guidance.add(clicks)
            if state.region is None:  # a flat PET: nothing can be a lesion, clicks or not
                back, run = state.volume.nothing(), 0
            else:
                if fresh:
                    scores, run = state.windows.run(state.inputs), len(state.windows.windows)
                else:
                    scores, run = state.windows.update(state.inputs, changed)
                back = state.volume.undo([(state.region, scores)])
        except BaseException:
            state.broken = True
            raise
        mask = vote(back.scores, self.config.vote) if back.scores else np.zeros((0, 0, 0), bool)
        return Refinement(back.image(mask.astype(np.uint8)), clicks, run, len(state.windows.windows),
                          time.perf_counter() - started, state)


def network_input(volume: PreparedVolume, region: Region, config: ModelConfig) -> np.ndarray:
    """What the windows run over: the PET on the region's working box, and for an interactive network
    its two click channels there, empty (``refine`` paints clicks into them)."""
    pet = volume.work[region.work_box]
    if not config.interactive:
        return pet
    out = np.zeros((3, *pet.shape), np.float32)
    out[0] = pet
    return out


def _fingerprint(pet: sitk.Image) -> str:
    """A cheap digest of a PET's voxels (every 5th along each axis): another scan on the same grid is not
    mistaken for the one a refinement's windows were computed on."""
    import hashlib

    sample = np.ascontiguousarray(sitk.GetArrayViewFromImage(pet)[::5, ::5, ::5])
    return hashlib.blake2b(sample.tobytes(), digest_size=16).hexdigest()


@dataclass
class RefineState:
    """What a next click needs: the prepared PET, its region, the clicks painted so far, the windows."""

    predictor: Predictor
    grid: Grid
    fingerprint: str
    volume: PreparedVolume
    region: Region | None
    guidance: GuidanceVolume
    inputs: np.ndarray | None
    windows: CachedSlidingWindow
    #: Set when a refinement failed half-way: its windows may not match its clicks any more.
    broken: bool = False

    def continues(self, predictor: Predictor, pet: sitk.Image, clicks: Clicks) -> bool:
        """Whether ``clicks`` on ``pet`` can start from here: same predictor, same grid, clicks only added."""
        if self.broken or predictor is not self.predictor or Grid.of(pet) != self.grid:
            return False
        if _fingerprint(pet) != self.fingerprint:
            return False
        try:
            clicks.added_since(self.guidance.clicks)
        except ValueError:
            return False
        return True


@dataclass
class Refinement:
    """``Predictor.refine``'s result: the mask on the PET's grid, how many windows this call ran (of
    how many), its seconds, and the state the next call continues from."""

    mask: sitk.Image
    clicks: Clicks
    windows_run: int
    windows_total: int
    seconds: float
    state: RefineState = field(repr=False)
