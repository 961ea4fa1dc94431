"""Train the tiny hot-spot network the inference tests use (tests/data/tiny_hotspot.pt).

Random weights decide nothing, so tests of geometry and cropping need a network that finds
something: this one learns, in about a minute on one core, that compact hot blobs inside a warm
body are lesions. It is a test fixture, not a model of FDG-PET.

    python -m scripts.make_test_weights [--out tests/data/tiny_hotspot.pt] [--steps 300]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

from model.config import tiny_config
from model.network import build_network, save_checkpoint
from model.preprocessing import percentile_scale


def synthetic_volume(rng: np.random.Generator, shape: tuple[int, int, int] = (48, 48, 48)
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A warm ellipsoid body with 0-3 hot blobs (the label), noise, percentile-scaled."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    centre = np.array(shape, dtype=np.float32)[:, None, None, None] / 2 + rng.uniform(-4, 4, (3, 1, 1, 1))
    radii = rng.uniform(12, 22, (3, 1, 1, 1)).astype(np.float32)
    body = (((grid - centre) / radii) ** 2).sum(0) <= 1
    pet = body * rng.uniform(0.5, 2.0)
    label = np.zeros(shape, dtype=np.uint8)
    for _ in range(rng.integers(0, 4)):
        c = rng.uniform(8, np.array(shape) - 8)[:, None, None, None]
        r = rng.uniform(1.5, 5.0, (3, 1, 1, 1))
        blob = (((grid - c) / r) ** 2).sum(0) <= 1
        pet = np.where(blob, rng.uniform(4, 12), pet)
        label |= blob.astype(np.uint8)
    pet = pet + rng.normal(0, 0.1, shape) * body
    return percentile_scale(np.clip(pet, 0, None).astype(np.float32)), label


def train(steps: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = tiny_config()
    net = build_network(config)
    optim = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    for step in range(steps):
        batch = [synthetic_volume(rng) for _ in range(4)]
        sl = tuple(slice(o, o + 32) for o in rng.integers(0, 17, 3))
        x = torch.from_numpy(np.stack([b[0][sl] for b in batch]))[:, None]
        y = torch.from_numpy(np.stack([b[1][sl] for b in batch]))[:, None].long()
        loss = loss_fn(net(x), y)
        optim.zero_grad()
        loss.backward()
        optim.step()
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f}")
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("tests/data/tiny_hotspot.pt"))
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    net = train(args.steps)
    save_checkpoint(args.out, net, tiny_config(), purpose="test fixture: hot blobs in a warm body")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
