"""The registry of mask formats: one entry per format, and the runner asks it for everything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import process
from runner.formats import FORMATS, MaskFormat, format_of, itk_format, register
from tests.test_process import OUT_SUB, make_input, run


def test_the_registry_holds_the_image_formats_and_dicom_seg():
    assert {"mha", "nifti", "dicom-seg"} <= set(FORMATS)
    assert FORMATS["nifti"].suffix == ".nii.gz" and FORMATS["mha"].suffix == ".mha"
    assert FORMATS["dicom-seg"].needs_dicom and FORMATS["dicom-seg"].results_type == "dicom_seg"
    assert not any(FORMATS[name].needs_dicom for name in ("mha", "nifti"))
    # by suffix, any case, the longest suffix winning (".nii.gz" is not ".gz")
    assert format_of(Path("A.NII.GZ")).name == "nifti" and format_of(Path("a.nii")).name == "nifti"
    assert format_of(Path("b.mhd")).name == "mha" and format_of(Path("c.dcm")).name == "dicom-seg"
    with pytest.raises(ValueError, match="belongs to 'mha'"):
        register(itk_format("meta", (".mha",)))
    assert "meta" not in FORMATS


def test_the_command_line_offers_what_the_registry_holds():
    action = next(a for a in process.build_parser()._actions if a.dest == "output_format")
    assert tuple(action.choices) == tuple(FORMATS)


@pytest.fixture
def gipl_format():
    """A format that is not built in, added the one way there is: a ``register`` call. (GIPL, not VTK:
    ITK's VTK reader leaves the process in the C locale, and every later text read in ASCII.)"""
    try:
        yield register(itk_format("gipl", (".gipl",)))
    finally:
        FORMATS.pop("gipl", None)


def test_a_new_format_is_one_entry(tmp_path, gipl_format: MaskFormat):
    """Registered once, the format is a --output-format choice, is written, named in results.json,
    kept on a rerun (its file reads back whole) and gives the same mask as the default format."""
    make_input(tmp_path / "input")
    default_root = tmp_path / "default"
    assert run(default_root, input_root=tmp_path / "input") == 0
    assert run(tmp_path, "--output-format", "gipl") == 0
    written = tmp_path / "output" / OUT_SUB / "case_a.gipl"
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GiplImageIO")  # read by ITK's own GIPL reader, not by the project
    reader.SetFileName(str(written))
    mask = sitk.GetArrayFromImage(reader.Execute())
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(default_root / "output" / OUT_SUB / "case_a.mha")))
    assert expected.sum() > 0 and np.array_equal(mask, expected)
    results = json.loads((tmp_path / "output" / "results.json").read_text())
    assert results[0]["outputs"] == [{"type": "metaio_image", "filename": "case_a.gipl"}]
    stamp = written.stat().st_mtime_ns
    assert run(tmp_path, "--output-format", "gipl") == 0  # a rerun keeps the finished file
    assert written.stat().st_mtime_ns == stamp
