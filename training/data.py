"""Preprocess each case once, keep the result on disk, and serve training crops from it.

The cache point of the recipe is after percentile scaling: PET (float32, or float16 on request) and
label (uint8) at the target spacing are written as ``.npy`` per case and memory-mapped afterwards. That is MONAI's
PersistentDataset idea, but memory-mapped: a crop reads only its own voxels, the OS page cache keeps
hot cases in RAM, and memory use is bounded by the machine, not by a cache rate.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cc3d
import numpy as np
import torch
from torch.utils.data import Dataset

from common.atomic import write_atomic, write_json_atomic
from common.cases import Case
from model.config import ModelConfig

from .layouts import LayoutError
from .recipe import ORGAN_KEY, TrainConfig, deterministic_transforms, organ_map_transforms, random_transforms

#: hot-voxel pools are subsampled to this many indices per case (keeps the in-memory index small)
MAX_HOT_INDICES = 50_000
#: hot structures smaller than this (voxels) are weighted as if they had this size: noise specks and
#: bowel patches keep a share in proportion to their voxels instead of one each
HOT_MIN_COMPONENT = 27
#: dtypes the PET cache may be stored in: float16 halves the disk and page cache a dataset needs
#: (scaled PET lies in [0, 1], where float16 keeps three significant digits), so a larger dataset
#: is still served from RAM; crops and validation volumes are float32 whatever the cache holds
CACHE_DTYPES = ("float32", "float16")


def component_pool(mask: np.ndarray, balance: float, rng: np.random.Generator,
                   max_indices: int = MAX_HOT_INDICES) -> np.ndarray:
    """Flat indices of ``mask`` to draw crop centres from, uniformly (hot structures, or lesions).

    ``balance`` 1: every masked voxel equally likely (a subsample of them). Below 1, each 26-connected
    structure of s voxels gets a share proportional to ``s ** balance`` (0.5: a 60 ml bladder is drawn
    about a fifth as often as a 1.2 l brain, not a twentieth), realised by resampling the voxels with
    weights ``max(s, HOT_MIN_COMPONENT) ** (balance - 1)``; the pool may then repeat an index.
    """
    voxels = np.flatnonzero(mask)
    if balance >= 1.0 or not len(voxels):
        if len(voxels) > max_indices:
            voxels = np.sort(rng.choice(voxels, max_indices, replace=False))
        return voxels.astype(np.int64)
    components = cc3d.connected_components(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=26)
    flat = components.ravel()[voxels]
    sizes = np.bincount(flat).astype(np.float64)
    weights = np.maximum(sizes[flat], HOT_MIN_COMPONENT) ** (balance - 1.0)
    size = min(max_indices, 8 * len(voxels))  # a few voxels need no 50 000-entry pool
    picked = rng.choice(voxels, size, replace=True, p=weights / weights.sum())
    return np.sort(picked).astype(np.int64)


def as_sources(records: Sequence[Any]) -> list[Case]:
    """The cases training reads (a PET and its label), from layout cases or anything with case_id, pet, label."""
    return [Case(str(r.case_id), Path(r.pet), label=Path(r.label),
                 organs=Path(r.organs) if getattr(r, "organs", None) else None) for r in records]


def cache_key(config: ModelConfig, dtype: str = "float32") -> str:
    """Preprocessed arrays depend only on spacing, percentiles and the stored dtype: one cache serves
    every network size. A float32 cache keeps the key it always had."""
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"cache dtype must be one of {CACHE_DTYPES}, got {dtype!r}")
    fields = {"spacing": list(config.spacing), "percentiles": list(config.percentiles), "v": 1}
    if dtype != "float32":
        fields["dtype"] = dtype
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:12]


def _atomic_save_npy(array: np.ndarray, path: Path) -> None:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save would append .npy to the temp name
            np.save(fh, array)

    write_atomic(path, save)


def _one_thread() -> None:
    """Worker initialiser: one thread per preprocessing process, so N workers use N cores."""
    torch.set_num_threads(1)


def preprocess_case(source: Case, config: ModelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the deterministic transforms: (pet float32 XYZ, label uint8 XYZ, RAS affine 4x4)."""
    data = _apply(deterministic_transforms(config), {"pet": str(source.pet), "label": str(source.label)}, source)
    pet = np.asarray(data["pet"][0], dtype=np.float32)
    label = (np.asarray(data["label"][0]) > 0.5).astype(np.uint8)
    affine = np.asarray(data["pet"].affine, dtype=np.float64)
    return pet, label, affine


