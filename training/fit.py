"""Train one fold: the epoch loop, NaN-safe steps, sliding-window validation, resumable checkpoints, DDP.

Determinism across a kill: every epoch re-derives all its randomness (python, numpy, torch, the
MONAI transforms' RandomState, the case draws and the DataLoader worker seeds) from (seed, epoch,
rank). An epoch therefore starts from the same state whether or not the process was restarted, and
``last.pt`` (written atomically at each epoch end) holds everything else: weights, Adam, the cosine
schedule, the GradScaler and the history.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.data import DataLoader, list_data_collate
from monai.data.utils import worker_init_fn
from monai.inferers import SlidingWindowInferer
from tqdm import tqdm

from common.atomic import json_safe, write_json_atomic
from common.cases import Case
from model.config import ModelConfig
from model.network import (
    atomic_torch_save,
    build_network,
    count_parameters,
    load_checkpoint,
    save_checkpoint,
    weights_digest,
)
from runner.allocator import keep_large_allocations_on_heap
from training.clicks import ClickSimulator

from .data import CaseStore, CropDataset, epoch_draws
from .layouts import LayoutError
from .recipe import NonFiniteLoss, TrainConfig, make_loss, make_optimizer, make_scheduler, make_train_inferer
from .reporting import CSV_FIELDS, is_finite_number, plot_curves, write_metrics_csv

STATE_KIND = "training-state"


# ----------------------------------------------------------------------------------------------
# process group
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group when launched by torchrun (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        # the step's flags and means are CPU tensors: gloo carries them beside NCCL's CUDA tensors
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is true on any: all ranks must skip a step together."""
    if info.world <= 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


# ----------------------------------------------------------------------------------------------
# randomness
# ----------------------------------------------------------------------------------------------


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def seed_epoch(seed: int, epoch: int, rank: int, dataset: CropDataset | None = None) -> None:
    """Set every RNG the epoch uses from (seed, epoch, rank); see the module docstring."""
    s = epoch_seed(seed, epoch, rank)
    random.seed(s)
    np.random.seed(s)  # noqa: NPY002 (the global RNG is what third-party code draws from)
    torch.manual_seed(s)
    if dataset is not None:
        dataset.transform.set_random_state(seed=s)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as weights_only-loadable values (for inspection and resume)."""
    np_state = np.random.get_state()  # noqa: NPY002
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))  # noqa: NPY002
    torch.set_rng_state(state["torch"])


# ----------------------------------------------------------------------------------------------
# one step
# ----------------------------------------------------------------------------------------------


@dataclass
class StepResult:
    loss: float
    applied: bool
    has_lesion: bool = False  # the batch's labels hold a lesion voxel (see ``loss_lesion``)
    organ_loss: float | None = None  # the organ head's cross-entropy, unweighted (organ supervision only)


def autocast_dtype(train: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The mixed-precision type for ``train.amp``, or None for plain fp32.

    CUDA: fp16 with a GradScaler, as the paper trained (T4-class cards have no bf16). CPU: bf16
    where the CPU computes it natively (AMX / AVX-512 BF16, e.g. Sapphire Rapids); a demo-network
    step measured 2.8x faster than fp32 there. Elsewhere a CPU trains in fp32.
    """
    if not train.amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def cpu_has_native_bf16() -> bool:
    """AMX or AVX-512 BF16 instructions; oneDNN only emulates bf16 on older AVX-512 CPUs (slower than fp32)."""
    return torch.backends.mkldnn.is_available() and (
        torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    )


