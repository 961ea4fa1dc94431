"""GPU benchmark: the paper's full-size networks, 1 and 5 models, on a 400 x 400 x 326 phantom.

One prepared command for a lent GPU machine without network (about 2-4 minutes there):

    bash benchmarks/fetch_gpu_wheels.sh            # here: monai + SimpleITK wheels into .whl/
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
        PYTHONPATH=/tmp/site:. python3 -m benchmarks.inference_gpu --json $OUT/gpu.json

Prints, per ensemble size: end-to-end seconds (PET image in memory -> mask, warm), seconds per
window per network, windows computed versus uncropped, peak GPU memory, and the FLOP-bound
estimate (windows x networks x 957 GFLOP / the fp16 convolution throughput measured on the card).
Random weights: timing does not depend on them. Targets (issue 7): five models <= 20 s on an H100,
peak <= 12 GB (to fit a 16 GB T4), one model <= 6 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GFLOP_PER_WINDOW = 957.0  # the paper's DynUNet on one 128^3 window (facts.md)


def check_packages() -> None:
    missing = [m for m in ("torch", "monai", "SimpleITK", "scipy", "numpy") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"missing packages: {', '.join(missing)}; carry them as wheels (see this file's docstring)")


def conv_throughput_tflops(device, seconds: float = 3.0) -> float:
    """fp16 3D convolution throughput of this card on a layer shaped like the network's middle."""
    import torch

    conv = torch.nn.Conv3d(128, 128, 3, padding=1, bias=False).to(device).half()
    x = torch.randn(4, 128, 32, 32, 32, device=device, dtype=torch.float16)
    flop = 2 * 128 * 128 * 27 * 32 ** 3 * 4
    with torch.inference_mode():
        for _ in range(5):
            conv(x)
        torch.cuda.synchronize() if device.type == "cuda" else None
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            conv(x)
            n += 1
        torch.cuda.synchronize() if device.type == "cuda" else None
    return flop * n / (time.perf_counter() - started) / 1e12


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--preset", default="paper", help="model preset (paper for the real figures)")
    parser.add_argument("--slices", type=int, default=326)
    parser.add_argument("--models", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sw-batch-size", type=int, nargs="+", default=[8],
                        help="windows per batch; several values run each (T4-sized memory: try 4)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up")
    parser.add_argument("--memory-cap-gb", type=float, default=3.0,
                        help="last, one model again with the process capped at this much GPU memory "
                             "(set_per_process_memory_fraction): the out-of-memory steps down must give the "
                             "same mask (0 = skip)")
    args = parser.parse_args(argv)
    check_packages()

    import torch

    from model.config import preset
    from model.network import build_network, count_parameters
    from training.phantoms import make_phantom

    device = torch.device(args.device)
    config = preset(args.preset)
    phantom = make_phantom(3, shape=(400, 400, args.slices), lesions=True)
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"device: {gpu_name}; torch {torch.__version__}; preset {config.name}; phantom {phantom.pet.GetSize()}",
          flush=True)
    throughput = conv_throughput_tflops(device) if device.type == "cuda" else None
    if throughput is not None:
        print(f"fp16 conv3d throughput: {throughput:.1f} TFLOP/s", flush=True)
    torch.manual_seed(0)
    networks = [build_network(config) for _ in range(max(args.models))]
    print(f"network: {count_parameters(networks[0]) / 1e6:.2f} M parameters", flush=True)

    results = {"device": gpu_name, "torch": torch.__version__, "cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
               "preset": config.name,
               "shape": list(phantom.pet.GetSize()),
               "conv_tflops_fp16": round(throughput, 1) if throughput else None, "runs": []}
    for n_models, sw_batch_size in itertools.product(args.models, args.sw_batch_size):
        run = timed_run(networks[:n_models], config, phantom.pet, device, sw_batch_size, args.repeats, throughput)
        results["runs"].append(run)
        print(json.dumps(run), flush=True)
        if args.json:  # after every run, so a run cut off by the machine's limit keeps what it measured
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.memory_cap_gb and device.type == "cuda":
        results["memory_cap"] = memory_capped_run(networks[0], config, phantom.pet, device, args.memory_cap_gb)
        print(json.dumps(results["memory_cap"]), flush=True)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def timed_run(networks, config, pet, device, sw_batch_size: int, repeats: int, throughput: float | None) -> dict:
    """One ensemble size and window batch: warm-up, then ``repeats`` timed predictions and their peak memory."""
    import numpy as np
    import torch

    from model import Predictor

    n_models = len(networks)
    predictor = Predictor(networks, config, device=device, sw_batch_size=sw_batch_size)
    predictor.predict(pet)  # warm-up: cudnn.benchmark picks its kernels
    times, network_times = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        predictor.predict(pet)
        times.append(time.perf_counter() - started)
        network_times.append(predictor.last_info.seconds.get("network", float("nan")))
    info = predictor.last_info  # window counts are the same every run; stages_s are the last run's
    peak_gb = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    reserved_gb = torch.cuda.max_memory_reserved(device) / 1e9 if device.type == "cuda" else None
    net_s = float(np.median(network_times))
    bound = info.windows * n_models * GFLOP_PER_WINDOW / 1e3 / throughput if throughput else None
    del predictor
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"models": n_models, "sw_batch_size": sw_batch_size, "end_to_end_s": round(float(np.median(times)), 2),
            "network_s": round(net_s, 2), "windows": info.windows, "windows_uncropped": info.windows_uncropped,
            "s_per_window_per_model": round(net_s / max(1, info.windows * n_models), 4),
            "peak_gpu_gb": round(peak_gb, 2) if peak_gb is not None else None,
            "peak_reserved_gb": round(reserved_gb, 2) if reserved_gb is not None else None,
            "flop_bound_s": round(bound, 2) if bound else None,
            "stages_s": {k: round(v, 2) for k, v in info.seconds.items()}}


def memory_capped_run(network, config, pet, device, cap_gb: float) -> dict:
    """One model uncapped, then under a GPU memory cap: the steps down taken, and whether the mask is the same."""
    import numpy as np
    import SimpleITK as sitk
    import torch

    from model import Predictor

    free = Predictor([network], config, device=device, sw_batch_size=8).predict(pet)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb * 1e9 / total), device)
    try:
        capped = Predictor([network], config, device=device, sw_batch_size=8)
        started = time.perf_counter()
        mask = capped.predict(pet)
        seconds = time.perf_counter() - started
        same = bool(np.array_equal(sitk.GetArrayViewFromImage(mask), sitk.GetArrayViewFromImage(free)))
        return {"cap_gb": cap_gb, "fallbacks": capped.last_info.fallbacks, "seconds": round(seconds, 2),
                "same_mask": same}
    except torch.OutOfMemoryError as exc:
        return {"cap_gb": cap_gb, "error": str(exc).splitlines()[0]}
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)


if __name__ == "__main__":
    sys.exit(main())
