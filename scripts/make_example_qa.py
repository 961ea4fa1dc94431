"""Make docs/example_qa.png: a QA picture of a synthetic whole-body FDG PET with known lesions.

The phantom is built here (no patient data in the repository): organs and lesions are ellipsoids
in physical LPS coordinates, sampled on a grid with a RAS-like direction matrix (as NIfTI files
often have) so the picture also shows that reorientation works. The "prediction" finds some lesions,
misses one and adds two false positives, so every colour and metric in the picture means something.

    python -m scripts.make_example_qa [--out docs/example_qa.png] [--save-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from evaluation.metrics import evaluate_images
from evaluation.mip import metrics_title
from lesion_report.mip import save_mip_png

SIZE = (128, 96, 200)  # voxels along index i, j, k
SPACING = (4.0, 4.0, 5.0)  # mm
DIRECTION = np.diag([-1.0, -1.0, 1.0])  # i towards patient right, j towards anterior, k towards head

# (centre x, y, z in mm; radii in mm; SUV). x: + = patient left, y: + = posterior, z: + = superior.
BODY = [
    ((0, 0, 880), (75, 90, 105), 1.0),  # head
    ((0, 0, 770), (50, 50, 60), 1.0),  # neck
    ((0, 0, 530), (170, 110, 250), 0.8),  # trunk
    ((215, 0, 560), (40, 40, 190), 0.6),  # left arm
    ((-215, 0, 560), (40, 40, 190), 0.6),  # right arm
    ((90, 0, 150), (70, 70, 200), 0.6),  # left leg
    ((-90, 0, 150), (70, 70, 200), 0.6),  # right leg
]
ORGANS = [
    ((0, 0, 890), (65, 80, 85), 7.5),  # brain
    ((80, 0, 640), (65, 70, 110), 0.3),  # left lung
    ((-80, 0, 640), (65, 70, 110), 0.3),  # right lung
    ((25, -35, 575), (45, 40, 45), 4.0),  # heart
    ((-75, 0, 480), (85, 80, 65), 2.3),  # liver
    ((80, 55, 445), (25, 25, 50), 3.5),  # left kidney
    ((-80, 55, 440), (25, 25, 50), 3.5),  # right kidney
    ((0, -20, 315), (40, 35, 35), 25.0),  # bladder
    ((0, 75, 530), (15, 15, 250), 1.6),  # spine (marrow)
]
LESIONS = [
    ((85, -15, 660), 13, 9.0),  # lung nodule
    ((-15, -25, 620), 10, 6.0),  # mediastinal node
    ((-95, 10, 470), 16, 8.0),  # liver metastasis
    ((135, 0, 690), 9, 4.0),  # left axillary node: the prediction misses it
    ((60, 40, 345), 12, 7.0),  # pelvic bone metastasis
]
# Prediction: found lesions as slightly shifted/resized spheres, plus two false positives.
PRED = [
    ((86, -14, 662), 12),
    ((-14, -23, 622), 12),
    ((-92, 12, 468), 15),
    ((60, 42, 347), 10),
    ((0, -20, 352), 14),  # bladder dome
    ((80, 55, 470), 10),  # kidney
]


def physical_grid() -> np.ndarray:
    """Physical coordinates (mm) of every voxel, shaped (k, j, i, 3) like the SimpleITK array."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in SIZE], indexing="ij"), axis=-1).astype(np.float32)
    phys = (idx * np.asarray(SPACING, np.float32)) @ DIRECTION.T.astype(np.float32)
    phys -= (phys.reshape(-1, 3).min(0) + phys.reshape(-1, 3).max(0)) / 2  # centre x, y on the body
    phys[..., 2] -= phys[..., 2].min()  # z from 0 (thighs) upwards
    return np.ascontiguousarray(phys.transpose(2, 1, 0, 3))


def ellipsoid(phys: np.ndarray, centre: tuple, radii: tuple | float) -> np.ndarray:
    """Boolean mask of an ellipsoid (a sphere when radii is a number)."""
    r = np.broadcast_to(np.asarray(radii, np.float32), (3,))
    return (((phys - np.asarray(centre, np.float32)) / r) ** 2).sum(-1) <= 1.0


def build(seed: int = 0) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """(PET in SUV, ground truth, prediction) on one grid."""
    rng = np.random.default_rng(seed)
    phys = physical_grid()
    pet = np.zeros(phys.shape[:3], np.float32)
    for centre, radii, suv in BODY:
        pet = np.maximum(pet, np.where(ellipsoid(phys, centre, radii), suv, 0).astype(np.float32))
    body = pet > 0
    for centre, radii, suv in ORGANS:
        pet[ellipsoid(phys, centre, radii) & body] = suv
    gt = np.zeros(pet.shape, np.uint8)
    for centre, radius, suv in LESIONS:
        sphere = ellipsoid(phys, centre, radius)
        pet[sphere] = suv
        gt[sphere] = 1
    pred = np.zeros_like(gt)
    for centre, radius in PRED:
        pred[ellipsoid(phys, centre, radius)] = 1
    pet *= rng.normal(1.0, 0.25, pet.shape).astype(np.float32)  # Poisson-like noise, then blur
    pet = gaussian_filter(np.clip(pet, 0, None), sigma=(1.2, 1.5, 1.5)).astype(np.float32)

    def image(arr: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(SPACING)
        img.SetDirection(DIRECTION.ravel().tolist())
        return img

    return image(pet), image(gt), image(pred)


def main() -> int:
    """Build the phantom, score the prediction and write the picture."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("docs/example_qa.png"))
    parser.add_argument("--save-dir", type=Path, help="also write pet/gt/pred as .nii.gz here")
    args = parser.parse_args()
    pet, gt, pred = build()
    metrics = evaluate_images(gt, pred)
    if args.save_dir is not None:
        for name, img in (("pet", pet), ("gt", gt), ("pred", pred)):
            (args.save_dir / name).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(img, str(args.save_dir / name / "phantom.nii.gz"))
    save_mip_png(pet, args.out, pred=pred, gt=gt, title=metrics_title("synthetic phantom", metrics))
    print(metrics)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