def train_step(
    net: torch.nn.Module,
    batch: dict[str, Any],
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    info: DistInfo = DistInfo(),
    inferer: SlidingWindowInferer | None = None,
    clicks: ClickSimulator | None = None,
    organ_weight: float = 0.0,
) -> StepResult:
    """One optimiser step; a non-finite loss or gradient is never applied (no step, grads dropped).

    ``inferer`` (``recipe.make_train_inferer``): the forward pass through a sliding window, the loss
    on its stitched output; None runs the network on the whole crop. ``clicks``: for an interactive
    network, the simulated corrections that fill its click channels first. ``organ_weight``: ``net``
    is an ``OrganHead`` and the batch has ``organs``; its cross-entropy joins the lesion DiceCE.
    """
    x = batch["pet"].to(device, non_blocking=True)
    y = batch["label"].to(device, non_blocking=True)
    has_lesion = bool(batch["label"].any())
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        if clicks is not None:  # an interactive network: its clicks from its own errors (training/clicks.py)
            x = torch.cat([x, clicks.guidance(lambda v: inferer(v, net) if inferer is not None else net(v), x, y)], 1)
        logits = inferer(x, net) if inferer is not None else net(x)
        loss = loss_fn(logits[:, :2].float(), y)
        if organ_weight > 0:
            from training.organ_head import organ_loss

            organ_part = organ_loss(logits[:, 2:], batch["organs"].to(device, non_blocking=True))
            loss = loss + organ_weight * organ_part
    value = float(loss.detach())
    organ_value = float(organ_part.detach()) if organ_weight > 0 else None
    if _any_rank(not math.isfinite(value), info):
        optimizer.zero_grad(set_to_none=True)
        return StepResult(value, False, has_lesion, organ_value)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    norms = [p.grad.detach().norm() for p in net.parameters() if p.grad is not None]
    grad_ok = bool(torch.isfinite(torch.stack(norms)).all()) if norms else True
    if scaler.is_enabled():
        before = scaler.get_scale()
        scaler.step(optimizer)  # skips by itself on inf/NaN gradients
        scaler.update()
        applied = grad_ok and scaler.get_scale() >= before
    elif grad_ok:  # DDP has averaged the gradients already: every rank takes the same decision
        optimizer.step()
        applied = True
    else:
        applied = False
    optimizer.zero_grad(set_to_none=True)
    return StepResult(value, applied, has_lesion, organ_value)


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------


def validate(
    net: torch.nn.Module,
    store: CaseStore,
    case_ids: Sequence[str],
    config: ModelConfig,
    device: str,
    info: DistInfo = DistInfo(),
    per_case: bool = False,
) -> dict[str, Any]:
    """Dice/FPV/FNV at the target spacing, each case segmented by the container's own stages.

    The cached volume is already preprocessed, so it enters ``Predictor.predict_working``: the
    same body region and crop mode (``model.cropping.DEFAULT_CROP``), sliding window and blend as
    ``process.py``, so the figures in metrics.csv, best.pt and the manifest describe what users run.

    Validation cases are shared out across ranks and the per-case results gathered on every rank.
    ``per_case`` adds a ``cases`` table (case id -> dice, fpv_ml, fnv_ml, has_lesion), so that a
    fold's mean can be traced to the studies that make it; training history keeps the means only.
    """
    from evaluation.metrics import case_metrics
    from model import Predictor
    from model.preprocessing import PreparedVolume

    module = net.module if hasattr(net, "module") else net
    module = getattr(module, "lesion_network", module)  # an organ-supervised network: its lesion part
    was_training = module.training
    predictor = Predictor([module], config, device=device)
    rows = []
    with torch.no_grad():
        for case_id in list(case_ids)[info.rank :: info.world]:
            pet, label, _ = store.load(case_id, mmap=False)
            pet = pet.astype(np.float32)  # a float16 cache; a copy either way, the cache stays as it is
            pred = predictor.predict_working(PreparedVolume.working(pet, config.spacing)).astype(np.uint8)
            m = case_metrics(label, pred, config.spacing)
            rows.append((case_id, float(m.dice), float(m.fpv_ml), float(m.fnv_ml), bool(m.has_lesion)))
    module.train(was_training)
    if info.world > 1:
        gathered: list[Any] = [None] * info.world
        dist.all_gather_object(gathered, rows)
        rows = [r for part in gathered for r in part]
    lesion_dice = [r[1] for r in rows if r[4] and math.isfinite(r[1])]
    result: dict[str, Any] = {
        "val_dice": float(np.mean(lesion_dice)) if lesion_dice else float("nan"),
        "val_fpv_ml": float(np.mean([r[2] for r in rows])) if rows else float("nan"),
        "val_fnv_ml": float(np.mean([r[3] for r in rows])) if rows else float("nan"),
        "val_cases": len(rows),
    }
    if per_case:  # a lesion-free study without prediction has no Dice: NaN, like an empty mean
        result["cases"] = {
            case_id: {"dice": dice, "fpv_ml": fpv, "fnv_ml": fnv, "has_lesion": lesion}
            for case_id, dice, fpv, fnv, lesion in sorted(rows)
        }
    return result


