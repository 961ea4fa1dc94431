"""The voxel block a phantom is painted on, and the primitive shapes painted onto it.

Why bounding boxes: a whole-body grid has ~50 million voxels and a phantom paints a few hundred
shapes; evaluating each shape only inside its own box is what keeps a phantom at a few seconds.
Arrays are indexed [z, y, x]; coordinates are physical LPS mm of an axis-aligned grid.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from scipy import ndimage

#: a block of the canvas: index slices (z, y, x) and broadcastable float32 coordinates x, y, z
Block = tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray, np.ndarray]

#: Classes of the organ map (``Canvas.org``, written as ORGANS.nii.gz): the structures with
#: physiological uptake a lesion network must learn to leave alone, and the lesions themselves.
ORGAN_CLASSES = ("background", "brain", "heart", "liver", "spleen", "kidney", "bladder", "bowel", "brown_fat",
                 "marrow", "lesion")
ORGAN = {name: index for index, name in enumerate(ORGAN_CLASSES)}


class Canvas:
    """Axis-aligned voxel block holding activity (SUV before blur), HU, the lesion label and the organ map.

    The organ map follows the activity: every paint of activity writes the class being painted
    (``painting``; 0 outside any), so a later shape painted over an organ (the gallbladder in the
    liver, a lesion in the spleen) takes its voxels, as it takes their uptake.
    """

    def __init__(self, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> None:
        self.xs, self.ys, self.zs = xs, ys, zs
        shape = (len(zs), len(ys), len(xs))
        self.act = np.zeros(shape, np.float32)
        self.hu = np.full(shape, -1000.0, np.float32)
        self.lab = np.zeros(shape, np.uint8)
        self.org = np.zeros(shape, np.uint8)
        self.organ = 0

    @contextmanager
    def painting(self, organ: str) -> Iterator[None]:
        """Paint the shapes drawn inside as ``organ`` (one of ``ORGAN_CLASSES``) in the organ map."""
        before, self.organ = self.organ, ORGAN[organ]
        try:
            yield
        finally:
            self.organ = before

    def block(self, lo: Sequence[float], hi: Sequence[float]) -> Block | None:
        """Index slices and broadcastable float32 coordinates of the voxels inside [lo, hi]; None if empty."""
        sl = []
        for coords, a, b in ((self.zs, lo[2], hi[2]), (self.ys, lo[1], hi[1]), (self.xs, lo[0], hi[0])):
            i0, i1 = np.searchsorted(coords, [a, b])
            if i1 <= i0:
                return None
            sl.append(slice(int(i0), int(i1)))
        z = self.zs[sl[0]].astype(np.float32)[:, None, None]
        y = self.ys[sl[1]].astype(np.float32)[None, :, None]
        x = self.xs[sl[2]].astype(np.float32)[None, None, :]
        return tuple(sl), x, y, z

    def paint(self, sl, mask: np.ndarray, act=None, hu=None, lab=None) -> None:
        """Set values where mask; value may be a scalar or an array shaped like the block."""
        if act is not None:
            self.org[sl][mask] = self.organ
        for arr, val in ((self.act, act), (self.hu, hu), (self.lab, lab)):
            if val is None:
                continue
            view = arr[sl]
            if np.ndim(val) == 0:
                view[mask] = val
            else:
                view[mask] = np.broadcast_to(val, mask.shape)[mask]


def ellipsoid_rho(
    cv: Canvas,
    centre: Sequence[float],
    semi: Sequence[float],
    rot: np.ndarray | None = None,
    pad: float = 1.0,
):
    """Normalised radius (1 on the surface) of an ellipsoid inside its bounding box, plus local coords."""
    c = np.asarray(centre, float)
    s = np.asarray(semi, float)
    r = np.eye(3) if rot is None else rot
    ext = np.sqrt(((r * s[None, :]) ** 2).sum(axis=1)) * pad
    blk = cv.block(c - ext, c + ext)
    if blk is None:
        return None
    sl, x, y, z = blk
    dx, dy, dz = x - np.float32(c[0]), y - np.float32(c[1]), z - np.float32(c[2])
    if rot is None:
        u = [dx / np.float32(s[0]), dy / np.float32(s[1]), dz / np.float32(s[2])]
    else:
        r32 = r.astype(np.float32)
        u = [(r32[0, i] * dx + r32[1, i] * dy + r32[2, i] * dz) / np.float32(s[i]) for i in range(3)]
    rho = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
    return sl, rho, u


def ellipsoid(
    cv: Canvas, centre, semi, rot=None, act=None, hu=None, shell: float = 0.0, inner_act=None, inner_hu=None
) -> None:
    """Paint a (possibly rotated) ellipsoid; with `shell` > 0 (mm) the interior gets inner_* values."""
    res = ellipsoid_rho(cv, centre, semi, rot)
    if res is None:
        return
    sl, rho, _ = res
    inside = rho <= 1.0
    cv.paint(sl, inside, act=act, hu=hu)
    if shell > 0 and (inner_act is not None or inner_hu is not None):
        inner = rho <= 1.0 - shell / float(min(semi))
        cv.paint(sl, inner, act=inner_act, hu=inner_hu)


def tube(
    cv: Canvas,
    points: Sequence[Sequence[float]],
    radius: float | Sequence[float],
    act=None,
    hu=None,
    wall: float = 0.0,
    inner_act=None,
    inner_hu=None,
) -> None:
    """Paint a polyline of capsules (vessels, bowel, ureters, long bones); radius may vary per point."""
    pts = np.asarray(points, float)
    rad = np.broadcast_to(np.asarray(radius, float), (len(pts),))
    for p0, p1, r0, r1 in zip(pts[:-1], pts[1:], rad[:-1], rad[1:], strict=True):
        rmax = max(r0, r1)
        blk = cv.block(np.minimum(p0, p1) - rmax, np.maximum(p0, p1) + rmax)
        if blk is None:
            continue
        sl, x, y, z = blk
        d = (p1 - p0).astype(np.float32)
        dd = float(d @ d) or 1.0
        dx, dy, dz = x - np.float32(p0[0]), y - np.float32(p0[1]), z - np.float32(p0[2])
        t = np.clip((dx * d[0] + dy * d[1] + dz * d[2]) / np.float32(dd), 0, 1)
        dist2 = (dx - t * d[0]) ** 2 + (dy - t * d[1]) ** 2 + (dz - t * d[2]) ** 2
        r = np.float32(r0) + t * np.float32(r1 - r0)
        inside = dist2 <= r * r
        cv.paint(sl, inside, act=act, hu=hu)
        if wall > 0 and (inner_act is not None or inner_hu is not None):
            inner = dist2 <= np.maximum(r - np.float32(wall), 0) ** 2
            cv.paint(sl, inner, act=inner_act, hu=inner_hu)


_LATTICE = 28.0  # mm between nodes of the physical texture lattice
_LAT_LO = np.array([-700.0, -700.0, -2100.0])
_LAT_N = (51, 51, 85)


def smooth_field(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> np.ndarray:
    """Unit-variance smooth random field, defined on a fixed physical lattice and interpolated (separable).

    The lattice is fixed in physical space (not in voxels), so a seed's texture does not move when the
    grid changes; only the part of the lattice the canvas covers is interpolated.
    """
    lat = ndimage.gaussian_filter(rng.standard_normal(_LAT_N[::-1]).astype(np.float32), 1.0)
    lat /= lat.std() + 1e-6

    def weights(coords: np.ndarray, lo: float, n: int) -> tuple[np.ndarray, int]:
        f = np.clip((coords - lo) / _LATTICE, 0, n - 1.001)
        i0 = np.floor(f).astype(int)
        k0, k1 = int(i0.min()), int(i0.max()) + 2
        w = np.zeros((len(coords), k1 - k0), np.float32)
        rows = np.arange(len(coords))
        w[rows, i0 - k0] = 1 - (f - i0)
        w[rows, i0 - k0 + 1] = f - i0
        return w, k0

    wx, kx = weights(xs, _LAT_LO[0], _LAT_N[0])
    wy, ky = weights(ys, _LAT_LO[1], _LAT_N[1])
    wz, kz = weights(zs, _LAT_LO[2], _LAT_N[2])
    sub = lat[kz : kz + wz.shape[1], ky : ky + wy.shape[1], kx : kx + wx.shape[1]]
    t = sub @ wx.T  # (kz, ky, nx)
    t = np.einsum("yk,zkx->zyx", wy, t)  # (kz, ny, nx)
    out = (wz @ t.reshape(t.shape[0], -1)).reshape(len(zs), len(ys), len(xs))
    return out.astype(np.float32)
