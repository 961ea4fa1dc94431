"""The seed-style pipeline, built from MONAI's own transforms and inferer, as the authors ran it.

It is the reference the fast path in ``model.predictor`` is tested and benchmarked against:
LoadImaged (ITK) -> EnsureChannelFirstd -> Orientationd(RAS) -> Spacingd(bilinear) ->
ScaleIntensityRangePercentilesd -> SlidingWindowInferer per network -> Invertd (linear on the
logits) -> softmax -> argmax per network -> VoteEnsemble (mean of the masks, rounded).
Slow by design: every network gets its own full-volume pass and its own inversion.

It is a module, not a test file, so that benchmarks and tests share it; it must stay independent of
``model/preprocessing.py`` (which it checks) and follow the paper's chain as training's
``deterministic_transforms`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    Orientationd,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    VoteEnsemble,
)

from model.config import ModelConfig


def reference_transforms(config: ModelConfig) -> Compose:
    lower, upper = config.percentiles
    return Compose([
        LoadImaged(keys="image", reader="ITKReader", image_only=False),
        EnsureChannelFirstd(keys="image"),
        Orientationd(keys="image", axcodes="RAS"),
        Spacingd(keys="image", pixdim=config.spacing, mode="bilinear"),
        ScaleIntensityRangePercentilesd(keys="image", lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True),
    ])


@torch.inference_mode()
def reference_predict(pet_path: str | Path, networks: Sequence[torch.nn.Module], config: ModelConfig,
                      device: str | torch.device = "cpu", sw_batch_size: int = 8,
                      return_scores: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Mask (x, y, z uint8, the file's own array order) from MONAI's pipeline.

    With ``return_scores`` also the per-network lesion-minus-background logits after Invertd,
    (M, x, y, z), to compare scores and not only masks.
    """
    device = torch.device(device)
    transforms = reference_transforms(config)
    data = transforms({"image": str(pet_path)})
    image = data["image"]
    inferer = SlidingWindowInferer(roi_size=config.roi_size, sw_batch_size=sw_batch_size,
                                   overlap=config.overlap, mode=config.blend_mode, sigma_scale=config.sigma_scale)
    invert = Invertd(keys="pred", transform=transforms, orig_keys="image", nearest_interp=False,
                     to_tensor=True)
    masks, scores = [], []
    for net in networks:
        net = net.to(device).eval()
        with torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
            logits = inferer(image.unsqueeze(0).to(device), net)[0].float()
        restored = invert({"pred": logits.cpu(), "image": image})["pred"]
        probs = torch.softmax(torch.as_tensor(restored), dim=0)
        masks.append(torch.argmax(probs, dim=0, keepdim=True).float())
        lesion, other = config.lesion_class, 1 - config.lesion_class
        scores.append(torch.as_tensor(restored)[lesion] - torch.as_tensor(restored)[other])
    voted = VoteEnsemble()(masks) if len(masks) > 1 else masks[0]
    mask = np.asarray(voted[0]).astype(np.uint8)
    if return_scores:
        return mask, np.stack([np.asarray(s) for s in scores])
    return mask