def pick_val_cases(store: CaseStore, case_ids: Sequence[str], limit: int) -> list[str]:
    """The whole fold, or ``limit`` cases alternating lesion / lesion-free (both kinds count)."""
    ids = sorted(case_ids)
    if limit <= 0 or limit >= len(ids):
        return ids
    pos = [c for c in ids if store.has_lesion(c)]
    neg = [c for c in ids if c not in set(pos)]
    out: list[str] = []
    while len(out) < limit and (pos or neg):
        for pool in (pos, neg):
            if pool and len(out) < limit:
                out.append(pool.pop(0))
    return out


# ----------------------------------------------------------------------------------------------
# feedback
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# the fold
# ----------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    out: Path
    epochs_done: int
    best_epoch: int
    best_val_dice: float
    status: str  # "finished" | "budget" | "stop_epoch" (or "stopped" by ``stop_after``)
    history: list[dict[str, Any]] = field(default_factory=list)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class FitOptions:
    """How one fold is run (not what is learned: that is ModelConfig and TrainConfig)."""

    cache_dir: Path
    cache_dtype: str = "float32"
    resume: bool = False
    device: str | None = None
    num_workers: int = 0
    time_budget_s: float | None = None
    data_info: dict[str, Any] | None = None
    fold: int | None = None
    progress: bool = True
    stop_after: int | None = None
    init: Path | None = None
    # end the run after this epoch while the cosine stays planned for ``train.epochs`` (the authors
    # planned 800 epochs and kept each network's most recent checkpoint at 391-564)
    stop_epoch: int | None = None


@dataclass
class _Run:
    """The state of one fold's training, shared by the steps of ``fit``."""

    config: ModelConfig
    train: TrainConfig
    opts: FitOptions
    out: Path
    info: DistInfo
    dev: torch.device
    amp_dtype: torch.dtype | None
    store: CaseStore
    train_ids: list[str]
    val_ids: list[str]
    dataset: CropDataset
    draw_weights: list[float] | None
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    model: torch.nn.Module | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    elapsed: float = 0.0
    best_dice: float = -1.0
    best_epoch: int = -1
    planned: int = 0
    clicks: ClickSimulator | None = None
    organ_head: torch.nn.Module | None = None


def fit(
    train_sources: Sequence[Case],
    val_sources: Sequence[Case],
    config: ModelConfig,
    train: TrainConfig,
    out: Path,
    **options: Any,
) -> FitResult:
    """Train one network; writes ``last.pt``, ``best.pt``, ``metrics.csv``, ``curves.png`` in ``out``.

    ``options`` are ``FitOptions``' fields. ``stop_after`` ends this process after that many epochs
    (as a kill at an epoch boundary would), ``time_budget_s`` before an epoch that would overrun
    it; both leave a resumable ``last.pt``. ``init`` warm-starts the network from a checkpoint of
    the same config (fresh optimizer and schedule), e.g. to continue a fold's training in a later
    session with a new learning-rate cycle.
    """
    run = _setup(train_sources, val_sources, config, train, Path(out), FitOptions(**options))
    _resume_or_start(run)
    if run.info.world > 1:
        run.model = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.dev.index] if run.dev.type == "cuda" else None)
    loss_fn, inferer = make_loss(train), make_train_inferer(config, train)
    status, epoch = "finished", run.start_epoch
    while epoch < run.planned:
        status = _stop_reason(run, epoch)
        if status != "finished":
            break
        t0 = time.monotonic()
        row = _train_epoch(run, epoch, loss_fn, inferer)
        val_s = _validate_epoch(run, row, epoch, t0)
        row["epoch_s"] = time.monotonic() - t0
        row["val_s"] = val_s
        run.elapsed += row["epoch_s"]
        row["elapsed_s"] = run.elapsed
        run.history.append(row)
        improved = is_finite_number(row["val_dice"]) and row["val_dice"] > run.best_dice
        if improved:
            run.best_dice, run.best_epoch = row["val_dice"], epoch + 1
        if run.info.is_main:
            _save_epoch(run, row, improved)
        _barrier(run.info)
        epoch += 1
    if status in ("budget", "stop_epoch") and run.val_ids and run.history \
            and not is_finite_number(run.history[-1].get("val_dice")):
        run.best_dice, run.best_epoch = _validate_last(run.model, run.net, run.store, run.val_ids, config, run.dev,
                                                       run.info, run.history, run.out, run.best_dice, run.best_epoch)
    if run.info.is_main:
        write_json_atomic({"status": status, "epochs_done": len(run.history), "best_epoch": run.best_epoch,
                           "best_val_dice": run.best_dice}, run.out / "status.json")
    return FitResult(run.out, len(run.history), run.best_epoch, run.best_dice, status, run.history)


