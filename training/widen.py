"""Widen a trained DynUNet to more filters per level without changing what it computes.

Why: the demo weights took many CPU hours; a wider network trained from scratch would need them
again. Function-preserving widening (Chen, Goodfellow, Shlens, "Net2Net", ICLR 2016) starts the
wider network where the narrow one stopped: each new channel of a level copies an old channel of
that level, and every convolution that reads the level divides its weights for an old channel
among that channel's copies. DynUNet's instance norms (no affine parameters, per channel) give
copies the same normalised output, its residual sums and skip concatenations carry the copies
level by level, so the output is unchanged. Copies would then receive identical updates for ever
(Adam even equalises the sizes of gradients that differ by a factor), so a little noise, relative
to each weight tensor's spread, breaks the symmetry.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import DynUNet

from model.config import ModelConfig
from model.network import build_network, checkpoint_files, load_checkpoint, save_checkpoint


class WidenError(ValueError):
    """Two configs that widening cannot map onto each other."""


def check_widenable(old: ModelConfig, new: ModelConfig) -> None:
    """Only the filters may differ, and none may shrink."""
    differ = [
        f.name
        for f in fields(ModelConfig)
        if f.name not in ("filters", "name", "extra") and getattr(old, f.name) != getattr(new, f.name)
    ]
    if differ:
        raise WidenError(f"'{old.name}' and '{new.name}' differ in {', '.join(differ)}; widening changes only filters")
    if len(old.filters) != len(new.filters) or any(n < o for o, n in zip(old.filters, new.filters, strict=True)):
        raise WidenError(f"filters {list(new.filters)} do not widen {list(old.filters)} level by level")
    if tuple(old.filters) == tuple(new.filters):
        raise WidenError(f"filters {list(new.filters)} are already the network's; nothing to widen")
    if old.norm_name != "instance":  # norms with weights or running statistics would need copying too
        raise WidenError(f"norm '{old.norm_name}': only parameter-free instance norm keeps copies identical")
    projections = [_has_projection(old, level) != _has_projection(new, level) for level in range(len(old.filters))]
    if any(projections):
        level = projections.index(True)
        raise WidenError(f"level {level}: widening changes whether its residual block has a 1x1 projection "
                         "(stride-1 level whose channel count starts or stops matching its input's)")


def _has_projection(config: ModelConfig, level: int) -> bool:
    """MONAI's UnetResBlock adds a 1x1 conv when its input and output channels or its stride differ."""
    n_in = config.in_channels if level == 0 else config.filters[level - 1]
    stride = config.strides[level]
    strided = any(s != 1 for s in (stride if isinstance(stride, tuple) else (stride,)))
    return bool(config.res_block) and (n_in != config.filters[level] or strided)


