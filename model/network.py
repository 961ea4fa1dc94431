"""MONAI DynUNet built from a ModelConfig, and checkpoints that carry their own config.

Two checkpoint formats load:
- this project's: ``{"format": CHECKPOINT_FORMAT, "config": <json str>, "net": state_dict, ...}``;
- the authors' (MONAI CheckpointSaver): ``{"net": state_dict, "opt": ..., ...}`` in files
  ``0.pt`` ... ``4.pt``; their config is the paper's unless ``config.json`` lies beside them.
Both are read with ``torch.load(weights_only=True)``: a checkpoint never runs code.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import DynUNet

from common.atomic import write_atomic

from .config import ModelConfig, paper_config

CHECKPOINT_FORMAT = "autopet-sw-unet/1"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
#: The shipped ensemble: beside the packages in a checkout, /opt/app/weights in the image.
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
#: The interactive network a case with clicks is refined by (weights/interactive/), where shipped.
DEFAULT_INTERACTIVE_WEIGHTS = DEFAULT_WEIGHTS / "interactive"


def weights_label(path: Path) -> str:
    """A weights path as recorded in results: relative to the checkout where it lies inside it (no machine paths)."""
    path, root = Path(path).resolve(), DEFAULT_WEIGHTS.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def add_weights_argument(parser: argparse.ArgumentParser, default: Path | None = DEFAULT_WEIGHTS,
                         required: bool = False, note: str = "") -> None:
    """The ``--weights`` option of every command that loads networks, said the same way everywhere."""
    help_text = ("a checkpoint file, or a folder whose checkpoints form the ensemble (this project's fold*.pt "
                 "with manifest.json, or the authors' 0.pt..4.pt)" + note)
    if default is not None and not required:
        help_text += f" (default: {default})"
    parser.add_argument("--weights", type=Path, default=None if required else default, required=required,
                        help=help_text)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not fit its network."""


def build_network(config: ModelConfig) -> DynUNet:
    return DynUNet(
        spatial_dims=3,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        kernel_size=list(config.kernel_size),
        strides=[list(s) if isinstance(s, tuple) else s for s in config.strides],
        upsample_kernel_size=[list(s) if isinstance(s, tuple) else s for s in config.upsample_kernel_size],
        filters=list(config.filters),
        norm_name=config.norm_name,
        deep_supervision=False,
        res_block=config.res_block,
    )


def count_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors in key order: the same weights give the same digest in any file."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through ``write_atomic``: a kill never leaves half a file; readable (0644) by a
    non-root container user."""
    write_atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def save_checkpoint(
    path: Path, net: torch.nn.Module, config: ModelConfig, *, store_dtype: torch.dtype | None = None,
    **metadata: Any
) -> None:
    """Save weights with the config that built them (and any plain metadata: fold, epoch, metrics).

    ``store_dtype`` (e.g. float16) stores floating-point tensors at that precision, to halve shipped
    weights; ``load_state_dict`` casts them back to the network's float32 on loading.
    """
    state = {k: v.detach().cpu() for k, v in _unwrap(net).state_dict().items()}
    if store_dtype is not None:
        state = _cast_keeping_aliases(state, store_dtype)
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "config": config.to_json(), "net": state, **metadata}, path)


def _cast_keeping_aliases(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Cast floating-point tensors; keys that share one tensor (DynUNet registers some modules
    twice: 44 keys over 29 tensors for the tiny net) keep sharing it, so the file is not duplicated."""
    cast: dict[tuple[int, int, tuple[int, ...], tuple[int, ...]], torch.Tensor] = {}
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value
            continue
        ident = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.stride())
        if ident not in cast:
            cast[ident] = value.to(dtype)
        out[key] = cast[ident]
    return out


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    return net.module if hasattr(net, "module") else net


@dataclass
class LoadedCheckpoint:
    path: Path
    config: ModelConfig
    network: DynUNet
    metadata: dict[str, Any]


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from exc
    if not isinstance(data, dict) or "net" not in data or not isinstance(data["net"], dict):
        raise CheckpointError(f"{path}: no 'net' state dict in checkpoint (keys: {_keys(data)})")
    return data


def _keys(data: Any) -> str:
    return ", ".join(map(str, list(data)[:8])) if isinstance(data, dict) else type(data).__name__


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoints saved from DistributedDataParallel carry a 'module.' prefix."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_checkpoint(path: Path, config: ModelConfig | None = None) -> LoadedCheckpoint:
    """Load one checkpoint into a fresh network in eval mode.

    ``config`` is used for the authors' format (which stores none); for this project's format the
    stored config wins and ``config`` is ignored.
    """
    path = Path(path)
    data = _read(path)
    if data.get("format") == CHECKPOINT_FORMAT:
        try:
            config = ModelConfig.from_json(data["config"])
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: stored config is invalid ({exc})") from exc
    elif config is None:
        config = authors_config_for(path)
    net = build_network(config)
    try:
        net.load_state_dict(_strip_prefix(data["net"]), strict=True)
    except RuntimeError as exc:
        first = " ".join(line.strip() for line in str(exc).splitlines()[1:3])[:300]
        raise CheckpointError(f"{path}: weights do not fit the '{config.name}' network ({first})") from exc
    net.eval()
    metadata = {k: v for k, v in data.items() if k not in ("net", "config", "opt", "optimizer", "scaler")}
    return LoadedCheckpoint(path=path, config=config, network=net, metadata=metadata)


def authors_config_for(path: Path) -> ModelConfig:
    """The authors' checkpoints store no config: the paper's, unless config.json lies beside them."""
    beside = Path(path).parent / "config.json"
    if beside.is_file():
        try:
            return ModelConfig.from_json(beside.read_text())
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{beside}: invalid model config ({exc})") from exc
    return paper_config()


def checkpoint_files(path: Path) -> list[Path]:
    """A checkpoint file, or every checkpoint in a folder (sorted: 0.pt ... 4.pt)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise CheckpointError(f"{path}: weights path not found")
    files = sorted(p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
    if not files:
        raise CheckpointError(f"{path}: no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)}) in folder")
    return files


def load_ensemble(files: list[Path]) -> list[LoadedCheckpoint]:
    """Load checkpoints that form one ensemble; all must share one preprocessing config."""
    loaded = [load_checkpoint(p) for p in files]
    first = loaded[0]
    for other in loaded[1:]:
        if _preprocessing(other.config) != _preprocessing(first.config):
            raise CheckpointError(
                f"{other.path}: preprocessing differs from {first.path}; an ensemble needs one config"
            )
    return loaded


def _preprocessing(config: ModelConfig) -> tuple:
    return (config.spacing, config.percentiles, config.roi_size, config.overlap, config.blend_mode,
            config.sigma_scale, config.lesion_class, config.vote)