def _setup(train_sources: Sequence[Case], val_sources: Sequence[Case], config: ModelConfig,
           train: TrainConfig, out: Path, opts: FitOptions) -> _Run:
    """Device and process group, the case cache, the crop dataset, the network and its optimiser."""
    device = opts.device or _default_device()
    info = init_distributed(device)
    if info.world > 1 and device.startswith("cuda"):
        device = f"cuda:{info.local_rank}"
        torch.cuda.set_device(device)
    dev = torch.device(device)
    if dev.type == "cpu":  # every step's activations would otherwise be mapped and faulted in afresh
        keep_large_allocations_on_heap()
    if train.deterministic:  # the authors' set_determinism + cudnn.deterministic: the same kernels every run
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    elif dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels
    amp_dtype = autocast_dtype(train, dev)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    store = CaseStore(list(train_sources) + list(val_sources), config, opts.cache_dir, opts.cache_dtype)
    if info.is_main:  # one process builds the cache; the others wait for it
        store.ensure_all(progress=opts.progress)
    _barrier(info)
    train_ids = [s.case_id for s in train_sources]
    val_ids = pick_val_cases(store, [s.case_id for s in val_sources], train.val_max_cases)
    dataset = CropDataset(store, train_ids, config, train)
    torch.manual_seed(train.seed)  # identical initial weights on every rank
    net = build_network(config).to(dev)
    trained = net
    if train.organ_weight > 0:  # the lesion network plus a training-only organ head (training/organ_head.py)
        from training.organ_head import OrganHead

        for case_id in train_ids:  # before any step: a missing or foreign map is named now, not mid-epoch
            top = int(np.max(store.load_organs(case_id)))
            if top >= train.organ_classes:
                raise LayoutError(f"case {case_id}: organ map class {top}, but organ_classes is "
                                  f"{train.organ_classes}")
        trained = OrganHead(net, train.organ_classes, train.organ_head_levels).to(dev)
    optimizer = make_optimizer(net.parameters(), train, trained.head.parameters() if trained is not net else None)
    if config.interactive and train.click_rounds == 0:
        raise SystemExit(f"'{config.name}' reads clicks but the recipe simulates none (click_rounds 0); "
                         "use an interactive preset's recipe")
    clicks = (ClickSimulator(config, train.click_rounds, train.click_rounds_random, train.click_place)
              if config.interactive else None)
    return _Run(config, train, opts, out, info, dev, amp_dtype, store, train_ids, val_ids, dataset,
                dataset.draw_weights(), net, optimizer, make_scheduler(optimizer, train),
                torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16),  # bf16 needs no scaling
                model=trained, planned=train.epochs, clicks=clicks,
                organ_head=trained.head if trained is not net else None)


