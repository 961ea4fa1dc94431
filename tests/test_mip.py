"""QA pictures: anatomy ends up head-up and true to scale whatever the direction matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.image import imread

from evaluation.mip import main
from lesion_report.mip import GAP_PX, HEADER_PX, MARGIN_PX, projections, save_mip_png

SIZE = (12, 10, 16)  # ITK index order (i, j, k)
SPACING = (2.0, 3.0, 4.0)

DIRECTIONS = {
    "identity": np.eye(3),
    "z flipped": np.diag([1.0, 1.0, -1.0]),
    "all flipped": np.diag([-1.0, -1.0, -1.0]),
    # index axes permuted: i points to +y (posterior), j to -z (inferior), k to +x (left)
    "permuted": np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
}


def _phantom(direction: np.ndarray) -> tuple[sitk.Image, sitk.Image]:
    """PET and mask defined in physical LPS space, sampled on a grid with the given direction.

    Head: SUV 10 in the top quarter (+z = superior). Marker: SUV 8 on the patient's left (+x),
    lower half, front (-y = anterior). The mask marks the marker.
    """
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in SIZE], indexing="ij"), axis=-1).astype(float)
    phys = (idx * SPACING) @ direction.T  # (i, j, k, 3) physical coordinates, origin 0
    lo, hi = phys.reshape(-1, 3).min(0), phys.reshape(-1, 3).max(0)
    rel = (phys - lo) / (hi - lo)  # 0..1 along L-R (x), A-P (y), I-S (z)
    pet = np.ones(SIZE, np.float32)
    pet[rel[..., 2] > 0.75] = 10.0
    marker = (rel[..., 0] > 0.7) & (rel[..., 1] < 0.3) & (rel[..., 2] > 0.2) & (rel[..., 2] < 0.45)
    pet[marker] = 8.0

    def image(arr: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))  # (i,j,k) -> (k,j,i)
        img.SetSpacing(SPACING)
        img.SetDirection(direction.ravel().tolist())
        return img

    return image(pet), image(marker.astype(np.uint8))


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_projections_are_head_up_and_true_to_scale(name: str) -> None:
    direction = DIRECTIONS[name]
    pet, mask = _phantom(direction)
    coronal, sagittal = projections(pet, pred=mask)
    extent = np.abs(direction) @ (np.array(SIZE) * SPACING)  # physical extent along x, y, z
    for view in (coronal, sagittal):
        rows = view.pet.shape[0]
        assert view.pet[: rows // 5].min() == 10.0, "head (SUV 10) must be at the top"
        assert view.pet[-rows // 5 :].max() < 10.0
        assert view.height_mm == pytest.approx(extent[2])
        assert view.pixel_aspect * view.pet.shape[0] / view.pet.shape[1] == pytest.approx(
            view.height_mm / view.width_mm
        )
        r, c = np.nonzero(view.pred)
        assert r.min() >= rows // 2, "marker is in the lower half"
    assert coronal.width_mm == pytest.approx(extent[0])
    assert sagittal.width_mm == pytest.approx(extent[1])
    # Coronal seen from the front: patient's left on the viewer's right. Sagittal: anterior on the left.
    assert np.nonzero(coronal.pred)[1].min() > coronal.pet.shape[1] // 2
    assert np.nonzero(sagittal.pred)[1].max() < sagittal.pet.shape[1] // 2


def _darkness_by_half(png: np.ndarray) -> tuple[float, float]:
    grey = png[..., :3].mean(axis=-1)
    h = grey.shape[0]
    return float((1 - grey[: h // 2]).mean()), float((1 - grey[h // 2 :]).mean())


def test_png_size_and_head_up_for_flipped_direction(tmp_path: Path) -> None:
    pet, mask = _phantom(DIRECTIONS["z flipped"])
    out = save_mip_png(pet, tmp_path / "qa.png", height_px=300, title="flipped")
    png = imread(out)
    assert png.shape[0] == 300
    # two true-to-scale panels side by side, each as high as the picture less header and margins
    panel_h = 300 - HEADER_PX - 2 * MARGIN_PX
    expected_w = panel_h * (SIZE[0] * 2.0 + SIZE[1] * 3.0) / (SIZE[2] * 4.0) + 3 * GAP_PX
    assert abs(png.shape[1] - expected_w) <= 1
    top, bottom = _darkness_by_half(png)
    assert top > 2 * bottom, "inverted grey: the hot head is dark and must be in the upper half"


def test_png_overlays_prediction_red_and_ground_truth_green(tmp_path: Path) -> None:
    pet, mask = _phantom(DIRECTIONS["permuted"])
    png = imread(save_mip_png(pet, tmp_path / "qa.png", pred=mask, gt=mask, height_px=300))
    r, g, b = png[..., 0], png[..., 1], png[..., 2]
    assert ((r > 0.8) & (g < 0.5) & (b < 0.5)).any()
    assert ((g > 0.8) & (r < 0.5) & (b < 0.5)).any()


def test_mip_cli_with_metrics_title(tmp_path: Path, capsys) -> None:
    pet, mask = _phantom(DIRECTIONS["identity"])
    paths = {}
    for key, img in (("pet", pet), ("pred", mask), ("gt", mask)):
        paths[key] = tmp_path / f"{key}.nii.gz"
        sitk.WriteImage(img, str(paths[key]))
    out = tmp_path / "out" / "case.png"
    args = ["--pet", str(paths["pet"]), "--pred", str(paths["pred"]), "--gt", str(paths["gt"])]
    assert main([*args, "--out", str(out), "--height", "200"]) == 0
    assert imread(out).shape[0] == 200
    assert main(["--pet", str(paths["pet"]), "--pred", str(tmp_path / "nope.mha"), "--out", str(out)]) == 1
    assert "nope.mha" in capsys.readouterr().err


def test_a_wide_scan_gets_shorter_panels_not_a_wider_picture(tmp_path: Path) -> None:
    """A 400 mm wide, 250 mm tall field of view (a phantom, a head-and-neck scan) within a page's width:
    the panels shrink to fit ``max_width_px`` (true to scale), a tall whole body keeps its height."""
    wide = sitk.Image([100, 100, 50], sitk.sitkFloat32)  # 4 mm: 400 x 400 x 250 mm
    wide.SetSpacing((4.0, 4.0, 5.0))
    out = imread(save_mip_png(wide, tmp_path / "wide.png", height_px=560, max_width_px=1100))
    free = 1100 - 3 * GAP_PX  # two panels of 400 mm wide and 250 mm tall side by side
    panel_h = free / (2 * 400 / 250)
    assert out.shape[1] <= 1100 and abs(out.shape[0] - (panel_h + HEADER_PX + 2 * MARGIN_PX)) <= 1
    tall = sitk.Image([60, 40, 180], sitk.sitkFloat32)  # 240 x 160 x 1800 mm
    tall.SetSpacing((4.0, 4.0, 10.0))
    out = imread(save_mip_png(tall, tmp_path / "tall.png", height_px=560, max_width_px=1100))
    assert out.shape[0] == 560 and out.shape[1] < 1100


def test_a_wide_scan_keeps_room_for_its_lesion_list(tmp_path: Path) -> None:
    """One bed position 700 x 700 x 160 mm with 16 lesions: the panels may shrink to the page's width,
    but not below the list of 16 lesions beside them (18 lines of 12 px)."""
    from lesion_report.lesions import measure_lesions

    arr = np.zeros((40, 175, 175), np.float32)  # z, y, x at 4 mm
    mask = np.zeros(arr.shape, np.uint8)
    for k in range(16):
        y, x = 20 + 9 * k, 20 + 8 * k
        arr[18:22, y:y + 3, x:x + 3] = 8.0
        mask[18:22, y:y + 3, x:x + 3] = 1
    pet = sitk.GetImageFromArray(arr)
    pet.SetSpacing((4.0, 4.0, 4.0))
    mask_img = sitk.GetImageFromArray(mask)
    mask_img.CopyInformation(pet)
    lesions = measure_lesions(pet, mask_img).lesions
    assert len(lesions) == 16
    out = imread(save_mip_png(pet, tmp_path / "bed.png", pred=mask_img, lesions=lesions, height_px=560,
                              max_width_px=1100))
    assert out.shape[0] >= 18 * 12 + HEADER_PX + 2 * MARGIN_PX