def preprocess_organs(source: Case, config: ModelConfig) -> np.ndarray:
    """The organ map on the working grid (uint8 XYZ), resampled as the label is; the PET is not read again."""
    data = _apply(organ_map_transforms(config), {ORGAN_KEY: str(source.organs)}, source)
    return np.rint(np.asarray(data[ORGAN_KEY][0])).astype(np.uint8)


def _apply(chain: Any, files: dict[str, str], source: Case) -> dict[str, Any]:
    """``chain`` on ``files``; a failure names the case, its files and the root cause in one line."""
    try:
        return chain(files)
    except Exception as err:  # MONAI reports "applying transform <LoadImaged ...>"; say which files and why
        root = err
        while root.__cause__ is not None:
            root = root.__cause__
        raise LayoutError(f"case {source.case_id} ({', '.join(files.values())}): cannot be preprocessed: "
                          f"{type(root).__name__}: {str(root).strip().splitlines()[0] if str(root).strip() else ''}"
                          ) from err


def source_stamp(path: Path | None) -> list[int] | None:
    """A source file's size and modification time (ns): what tells a cached case from another dataset's
    case of the same id, or from a file rewritten since, without reading the image."""
    if path is None:
        return None
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


class CaseStore:
    """Preprocessed cases in ``cache_dir/<cache key>/``; builds missing ones on first use.

    ``dtype`` is the PET array's stored dtype (see ``CACHE_DTYPES``); ``load`` returns it as stored.
    A cached case records its source files' ``source_stamp``; one whose sources differ (a case of
    the same id from another dataset sharing ``--cache-dir``, a file rewritten since, a cache made
    before the stamps) is preprocessed again instead of served.
    """

    def __init__(
        self, sources: Sequence[Case], config: ModelConfig, cache_dir: Path, dtype: str = "float32"
    ) -> None:
        self.sources = list(sources)
        self.config = config
        self.dtype = dtype
        self.folder = Path(cache_dir) / cache_key(config, dtype)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.by_id = {s.case_id: s for s in self.sources}
        # checked against their source files once per process: crops load a case every step
        self._checked: dict[str, dict[str, Any]] = {}
        self._organs_checked: set[str] = set()

    def _paths(self, case_id: str) -> tuple[Path, Path, Path]:
        return (
            self.folder / f"{case_id}.pet.npy",
            self.folder / f"{case_id}.label.npy",
            self.folder / f"{case_id}.json",
        )

    def ensure(self, case_id: str) -> dict[str, Any]:
        """The case's cache entry (its JSON), preprocessed first where it is missing or stale."""
        meta = self._cached_meta(case_id)
        if meta is not None:
            return meta
        pet_p, lab_p, meta_p = self._paths(case_id)
        pet, label, affine = preprocess_case(self.by_id[case_id], self.config)
        _atomic_save_npy(pet.astype(self.dtype), pet_p)
        _atomic_save_npy(label, lab_p)
        meta = {
            "case_id": case_id,
            "shape": list(pet.shape),
            "affine": affine.tolist(),
            "lesion_voxels": int(label.sum()),
            "spacing": list(self.config.spacing),
            "dtype": self.dtype,
            "source": self._stamps(case_id),
        }
        write_json_atomic(meta, meta_p)  # written last: its presence marks a complete case
        self._checked[case_id] = meta
        return meta

    def _stamps(self, case_id: str) -> dict[str, list[int] | None]:
        source = self.by_id[case_id]
        return {"pet": source_stamp(source.pet), "label": source_stamp(source.label)}

    def _cached_meta(self, case_id: str) -> dict[str, Any] | None:
        """The JSON of a whole entry (it is written last) made from this store's source files of the
        case; None where there is none."""
        if case_id in self._checked:
            return self._checked[case_id]
        pet_p, lab_p, meta_p = self._paths(case_id)
        if not (pet_p.is_file() and lab_p.is_file()):
            return None
        try:
            meta = json.loads(meta_p.read_text())
        except (OSError, ValueError):
            return None
        if meta.get("source") != self._stamps(case_id):
            return None
        self._checked[case_id] = meta
        return meta

    def is_cached(self, case_id: str) -> bool:
        return self._cached_meta(case_id) is not None

    def ensure_all(self, progress: bool = False, workers: int = 1) -> None:
        """Preprocess every case not cached yet, in ``workers`` processes when > 1.

        Resampling a whole-body study is single-core work (seconds per case at 4 mm, more at the
        paper's 2 mm), so a machine with many cores prepares a large dataset that many times faster.
        Each case is written atomically, so an interrupted run leaves only whole cases behind.
        """
        ids = [s.case_id for s in self.sources if not self.is_cached(s.case_id)]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(ids), desc="preprocess", unit="case")
        if workers <= 1 or len(ids) <= 1:
            for case_id in ids:
                self.ensure(case_id)
                if bar is not None:
                    bar.update()
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the parent may already run torch/OpenMP threads
            pool = ProcessPoolExecutor(min(workers, len(ids)), mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_one_thread)
            try:
                for _ in pool.map(self.ensure, ids):
                    if bar is not None:
                        bar.update()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # the first failure ends the run, naming its file
                raise
            pool.shutdown()
        if bar is not None:
            bar.close()

    def load(self, case_id: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        meta = self.ensure(case_id)
        pet_p, lab_p, _ = self._paths(case_id)
        mode = "r" if mmap else None
        return np.load(pet_p, mmap_mode=mode), np.load(lab_p, mmap_mode=mode), meta

    def load_organs(self, case_id: str, mmap: bool = True) -> np.ndarray:
        """The case's organ map on the working grid, made on first use (a file beside the cached case)."""
        path, stamp_path = self.folder / f"{case_id}.organs.npy", self.folder / f"{case_id}.organs.json"
        if case_id not in self._organs_checked:
            source = self.by_id[case_id]
            if source.organs is None:
                raise LayoutError(f"case {case_id}: no organ map (ORGANS.nii.gz beside {source.label}); organ "
                                  "supervision needs one per case: make the phantoms with --organs")
            stamp = {"organs": source_stamp(source.organs), "pet": source_stamp(source.pet)}
            try:
                cached = path.is_file() and json.loads(stamp_path.read_text()) == stamp
            except (OSError, ValueError):
                cached = False
            if not cached:  # the stamp is written after the map: its match marks a whole map of these files
                _atomic_save_npy(preprocess_organs(source, self.config), path)
                write_json_atomic(stamp, stamp_path)
            self._organs_checked.add(case_id)
        return np.load(path, mmap_mode="r" if mmap else None)

    def has_lesion(self, case_id: str) -> bool:
        return self.load(case_id)[2]["lesion_voxels"] > 0


#: Voxels around a lesion whose uptake is its own blurred rim, not a neighbouring organ's (``adjacent``).
ADJACENT_HALO = 2


class CropDataset(Dataset):
    """Item i = ``samples_per_volume`` augmented crops of case ``draws[i]``.

    ``draws`` is set per epoch by ``epoch_draws`` so that an epoch is a fixed number of iterations,
    independent of the number of cases, and identical after a resume.
    """

    def __init__(
        self, store: CaseStore, case_ids: Sequence[str], config: ModelConfig, train: TrainConfig
    ) -> None:
        self.store = store
        self.case_ids = list(case_ids)
        self.train = train
        self.transform = random_transforms(config, train)
        self.draws: list[int] = []
        self.index: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if train.uses_hot_sampler:
            for case_id in self.case_ids:
                self.index[case_id] = self._pools(case_id)

    def _pools(self, case_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pools to centre crops on (flat indices): lesion voxels, hot non-lesion voxels (see
        ``component_pool``), and lesion voxels within ``adjacent_mm`` of hot non-lesion uptake."""
        pet, label, _ = self.store.load(case_id)
        flat_label = np.asarray(label).ravel()
        fg = np.flatnonzero(flat_label).astype(np.int64)
        hot_mask = (np.asarray(pet) > self.train.hot_threshold) & (np.asarray(label) == 0)
        adj = np.zeros(0, np.int64)
        if self.train.adjacent > 0 and len(fg) and hot_mask.any():
            from scipy import ndimage

            spacing = self.store.config.spacing
            # the lesion's own blurred rim is hot too: uptake counts from two voxels beyond the label on
            halo = ndimage.distance_transform_edt(np.asarray(label) == 0, sampling=spacing)
            halo = halo <= ADJACENT_HALO * max(spacing)
            other = hot_mask & ~halo
            if other.any():
                distance = ndimage.distance_transform_edt(~other, sampling=spacing)
                adj = fg[distance.ravel()[fg] <= self.train.adjacent_mm]
        rng = np.random.default_rng(zlib.crc32(case_id.encode()))  # stable across processes
        if self.train.lesion_balance < 1.0 and len(fg):  # else bulky lesions centre most lesion crops
            fg = component_pool(np.asarray(label) > 0, self.train.lesion_balance, rng)
        return fg, component_pool(hot_mask, self.train.hot_balance, rng), adj

    def draw_weights(self) -> list[float] | None:
        """Per-case draw weights giving lesion cases ``lesion_case_share`` of the draws (None: uniform)."""
        share = self.train.lesion_case_share
        if share <= 0:
            return None
        lesion = [self.store.has_lesion(c) for c in self.case_ids]
        n_pos = sum(lesion)
        if n_pos in (0, len(lesion)):
            return None
        return [share / n_pos if pos else (1 - share) / (len(lesion) - n_pos) for pos in lesion]

    def set_draws(self, draws: Sequence[int]) -> None:
        self.draws = list(draws)

    def __len__(self) -> int:
        return len(self.draws)

    def __getitem__(self, i: int) -> list[dict[str, Any]]:
        case_id = self.case_ids[self.draws[i]]
        hot_path = self.train.uses_hot_sampler
        pet, label, _ = self.store.load(case_id, mmap=hot_path)
        item: dict[str, Any] = {"pet": pet[None], "label": label[None], "case_id": case_id}
        if self.train.organ_weight > 0:
            item["organs"] = self.store.load_organs(case_id, mmap=hot_path)[None]
        if hot_path:
            item["fg_idx"], item["hot_idx"], item["adj_idx"] = self.index[case_id]
        else:  # MONAI's crop wants whole arrays in memory, as float
            item["pet"] = torch.from_numpy(np.ascontiguousarray(item["pet"], dtype=np.float32))
            for key in self.train.keys[1:]:
                item[key] = torch.from_numpy(item[key].astype(np.float32))
        out = self.transform(item)
        return out if isinstance(out, list) else [out]


def epoch_draws(
    n_cases: int, n_draws: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
    weights: Sequence[float] | None = None,
) -> list[int]:
    """Case indices for one epoch, derived from (seed, epoch) only.

    Shuffled passes over all cases, or, with ``weights``, independent weighted draws. Each rank takes
    every ``world``-th draw, so ranks see disjoint shards of the same epoch.
    """
    rng = np.random.default_rng([seed, epoch])
    total = n_draws * world
    if weights is not None:
        p = np.asarray(weights, dtype=float)
        order = rng.choice(n_cases, size=total, p=p / p.sum())
    else:
        passes = [rng.permutation(n_cases) for _ in range(-(-total // max(n_cases, 1)))]
        order = np.concatenate(passes)[:total] if passes else np.zeros(0, dtype=int)
    return [int(v) for v in order[rank::world]]