def _resume_or_start(run: _Run) -> None:
    """Continue from ``last.pt`` (same configs only), or start fresh, warm from ``init`` if given."""
    last_path = run.out / "last.pt"
    if run.opts.resume and last_path.is_file():
        state = torch.load(last_path, map_location="cpu", weights_only=True)
        if ModelConfig.from_json(state["config"]) != run.config:  # fields added since read as their defaults
            raise SystemExit(f"{last_path}: saved with a different model config; refusing to resume")
        saved_train = TrainConfig.from_json(state["train_config"])
        if saved_train != run.train:  # e.g. a demo run from before CPU bf16 (amp) or before round 4 (hot_balance)
            raise SystemExit(
                f"{last_path}: saved with different training settings: "
                f"{'; '.join(saved_train.differences(run.train))}; resume with the flags the run was started with"
            )
        run.net.load_state_dict(state["net"])
        if state.get("organ_head") is not None and run.organ_head is not None:
            run.organ_head.load_state_dict(state["organ_head"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        run.start_epoch = int(state["epoch"])
        run.planned = int(state.get("planned_epochs", run.train.epochs))
        run.elapsed = float(state.get("elapsed_s", 0.0))
        run.history = list(state.get("history", []))
        run.best_dice, run.best_epoch = float(state.get("best_val_dice", -1.0)), int(state.get("best_epoch", -1))
        if run.info.is_main:
            print(f"resumed from {last_path} at epoch {run.start_epoch}", flush=True)
        return
    if run.opts.init is not None:
        warm = load_checkpoint(Path(run.opts.init))
        if run.config.interactive and not warm.config.interactive:  # an automatic network learns to read clicks
            from training.widen import WidenError, with_click_channels

            try:
                warm_net = with_click_channels(warm.network, warm.config, run.config, run.train.click_init_gain)
            except WidenError as exc:
                raise SystemExit(f"{run.opts.init}: {exc}; cannot warm-start from it") from None
            run.net.load_state_dict(warm_net.state_dict())
        elif not warm.config.same_network(run.config):  # the training crop may differ
            raise SystemExit(f"{run.opts.init}: saved with a different model config; cannot warm-start from it")
        else:
            run.net.load_state_dict(warm.network.state_dict())
        if run.info.is_main:
            print(f"warm start from {run.opts.init}", flush=True)
    if run.info.is_main:
        print(f"network '{run.config.name}': {count_parameters(run.net) / 1e6:.2f} M parameters; "
              f"{len(run.train_ids)} train, {len(run.val_ids)} val cases; device {run.dev}, world {run.info.world}",
              flush=True)


def _stop_reason(run: _Run, epoch: int) -> str:
    """"stopped" (``stop_after`` epochs done in this process), "stop_epoch" (``stop_epoch`` reached),
    "budget" (the next epoch would overrun the time budget) or "finished" (go on)."""
    if run.opts.stop_after is not None and epoch - run.start_epoch >= run.opts.stop_after:
        return "stopped"
    if run.opts.stop_epoch is not None and epoch >= run.opts.stop_epoch:
        return "stop_epoch"
    budget = run.opts.time_budget_s
    if budget is not None and run.history and \
            run.elapsed + _next_epoch_s(run.history, epoch + 1, run.planned, run.train) > budget:
        return "budget"  # a safety stop: plan_epochs normally keeps the run inside the budget
    return "finished"


def _train_epoch(run: _Run, epoch: int, loss_fn: torch.nn.Module, inferer: SlidingWindowInferer | None
                 ) -> dict[str, Any]:
    """One epoch of optimiser steps; its history row (losses, lr, steps, skipped; validation still NaN)."""
    train, info = run.train, run.info
    seed_epoch(train.seed, epoch, info.rank, run.dataset)
    run.dataset.set_draws(epoch_draws(len(run.train_ids), train.steps_per_epoch(len(run.train_ids), info.world)
                                      * train.volumes_per_step, train.seed, epoch, info.rank, info.world,
                                      weights=run.draw_weights))
    loader = DataLoader(run.dataset, batch_size=train.volumes_per_step, shuffle=False,
                        num_workers=run.opts.num_workers, collate_fn=list_data_collate,
                        worker_init_fn=worker_init_fn, persistent_workers=False, pin_memory=run.dev.type == "cuda")
    run.model.train()
    # the DiceCE of a batch without lesion voxels is about 0.5 even when the network is right on
    # every voxel (its lesion channel's Dice term stays ~1 until the summed squared lesion
    # probability falls below the 1e-5 smoothing), so "loss" carries a floor set by the share of
    # such batches; the mean over batches with lesions is the part that shows fitting
    losses: list[float] = []
    lesion_losses: list[float] = []
    organ_losses: list[float] = []  # the organ head's own cross-entropy: shows whether it learns
    skipped = 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{run.planned}", unit="it", leave=False,
               disable=not (run.opts.progress and info.is_main), mininterval=1.0 if sys.stderr.isatty() else 30.0)
    for i, batch in enumerate(bar):
        step = train_step(run.model, batch, loss_fn, run.optimizer, run.scaler, run.dev, run.amp_dtype, info, inferer,
                          run.clicks, train.organ_weight)
        if not step.applied and train.nonfinite == "stop" and _any_rank(not math.isfinite(step.loss), info):
            bar.close()
            cases = ", ".join(str(c) for c in batch.get("case_id", [])) or "unknown"
            where = (f"loss {step.loss} on case {cases}" if not math.isfinite(step.loss)
                     else "loss not finite on another process")
            raise NonFiniteLoss(f"epoch {epoch + 1} step {i + 1}: {where}; the '{train.name}' recipe stops here, "
                                f"as the authors' training did (TerminateOnNan); {run.out / 'last.pt'} holds "
                                f"epoch {epoch}")
        if step.applied:
            losses.append(step.loss)
            if step.has_lesion:
                lesion_losses.append(step.loss)
            if step.organ_loss is not None:
                organ_losses.append(step.organ_loss)
        else:
            skipped += 1
            if info.is_main:  # which crops: the case ids, so that a recurring one can be looked at
                cases = ", ".join(str(c) for c in batch.get("case_id", [])) or "unknown cases"
                tqdm.write(f"epoch {epoch + 1} step {i + 1}: loss {step.loss:.4g}, non-finite loss or gradient "
                           f"({cases}); step skipped")
        bar.set_postfix(loss=f"{step.loss:.4f}", skipped=skipped, refresh=False)
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    row: dict[str, Any] = {"epoch": epoch + 1, "loss": _mean_over_ranks(losses, info),
                           "loss_lesion": _mean_over_ranks(lesion_losses, info),
                           "loss_organ": _mean_over_ranks(organ_losses, info), "lr": lr,
                           "steps": len(losses) + skipped, "skipped": skipped, "val_dice": float("nan"),
                           "val_fpv_ml": float("nan"), "val_fnv_ml": float("nan"), "val_cases": 0}
    return row


def _mean_over_ranks(values: list[float], info: DistInfo) -> float:
    """Mean of a list over every rank's values (NaN where no rank has any)."""
    mean = float(np.mean(values)) if values else float("nan")
    if info.world <= 1:
        return mean
    t = torch.tensor([mean if values else 0.0, float(bool(values))])
    dist.all_reduce(t)
    return float(t[0] / t[1]) if t[1] > 0 else float("nan")


def _validate_epoch(run: _Run, row: dict[str, Any], epoch: int, t0: float) -> float:
    """Validate when due (and after the first epoch of a budgeted run, to plan its length); seconds spent."""
    budgeting = run.opts.time_budget_s is not None and epoch == 0
    val_s = 0.0
    if run.val_ids and (budgeting or _validates(epoch + 1, run.planned, run.train.val_every)):
        t_val = time.monotonic()
        row.update(validate(run.model, run.store, run.val_ids, run.config, str(run.dev), run.info))
        val_s = time.monotonic() - t_val
    if budgeting:  # fit the cosine schedule to the budget, from the first epoch's timings
        run.planned = _agree(plan_epochs(run.opts.time_budget_s, time.monotonic() - t0 - val_s, val_s, run.train),
                             run.info)
        run.scheduler.T_max = run.planned
    return val_s


def _save_epoch(run: _Run, row: dict[str, Any], improved: bool) -> None:
    """``last.pt`` (and ``best.pt`` when validation improved), metrics.csv, curves.png, one log line."""
    meta = dict(kind=STATE_KIND, epoch=row["epoch"], train_config=run.train.to_json(), history=run.history,
                elapsed_s=run.elapsed, best_val_dice=run.best_dice, best_epoch=run.best_epoch,
                planned_epochs=run.planned, fold=run.opts.fold, world=run.info.world,
                data=json.dumps(run.opts.data_info or {}), val_cases=list(run.val_ids),
                cache_dtype=run.opts.cache_dtype)
    if improved:
        save_checkpoint(run.out / "best.pt", run.net, run.config, **meta,
                        val_metrics={k: row[k] for k in CSV_FIELDS})
    if run.organ_head is not None:  # kept for a resume; never in best.pt or an export
        meta["organ_head"] = run.organ_head.state_dict()
    save_checkpoint(run.out / "last.pt", run.net, run.config, **meta, optimizer=run.optimizer.state_dict(),
                    scheduler=run.scheduler.state_dict(), scaler=run.scaler.state_dict(), rng=rng_state())
    write_metrics_csv(run.history, run.out / "metrics.csv")
    plot_curves({run.out.name: run.history}, run.out / "curves.png")
    val = (f" val dice {row['val_dice']:.3f} fpv {row['val_fpv_ml']:.1f} ml fnv {row['val_fnv_ml']:.1f} ml"
           if is_finite_number(row["val_dice"]) else "")
    organ = f" organ {row['loss_organ']:.3f}" if is_finite_number(row.get("loss_organ")) else ""
    print(f"epoch {row['epoch']}/{run.planned} loss {row['loss']:.4f}{organ} lr {row['lr']:.2e} skipped "
          f"{row['skipped']}{val} ({row['epoch_s']:.0f} s, total {run.elapsed / 60:.1f} min)", flush=True)


def _validate_last(
    model: torch.nn.Module, net: torch.nn.Module, store: CaseStore, val_ids: Sequence[str], config: ModelConfig,
    dev: torch.device, info: DistInfo, history: list[dict[str, Any]], out: Path, best_dice: float, best_epoch: int,
) -> tuple[float, int]:
    """A budget stop skips the planned last validation: score the final weights so best/last can be chosen."""
    row = history[-1]
    row.update(validate(model, store, val_ids, config, str(dev), info))
    improved = row["val_dice"] > best_dice if is_finite_number(row["val_dice"]) else False
    if improved:
        best_dice, best_epoch = row["val_dice"], int(row["epoch"])
    if info.is_main:
        last_path = out / "last.pt"
        state = torch.load(last_path, map_location="cpu", weights_only=True)
        state.update(history=history, best_val_dice=best_dice, best_epoch=best_epoch)
        atomic_torch_save(state, last_path)
        if improved:
            meta = {k: v for k, v in state.items() if k not in ("net", "config", "optimizer", "scheduler", "scaler",
                                                                  "organ_head",
                                                                  "rng", "format")}
            save_checkpoint(out / "best.pt", net, config, **meta, val_metrics={k: row[k] for k in CSV_FIELDS})
        write_metrics_csv(history, out / "metrics.csv")
        plot_curves({out.name: history}, out / "curves.png")
        print(f"budget stop: final weights (epoch {row['epoch']}) val dice {row['val_dice']:.3f} "
              f"fpv {row['val_fpv_ml']:.1f} ml fnv {row['val_fnv_ml']:.1f} ml", flush=True)
    return best_dice, best_epoch


def validate_final(
    out: Path, sources: Sequence[Case], cache_dir: Path, device: str | None = None,
    cache_dtype: str | None = None,
) -> bool:
    """Validate a fold's last.pt if its last epoch has no validation (a run stopped by its budget).

    ``cache_dtype`` None reads the cache the fold trained on (see ``_trained_cache_dtype``).
    Returns whether a validation ran; updates history, best.pt, metrics.csv and the curves.
    """
    out = Path(out)
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    history = list(state["history"])
    val_ids = list(state.get("val_cases", []))
    if not history or not val_ids or is_finite_number(history[-1].get("val_dice")):
        return False
    config, net, dev = _final_network(state, device)
    store = CaseStore(sources, config, cache_dir, cache_dtype or _trained_cache_dtype(state))
    _validate_last(net.to(dev), net, store, val_ids, config, dev, DistInfo(), history, out,
                   float(state.get("best_val_dice", -1.0)), int(state.get("best_epoch", -1)))
    return True


def validate_full(
    out: Path, sources: Sequence[Case], val_ids: Sequence[str], cache_dir: Path, device: str | None = None,
    cache_dtype: str | None = None,
) -> dict[str, Any]:
    """Score a fold's final weights (``last.pt``) on every case of its validation fold.

    Training validates ``val_max_cases`` studies to stay cheap; this is the per-fold figure to
    report. Writes ``out/val_full.json`` (with a digest of the weights it scored, so export can
    tell whether it describes the checkpoint it copies) and its per-case rows, and returns it.
    """
    out = Path(out)
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    trained_on_val = sorted(set(state.get("val_cases", [])) - set(val_ids))
    if trained_on_val:
        raise ValueError(f"{out}: validated during training on {trained_on_val[:3]}, which this fold's "
                         "validation cases do not include: wrong splits file or fold?")
    config, net, dev = _final_network(state, device)
    store = CaseStore(sources, config, cache_dir, cache_dtype or _trained_cache_dtype(state))
    for case_id in val_ids:
        store.ensure(case_id)
    metrics = validate(net.to(dev), store, sorted(val_ids), config, str(dev), per_case=True)
    cases = {case_id: {k: json_safe(v) for k, v in row.items()} for case_id, row in metrics.pop("cases").items()}
    result = {"checkpoint": "last.pt", "epoch": int(state.get("epoch", 0)), "weights": weights_digest(state["net"]),
              **{k: json_safe(v) for k, v in metrics.items()}, "cases": cases}
    write_json_atomic(result, out / "val_full.json")
    return result


def _trained_cache_dtype(state: dict[str, Any]) -> str:
    """The cache dtype a fold trained on, so that revalidating it needs no flag to repeat it and reads
    (or makes) the same cache. Checkpoints from before it was recorded trained on float32."""
    return str(state.get("cache_dtype", "float32"))


def _final_network(state: dict[str, Any], device: str | None) -> tuple[ModelConfig, torch.nn.Module, torch.device]:
    """The network a saved training state describes, on the device the validators run on."""
    config = ModelConfig.from_json(state["config"])
    net = build_network(config)
    net.load_state_dict(state["net"])
    return config, net, torch.device(device or _default_device())


def _next_epoch_s(history: list[dict[str, Any]], epoch: int, planned: int, train: TrainConfig) -> float:
    """Expected length of the coming epoch: recent training time, plus a validation if one is due."""
    train_s = float(np.median([r["epoch_s"] - r.get("val_s", 0.0) for r in history[-3:]]))
    val_times = [r["val_s"] for r in history if r.get("val_s", 0.0) > 0]
    return train_s + (val_times[-1] if val_times and _validates(epoch, planned, train.val_every) else 0.0)


def _validates(epoch: int, planned: int, every: int) -> bool:
    """Validation after every ``every``-th epoch and after the last planned one (1-based epochs)."""
    return epoch == planned or (every > 0 and epoch % every == 0)


def plan_epochs(budget_s: float, epoch_s: float, val_s: float, train: TrainConfig, margin: float = 0.95) -> int:
    """Most epochs (at most train.epochs) whose training and validations fit the budget.

    The first epoch (already done, and validated to time it) counts; the cosine schedule is then
    stretched to this length so the learning rate still reaches eta_min inside the budget.
    """
    best = 1
    for planned in range(2, train.epochs + 1):  # the cost grows with planned: stop at the first miss
        if planned * epoch_s + _validations(planned, train.val_every) * val_s > margin * budget_s:
            break
        best = planned
    return best


def _validations(planned: int, every: int) -> int:
    """Validations in a run of ``planned`` epochs: epoch 1 (timed), each ``every``-th from 2, the last."""
    periodic = planned // every - (every == 1) if every > 0 else 0
    last_extra = planned >= 2 and not (every > 0 and planned % every == 0)
    return 1 + periodic + int(last_extra)


def _agree(value: int, info: DistInfo) -> int:
    """Rank 0's value on every rank (timings differ a little between processes)."""
    if info.world <= 1:
        return value
    t = torch.tensor([value])
    dist.broadcast(t, src=0)
    return int(t.item())


def _barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


def read_status(out: Path) -> dict[str, Any] | None:
    path = Path(out) / "status.json"
    return json.loads(path.read_text()) if path.is_file() else None


__all__ = ["fit", "train_step", "validate", "FitResult", "DistInfo", "atomic_torch_save", "plot_curves"]
