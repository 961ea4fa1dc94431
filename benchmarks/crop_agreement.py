"""Crop modes at the paper's windowing: windows, time and agreement with the uncropped pipeline.

For each whole-body phantom this runs MONAI's own chain (``benchmarks/monai_reference.py``: the
authors' transforms, ``SlidingWindowInferer``, ``Invertd``) and ``Predictor`` in every crop mode
with the same trained networks, re-windowed to the paper's settings (roi 128, overlap 0.75,
gaussian sigma 0.125; the networks are fully convolutional). It prints, per mode: windows,
seconds, mask Dice and voxels that differ against ``crop="none"`` and against the MONAI chain,
lesion components (18-connected) gained and lost, and how far inside the body the differing
voxels lie. The fast mode's context beyond the body box is swept to give Dice against windows as a curve.

Every network evaluation is memoised on the exact bytes of its input window, so a window that
two modes share is computed once: a window of a cropped run is cut from the same voxels at the
same place as in the uncropped run, so its input, and therefore its output, is identical. The
crop modes then run their real code path (crop, MONAI's blending, resampling back, vote) and
only skip repeated network work. Seconds per mode are therefore given as windows x the seconds
per window measured on the first, uncached run (``seconds_est``), beside the measured wall time.

    python -m benchmarks.crop_agreement --weights weights --models 1 --seeds 50000 50001 50002 50003 50004 \
        --json docs/benchmarks/crop_agreement.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import cc3d
import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from benchmarks.monai_reference import reference_predict
from common.masks import dice
from evaluation.metrics import voxel_volume_ml
from model import Predictor
from model.ensemble import vote
from model.network import add_weights_argument, weights_label
from training.phantoms import make_phantom

ROOT = Path(__file__).resolve().parents[1]
#: Context (mm) beyond the body box that the fast mode's windows get, swept for the curve.
CONTEXTS_MM = (0.0, 30.0, 60.0, 100.0, 150.0)
#: Bins (mm inside the body surface) for where differing voxels lie.
DEPTH_BINS_MM = (0.0, 10.0, 30.0, 60.0, np.inf)


class MemoisedNetwork(torch.nn.Module):
    """A network whose output for a given input window is computed once and then looked up."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.cache: dict[bytes, torch.Tensor] = {}
        self.computed = 0
        self.looked_up = 0
        self.compute_seconds = 0.0

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        keys = [hashlib.blake2b(item.detach().cpu().numpy().tobytes(), digest_size=16).digest() for item in batch]
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            started = time.perf_counter()
            out = self.net(batch[missing])
            self.compute_seconds += time.perf_counter() - started
            for i, o in zip(missing, out, strict=True):
                self.cache[keys[i]] = o.detach().clone()
        self.computed += len(missing)
        self.looked_up += len(keys) - len(missing)
        return torch.stack([self.cache[k] for k in keys])


OUTSIDE_KINDS = ("bag", "line", "arm")


def add_outside_object(pet: sitk.Image, kind: str) -> tuple[sitk.Image, np.ndarray]:
    """The phantom with a hot object outside the body, as real scans carry them; and where it is.

    ``bag``: a urine bag (an ellipsoid 120 x 80 x 180 mm at SUV 40) in the air beside the thigh;
    ``line``: an injection line (6 mm thick, SUV 20) from the side of the chest 150 mm out and 250 mm
    down, off the table; ``arm``: the field of view cut 40 mm inside the body's widest point, so an arm
    ends at the image's edge (the region is then the 60 mm of body beside the cut). Returns the new
    image and an (x, y, z) boolean mask of the object (or region) on its grid.
    """
    arr = sitk.GetArrayFromImage(pet).transpose(2, 1, 0).astype(np.float32)
    spacing = np.array(pet.GetSpacing())
    body = arr > 0.01 * float(arr.max())
    z_body = np.flatnonzero(body.any(axis=(0, 1)))
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(arr.shape, spacing, strict=True)],
                                indexing="ij"), axis=-1)

    def across(z: int) -> tuple[np.ndarray, np.ndarray]:
        return np.flatnonzero(body[:, :, z].any(axis=1)), np.flatnonzero(body[:, :, z].any(axis=0))

    if kind == "arm":
        xs = np.flatnonzero(body.any(axis=(1, 2)))
        cut = int(xs[-1] - round(40 / spacing[0]))
        cropped = pet[: cut + 1, :, :]
        region = body[: cut + 1] & (np.arange(cut + 1)[:, None, None] > cut - round(60 / spacing[0]))
        return cropped, region
    if kind == "bag":
        z = int(z_body[0] + 0.15 * (z_body[-1] - z_body[0]))
        xs, ys = across(z)
        semi = np.array([60.0, 40.0, 90.0])
        centre = np.array([xs[-1] * spacing[0] + 25 + semi[0], ys.mean() * spacing[1], z * spacing[2]])
        centre[0] = min(centre[0], (arr.shape[0] - 1) * spacing[0] - semi[0])
        obj = (((grid - centre) / semi) ** 2).sum(-1) <= 1
        value = 40.0
    elif kind == "line":
        z = int(z_body[0] + 0.65 * (z_body[-1] - z_body[0]))
        xs, ys = across(z)
        start = np.array([xs[-1] * spacing[0], ys.mean() * spacing[1], z * spacing[2]])
        corner = start + [150.0, 0.0, 0.0]
        corner[0] = min(corner[0], (arr.shape[0] - 2) * spacing[0])
        end = corner - [0.0, 0.0, 250.0]
        obj = np.zeros(arr.shape, bool)
        for a, b in ((start, corner), (corner, end)):
            t = np.clip(((grid - a) @ (b - a)) / max(float((b - a) @ (b - a)), 1e-9), 0, 1)
            obj |= np.linalg.norm(grid - (a + t[..., None] * (b - a)), axis=-1) <= 3.0
        obj &= ~body
        value = 20.0
    else:
        raise ValueError(f"outside object: one of {OUTSIDE_KINDS}, got {kind!r}")
    arr[obj] = np.maximum(arr[obj], value)
    out = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    out.CopyInformation(pet)
    return out, obj


