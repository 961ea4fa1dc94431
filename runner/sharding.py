"""Splitting a folder of cases over processes: torchrun ranks on GPUs and nodes, or job-array shards.

Each process takes a disjoint share of the cases, balanced by image size rather than by count
(a whole-body scan costs several times a short one), and writes its masks atomically as a single
process does, so a killed process loses only its case in progress and a rerun skips what is done.
Under torchrun the ranks meet once at the end and rank 0 writes one ``results.json`` for all;
job-array shards (``--shard K/N``) cannot meet, so each writes ``results.shard-K-of-N.json``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import write_json_atomic
from common.cases import Case
from common.errors import InputError
from common.images import read_header


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``; ``ranks`` when the shards are torchrun's processes."""

    index: int = 0
    count: int = 1
    ranks: bool = False

    @property
    def results_name(self) -> str:
        if self.count == 1 or self.ranks:
            return "results.json"
        return f"results.shard-{self.index + 1}-of-{self.count}.json"


#: One process, all cases.
WHOLE = Shard()


def parse_shard(text: str) -> Shard:
    """``K/N`` (1-based, as job arrays count) -> Shard(K - 1, N)."""
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"--shard takes K/N with 1 <= K <= N, e.g. 2/4, got {text!r}")
    return Shard(int(match[1]) - 1, int(match[2]))


def torchrun_shard(device: str) -> tuple[Shard, str]:
    """Join torchrun's process group when started by it (NCCL on CUDA, gloo on CPU).

    Returns this rank's shard and the device it should use (``cuda:<local rank>`` on GPUs).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return WHOLE, device
    import torch
    import torch.distributed as dist

    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    return Shard(dist.get_rank(), dist.get_world_size(), ranks=True), device


def voxels(case: Case) -> int:
    """The PET's voxel count from its header (0 when unreadable: the case fails in its shard, named)."""
    try:
        return int(np.prod(read_header(case.pet, "PET").GetSize()))
    except InputError:
        return 0


def shard_cases(cases: Sequence[Case], shard: Shard) -> list[Case]:
    """This shard's cases: largest first, each to the shard with the fewest voxels so far.

    Deterministic (ties by position), so every process computes the same split without talking.
    """
    if shard.count == 1:
        return list(cases)
    sizes = [voxels(case) for case in cases]  # one header read per case
    load = [0] * shard.count
    mine: set[int] = set()
    for i in sorted(range(len(cases)), key=lambda i: (-sizes[i], i)):
        target = min(range(shard.count), key=lambda k: (load[k], k))
        load[target] += max(1, sizes[i])
        if target == shard.index:
            mine.add(i)
    return [case for i, case in enumerate(cases) if i in mine]


def write_results(entries: list[dict[str, Any]], output_root: Path, shard: Shard,
                  order: Sequence[Case]) -> None:
    """This process's results; under torchrun, rank 0 merges every rank's into one ``results.json``.

    Each rank writes its part beside the output, all ranks meet, rank 0 writes the merged list in
    the cases' order and removes the parts.
    """
    if not shard.ranks:
        write_json_atomic(entries, output_root / shard.results_name)
        return
    import torch.distributed as dist

    part = output_root / f".results.rank-{shard.index}-of-{shard.count}.json"
    write_json_atomic(entries, part)
    dist.barrier()
    if shard.index == 0:
        parts = [output_root / f".results.rank-{k}-of-{shard.count}.json" for k in range(shard.count)]
        merged = [entry for p in parts for entry in json.loads(p.read_text())]
        position = {case.pet.name: i for i, case in enumerate(order)}
        merged.sort(key=lambda e: position.get(e["inputs"][0]["filename"], len(position)))
        write_json_atomic(merged, output_root / "results.json")
        for p in parts:
            p.unlink(missing_ok=True)
    dist.barrier()
