"""Clicks as input channels: where a reader clicked, as two more channels beside the PET.

A click is a point in physical space (ITK's LPS millimetres), labelled tumour (a missed lesion) or
background (a false positive). On the working grid it is the nearest voxel centre, and each label's
clicks make one channel, tumour first, then background, as in the authors' SW-FastEdit and
autoPET IV's interactive baseline:

- ``gaussian``: a Gaussian of ``guidance_sigma`` voxels around each click, peak 1, cut to 0 beyond
  4 sigma (MONAI's ``GaussianFilter`` truncation);
- ``disk`` (the authors' default): 1 where that Gaussian exceeds 0.1, i.e. a ball of radius
  sigma * sqrt(2 ln 10) (2.15 voxels at their sigma 1), 0 elsewhere;
- ``edt``: 1 - d / ``guidance_radius`` for the distance d (voxels) to the nearest click, 0 beyond the
  radius: a truncated Euclidean distance transform, the encoding LesionLocator (autoPET IV) found
  better than heatmaps.

Where clicks lie closer than their supports, the channel takes the largest value (the authors
smooth a sum of impulses and rescale its maximum to 1; for clicks further apart than the support
the two agree, and taking the maximum keeps every click's effect inside its own support, which is
what lets a new click recompute only the windows it reaches, ``model/windows.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from common.geometry import Grid

from .config import ModelConfig

#: Click labels, in the order of their channels after the PET.
LABELS = ("tumor", "background")
#: MONAI's GaussianFilter cuts its kernel at this many sigmas.
GAUSSIAN_TRUNCATE = 4.0
#: The authors' disks: where their normalised Gaussian heatmap exceeds this.
DISK_LEVEL = 0.1

Point = tuple[float, float, float]
#: Where a corrective click goes in an error region (``click_voxel``).
CLICK_PLACES = ("uniform", "centre")


@dataclass(frozen=True)
class Clicks:
    """Tumour and background clicks as physical points (LPS mm), in the order they were made."""

    tumor: tuple[Point, ...] = ()
    background: tuple[Point, ...] = ()

    def __post_init__(self) -> None:
        for label in LABELS:
            object.__setattr__(self, label, tuple(tuple(float(v) for v in p) for p in getattr(self, label)))

    def of(self, label: str) -> tuple[Point, ...]:
        if label not in LABELS:
            raise ValueError(f"click label must be one of {LABELS}, got {label!r}")
        return getattr(self, label)

    def plus(self, label: str, point: Sequence[float]) -> Clicks:
        """These clicks and one more."""
        points = {name: self.of(name) for name in LABELS}
        points[label] = (*self.of(label), tuple(float(v) for v in point))
        return Clicks(**points)

    def __len__(self) -> int:
        return len(self.tumor) + len(self.background)

    def added_since(self, earlier: Clicks) -> list[tuple[str, Point]]:
        """The clicks made after ``earlier`` (which must be a prefix of these); raises otherwise."""
        added = []
        for label in LABELS:
            old, new = earlier.of(label), self.of(label)
            if new[: len(old)] != old:
                raise ValueError(f"the {label} clicks are not the earlier ones plus new ones")
            added += [(label, p) for p in new[len(old):]]
        return added


NO_CLICKS = Clicks()


def support_radius(config: ModelConfig) -> float:
    """How far (working-grid voxels) a click changes its channel: beyond it the channel is 0."""
    if config.guidance == "gaussian":
        return GAUSSIAN_TRUNCATE * config.guidance_sigma
    if config.guidance == "disk":
        return config.guidance_sigma * math.sqrt(2.0 * math.log(1.0 / DISK_LEVEL))
    if config.guidance == "edt":
        return config.guidance_radius
    raise ValueError(f"config '{config.name}' reads no clicks (guidance 'none')")


def click_value(distance_sq: np.ndarray, config: ModelConfig) -> np.ndarray:
    """A click's channel value at squared distances (voxels²) from it; 0 outside its support."""
    radius = support_radius(config)
    inside = distance_sq <= radius * radius
    if config.guidance == "gaussian":
        value = np.exp(-distance_sq / (2.0 * config.guidance_sigma ** 2))
    elif config.guidance == "disk":
        value = np.ones_like(distance_sq)
    else:
        value = 1.0 - np.sqrt(distance_sq) / radius
    return np.where(inside, value, 0.0).astype(np.float32)