def channel_maps(old: ModelConfig, new: ModelConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Per level, the old channel each new channel copies: the old ones in order, then random copies."""
    maps = []
    for n_old, n_new in zip(old.filters, new.filters, strict=True):
        extra = [rng.permutation(n_old) for _ in range(-(-(n_new - n_old) // n_old))] if n_new > n_old else []
        maps.append(np.concatenate([np.arange(n_old), *extra])[:n_new])
    return maps


def _shares(mapping: np.ndarray) -> torch.Tensor:
    """1 / (number of copies of its old channel), per new channel: the copies' weights sum to the old one."""
    counts = np.bincount(mapping)
    return torch.as_tensor(1.0 / counts[mapping], dtype=torch.float32)


def _remap(weight: torch.Tensor, out_map: np.ndarray, in_map: np.ndarray, transposed: bool) -> torch.Tensor:
    """A conv weight for new channels: rows copied by ``out_map``, columns by ``in_map`` and split."""
    share = _shares(in_map)
    if transposed:  # ConvTranspose weights are (in, out, *kernel)
        w = weight[torch.as_tensor(in_map)][:, torch.as_tensor(out_map)]
        return w * share.view(-1, *([1] * (w.dim() - 1)))
    w = weight[torch.as_tensor(out_map)][:, torch.as_tensor(in_map)]
    return w * share.view(1, -1, *([1] * (w.dim() - 2)))


def _conv_pairs(old_net: DynUNet, new_net: DynUNet, maps: list[np.ndarray], in_channels: int, out_channels: int):
    """(old conv, new conv, out map, in map) for every convolution of the network."""
    ident_in, ident_out = np.arange(in_channels), np.arange(out_channels)

    def res_block(old_b, new_b, in_map, out_map):
        yield old_b.conv1.conv, new_b.conv1.conv, out_map, in_map
        yield old_b.conv2.conv, new_b.conv2.conv, out_map, out_map
        if hasattr(old_b, "conv3"):  # the 1x1 projection of a residual block whose shape changes
            yield old_b.conv3.conv, new_b.conv3.conv, out_map, in_map

    levels = len(maps)
    yield from res_block(old_net.input_block, new_net.input_block, ident_in, maps[0])
    for i, (o, n) in enumerate(zip(old_net.downsamples, new_net.downsamples, strict=True)):
        yield from res_block(o, n, maps[i], maps[i + 1])
    yield from res_block(old_net.bottleneck, new_net.bottleneck, maps[levels - 2], maps[levels - 1])
    for j, (o, n) in enumerate(zip(old_net.upsamples, new_net.upsamples, strict=True)):
        lo, hi = maps[levels - 2 - j], maps[levels - 1 - j]
        yield o.transp_conv.conv, n.transp_conv.conv, lo, hi
        cat = np.concatenate([lo, lo + o.transp_conv.conv.out_channels])  # cat(upsampled, skip) in UnetUpBlock
        yield from res_block(o.conv_block, n.conv_block, cat, lo)
    yield old_net.output_block.conv.conv, new_net.output_block.conv.conv, ident_out, maps[0]


def widen_network(
    old_net: DynUNet, old: ModelConfig, new: ModelConfig, noise: float = 0.01, seed: int = 0
) -> DynUNet:
    """A ``new``-config network computing what ``old_net`` computes (exactly when ``noise`` is 0)."""
    check_widenable(old, new)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    maps = channel_maps(old, new, rng)
    new_net = build_network(new)
    n_convs = 0
    with torch.no_grad():
        for o, n, out_map, in_map in _conv_pairs(old_net, new_net, maps, old.in_channels, old.out_channels):
            transposed = isinstance(o, torch.nn.ConvTranspose3d)
            w = _remap(o.weight.detach().float(), out_map, in_map, transposed)
            if noise:
                w = w + noise * float(w.std()) * torch.randn(w.shape, generator=gen)
            if w.shape != n.weight.shape:
                raise WidenError(f"internal: widened weight {tuple(w.shape)} != {tuple(n.weight.shape)}")
            n.weight.copy_(w)
            if o.bias is not None:
                n.bias.copy_(o.bias.detach()[torch.as_tensor(out_map)])
            n_convs += 1
    modules = [m for m in new_net.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    if n_convs != len(modules):  # a DynUNet layout this function does not know: refuse rather than half-copy
        raise WidenError(f"internal: {n_convs} of the network's {len(modules)} convolutions were mapped")
    new_net.eval()
    return new_net


def widen_weights(source: Path, new: ModelConfig, out: Path, noise: float = 0.01, seed: int = 0) -> list[Path]:
    """Widen a checkpoint or every checkpoint of a folder into ``out`` (same file names).

    Every checkpoint is widened before any is written, so a refusal leaves ``out`` untouched; ``out``
    may not be the source folder (its manifest's sha256s would no longer match).
    """
    files = checkpoint_files(Path(source))
    if any(Path(out).resolve() == f.parent.resolve() for f in files):
        raise WidenError(f"{out}: is the folder the weights come from; write the widened ones elsewhere")
    widened = []
    for k, path in enumerate(files):
        loaded = load_checkpoint(path)
        try:
            net = widen_network(loaded.network, loaded.config, new, noise=noise, seed=seed + k)
        except WidenError as err:
            raise WidenError(f"{path}: {err}") from None
        meta = {key: loaded.metadata[key] for key in ("fold",) if key in loaded.metadata}
        widened.append((path, net, meta))
    written = []
    for path, net, meta in widened:
        target = Path(out) / path.name
        save_checkpoint(target, net, new, widened_from=str(path), widen_noise=noise, **meta)
        written.append(target)
    return written


def with_click_channels(old_net: torch.nn.Module, old: ModelConfig, new: ModelConfig, gain: float = 0.0) -> DynUNet:
    """An interactive network (``new``: ``old`` plus click channels) computing exactly what ``old_net``
    computes without clicks: every convolution that reads the input (the input block's 3x3x3 conv and
    its 1x1 projection) keeps its weights for the PET and gets, for the click channels, ``gain`` times
    them (tumour) and ``-gain`` times them (background).

    With ``gain`` 0 clicks start meaningless and their weights must be learnt from zero (1700 CPU steps
    at lr 1e-4 moved them to 3 % of the PET's: the network ignored its clicks). With a gain a tumour
    click reads as uptake and a background click as its absence, so training starts from clicks that
    already act (docs/interactive.md).
    """
    if old.interactive or not new.interactive:
        raise WidenError(f"'{old.name}' -> '{new.name}': adds click channels to a network that reads none")
    weights_and_input = ("filters", "kernel_size", "strides", "upsample_kernel_size", "norm_name", "res_block",
                         "out_channels", "lesion_class", "spacing", "percentiles")
    differ = [name for name in weights_and_input if getattr(old, name) != getattr(new, name)]
    if differ:
        raise WidenError(f"'{old.name}' and '{new.name}' differ in {', '.join(differ)}, not only in click channels")
    new_net = build_network(new)
    old_state = old_net.state_dict()
    state = {}
    for key, target in new_net.state_dict().items():
        source = old_state[key]
        if source.shape == target.shape:
            state[key] = source
        elif source.dim() == 5 and source.shape[1] == old.in_channels and target.shape[1] == new.in_channels:
            padded = torch.zeros_like(target)
            padded[:, : old.in_channels] = source
            padded[:, old.in_channels] = gain * source[:, 0]  # tumour clicks read as uptake
            padded[:, old.in_channels + 1] = -gain * source[:, 0]  # background clicks as its absence
            state[key] = padded
        else:
            raise WidenError(f"internal: {key} {tuple(source.shape)} cannot become {tuple(target.shape)}")
    new_net.load_state_dict(state)
    new_net.eval()
    return new_net