def component_changes(mask: np.ndarray, reference: np.ndarray) -> tuple[int, int]:
    """Components (18-connected) of ``mask`` touching nothing of ``reference`` and vice versa."""

    def unmatched(a: np.ndarray, b: np.ndarray) -> int:
        labels = cc3d.connected_components(a.astype(np.uint8), connectivity=18)
        hit = set(np.unique(labels[b & (labels > 0)]).tolist())
        return int(labels.max()) - len(hit)

    return unmatched(mask, reference), unmatched(reference, mask)


def body_depth_mm(pet: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance (mm) from each body voxel to the nearest non-body voxel; 0 outside the body."""
    lo, hi = np.percentile(pet, (0.05, 99.95))
    body = pet > lo + 0.01 * (hi - lo)
    return ndimage.distance_transform_edt(body, sampling=spacing)


def compare(mask: np.ndarray, none_mask: np.ndarray, ref_mask: np.ndarray, depth: np.ndarray) -> dict:
    differ = mask != none_mask
    gained, lost = component_changes(mask, ref_mask)
    where = {}
    outside = differ & (depth == 0)
    where["outside_body"] = int(outside.sum())
    for lo, hi in zip(DEPTH_BINS_MM[:-1], DEPTH_BINS_MM[1:], strict=True):
        where[f"depth_{lo:g}_{hi:g}mm"] = int((differ & (depth > lo) & (depth <= hi)).sum())
    return {
        "voxels": int(mask.sum()),
        "dice_to_none": round(dice(mask, none_mask), 5), "differ_from_none": int(differ.sum()),
        "dice_to_reference": round(dice(mask, ref_mask), 5), "differ_from_reference": int((mask != ref_mask).sum()),
        "components_gained": gained, "components_lost": lost, "differ_by_depth": where,
    }


def run_phantom(seed: int, networks: list[MemoisedNetwork], config, contexts: tuple[float, ...],
                outside: str | None = None) -> dict:
    phantom = make_phantom(seed, spacing=config.spacing, lesions=True)
    pet, label, obj = phantom.pet, phantom.label, None
    if outside is not None:
        pet, obj = add_outside_object(pet, outside)
        label = label[: pet.GetSize()[0], :, :]
    array = sitk.GetArrayFromImage(pet).transpose(2, 1, 0)
    truth = sitk.GetArrayFromImage(label).transpose(2, 1, 0) > 0
    depth = body_depth_mm(array, pet.GetSpacing())
    row: dict = {"seed": seed, "shape": list(pet.GetSize()), "truth_voxels": int(truth.sum()),
                 "voxel_ml": voxel_volume_ml(pet.GetSpacing())}
    if obj is not None:
        row.update(outside=outside, object_voxels=int(obj.sum()))
    for net in networks:
        net.cache.clear()
        net.computed = net.looked_up = 0
        net.compute_seconds = 0.0

    started = time.perf_counter()
    none = Predictor(networks, config, device="cpu", crop="none")
    none_scores = none.predict_scores(pet)
    none_mask = vote(none_scores, config.vote)
    wall = time.perf_counter() - started
    computed = sum(n.computed for n in networks)
    per_window = sum(n.compute_seconds for n in networks) / max(1, computed)
    row["seconds_per_window"] = round(per_window, 2)
    modes = [{"mode": "none", "windows": none.last_info.windows, "seconds_wall": round(wall, 1),
              "computed": computed, "mask": none_mask}]
    print(f"seed {seed} {pet.GetSize()}: none {modes[0]['windows']} windows, {wall:.0f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="crop-agreement-") as tmp:
        path = Path(tmp) / "pet.mha"
        sitk.WriteImage(pet, str(path))
        before = sum(n.computed for n in networks)
        started = time.perf_counter()
        ref_mask = reference_predict(path, [n for n in networks], config, sw_batch_size=2).astype(bool)
        row["reference_seconds_wall"] = round(time.perf_counter() - started, 1)
        row["reference_windows_computed"] = sum(n.computed for n in networks) - before
    print(f"  reference: {row['reference_seconds_wall']} s", flush=True)

    for mode, context in [("exact", 0.0)] + [("body", c) for c in contexts]:
        before = sum(n.computed for n in networks)
        started = time.perf_counter()
        predictor = Predictor(networks, config, device="cpu", crop=mode, context_mm=context)
        mask = vote(predictor.predict_scores(pet), config.vote)
        modes.append({"mode": mode, "context_mm": context, "windows": predictor.last_info.windows,
                      "seconds_wall": round(time.perf_counter() - started, 1),
                      "computed": sum(n.computed for n in networks) - before, "mask": mask})
        print(f"  {mode} context {context:g} mm: {predictor.last_info.windows} windows", flush=True)

    row["modes"] = []
    for m in modes:
        mask = m.pop("mask")
        m["seconds_est"] = round(m["windows"] * per_window * len(networks), 1)
        m.update(compare(mask, none_mask, ref_mask, depth))
        m["dice_to_truth"] = round(dice(mask, truth), 4)
        if obj is not None:  # what the run marked of the object, and where it differs from the uncropped run
            m["object_marked"] = int((mask & obj).sum())
            m["object_differ_from_none"] = int(((mask != none_mask) & obj).sum())
        row["modes"].append(m)
        print("  " + json.dumps(m), flush=True)
    return row


def markdown_table(result: dict) -> str:
    """The per-phantom, per-mode rows as a Markdown table (for docs/performance.md)."""
    lines = ["| phantom | mode | windows | seconds (est.) | Dice to none | Dice to MONAI chain | voxels differ "
             "| components +/- | differing voxels by depth (<10 / 10-30 / 30-60 / >60 mm) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for phantom in result["phantoms"]:
        for m in phantom["modes"]:
            context = m.get("context_mm", m.get("margin_mm"))
            mode = m["mode"] if m["mode"] != "body" else f"body +{context:g} mm"
            d = m["differ_by_depth"]
            depth = " / ".join(str(d[k]) for k in ("depth_0_10mm", "depth_10_30mm", "depth_30_60mm", "depth_60_infmm"))
            name = f"{phantom['seed']}" + (f" + {phantom['outside']}" if phantom.get("outside") else "")
            lines.append(f"| {name} {'x'.join(map(str, phantom['shape']))} | {mode} | {m['windows']} "
                         f"| {m['seconds_est']} | {m['dice_to_none']:.4f} | {m['dice_to_reference']:.4f} "
                         f"| {m['differ_from_none']} | +{m['components_gained']} / -{m['components_lost']} | {depth} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_weights_argument(parser)
    parser.add_argument("--models", type=int, default=1, help="use the first N networks (0 = all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[50000, 50001, 50002, 50003, 50004],
                        help="phantom seeds (the held-out set's are 50000 and up)")
    parser.add_argument("--roi", type=int, default=128, help="window side (voxels); the paper's is 128")
    parser.add_argument("--overlap", type=float, default=0.75, help="window overlap; the paper's is 0.75")
    parser.add_argument("--contexts", type=float, nargs="*", default=list(CONTEXTS_MM),
                        help="contexts (mm beyond the body box) of the fast mode to sweep (none: exact only)")
    parser.add_argument("--outside", nargs="+", choices=OUTSIDE_KINDS,
                        help="add a hot object outside the body to each phantom, one run per kind: a urine bag "
                             "beside the thigh, an injection line off the table, an arm cut by the field of view")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--markdown", type=Path, help="only print a saved --json result as a Markdown table")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table(json.loads(args.markdown.read_text())))
        return 0

    loaded = Predictor.from_weights(args.weights, device="cpu")
    config = loaded.config.with_(roi_size=(args.roi,) * 3, overlap=args.overlap)
    networks = [MemoisedNetwork(net) for net in loaded.networks[: args.models or None]]
    result = {"command": "python -m benchmarks.crop_agreement " + " ".join(argv if argv is not None else sys.argv[1:]),
              "weights": weights_label(args.weights), "models": len(networks), "config": config.name,
              "roi": args.roi, "overlap": args.overlap, "sigma_scale": config.sigma_scale,
              "torch_threads": torch.get_num_threads(), "phantoms": []}
    runs = [(seed, kind) for seed in args.seeds for kind in (args.outside or [None])]
    for seed, kind in runs:
        with torch.inference_mode():
            result["phantoms"].append(run_phantom(seed, networks, config, tuple(args.contexts), kind))
        if args.json:  # after every phantom, so a long run keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