def to_voxels(points: Iterable[Sequence[float]], grid: Grid) -> np.ndarray:
    """Physical points -> the nearest voxel indices (n, 3) of ``grid`` (may lie outside it)."""
    points = np.asarray(list(points), dtype=float).reshape(-1, 3)
    matrix = np.asarray(grid.direction, dtype=float).reshape(3, 3) * np.asarray(grid.spacing, dtype=float)
    continuous = np.linalg.solve(matrix, (points - np.asarray(grid.origin, dtype=float)).T).T
    return np.floor(continuous + 0.5).astype(np.int64)


def support_box(voxel: Sequence[int], shape: Sequence[int], radius: float) -> tuple[slice, slice, slice] | None:
    """The box of ``shape`` a click's support touches (None: it lies wholly outside)."""
    reach = int(math.floor(radius))
    out = []
    for c, n in zip(voxel, shape, strict=True):
        lo, hi = max(0, int(c) - reach), min(int(n), int(c) + reach + 1)
        if lo >= hi:
            return None
        out.append(slice(lo, hi))
    return out[0], out[1], out[2]


def paint(channel: np.ndarray, voxel: Sequence[int], config: ModelConfig) -> tuple[slice, slice, slice] | None:
    """Add one click to a channel in place (the larger value wins); return the box it changed."""
    box = support_box(voxel, channel.shape, support_radius(config))
    if box is None:
        return None
    axes = [np.arange(sl.start, sl.stop, dtype=float) - c for sl, c in zip(box, voxel, strict=True)]
    distance_sq = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    np.maximum(channel[box], click_value(distance_sq, config), out=channel[box])
    return box


@dataclass
class GuidanceVolume:
    """The two click channels over ``box`` of a working grid (all of it by default), and the clicks
    painted into them so far. ``channels`` may be given: a view into the network's input array, so
    that painting a click writes straight into what the windows read."""

    config: ModelConfig
    grid: Grid
    box: tuple[slice, slice, slice] | None = None
    channels: np.ndarray | None = None
    clicks: Clicks = NO_CLICKS

    def __post_init__(self) -> None:
        if self.box is None:
            self.box = (slice(0, self.grid.size[0]), slice(0, self.grid.size[1]), slice(0, self.grid.size[2]))
        shape = tuple(sl.stop - sl.start for sl in self.box)
        if self.channels is None:
            self.channels = np.zeros((len(LABELS), *shape), np.float32)
        elif self.channels.shape != (len(LABELS), *shape):
            raise ValueError(f"click channels of shape {self.channels.shape}, the box needs {(len(LABELS), *shape)}")

    def add(self, clicks: Clicks) -> list[tuple[slice, slice, slice]]:
        """Paint the clicks made since the last call; return the boxes (in ``box``'s own coordinates)
        they changed. A click whose support lies outside ``box`` changes nothing there."""
        changed = []
        offset = np.array([sl.start for sl in self.box])
        for label, point in clicks.added_since(self.clicks):
            voxel = to_voxels([point], self.grid)[0] - offset
            box = paint(self.channels[LABELS.index(label)], voxel, self.config)
            if box is not None:
                changed.append(box)
        self.clicks = clicks
        return changed


def encode(voxels: dict[str, np.ndarray], shape: Sequence[int], config: ModelConfig) -> np.ndarray:
    """(2, X, Y, Z) channels of clicks given as working-grid voxels per label (training's use)."""
    out = np.zeros((len(LABELS), *shape), np.float32)
    for k, label in enumerate(LABELS):
        for voxel in voxels.get(label, ()):
            paint(out[k], voxel, config)
    return out


def click_voxel(error: np.ndarray, where: str) -> tuple[int, int, int] | None:
    """Where a click corrects ``error`` (a boolean array): None when there is no error.

    ``centre``: the voxel deepest inside the largest 26-connected error component (the maximum of its
    Euclidean distance transform), as autoPET IV places clicks; ``uniform``: any error voxel at random,
    as the authors' training in practice does (numpy's global generator, so a resumed run repeats it).
    """
    if not error.any():
        return None
    if where == "uniform":
        flat = np.flatnonzero(error)
        return tuple(int(v) for v in np.unravel_index(flat[np.random.randint(len(flat))], error.shape))  # noqa: NPY002
    if where != "centre":
        raise ValueError(f"click place must be one of {CLICK_PLACES}, got {where!r}")
    labels, count = cc3d.connected_components(error, connectivity=26, return_N=True)
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    component = labels == largest
    box = ndimage.find_objects(component.astype(np.uint8))[0]
    depth = ndimage.distance_transform_edt(np.pad(component[box], 1))[1:-1, 1:-1, 1:-1]
    inner = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return tuple(int(i + sl.start) for i, sl in zip(inner, box, strict=True))
