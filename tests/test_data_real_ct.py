# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""A real abdominal CT through the KiTS19 loader and preprocessing.

The TotalSegmentator source distribution on PyPI ships a real CT (3 mm, RAS) with organ labels
(``tests/reference_files/example_ct_sm.nii.gz`` and ``example_seg.nii.gz``; kidneys are labels 2 and 3). The test
downloads it, lays it out as a KiTS19 case (I, P, L affine, (slices, H, W) array, both kidneys -> label 1) and checks
the geometry after the KiTS19 preprocessing against the source. It is skipped only when the registry cannot be reached.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose

from monai_mixedfocal.data import kits19_datalist, kits19_deterministic_transforms
from monai_mixedfocal.data.io import save_nifti

PACKAGE = "totalsegmentator==2.18.0"
MEMBERS = {"ct": "tests/reference_files/example_ct_sm.nii.gz", "seg": "tests/reference_files/example_seg.nii.gz"}
KIDNEY_LABELS = (2, 3)
NETWORK_MARKERS = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeout",
    "ReadTimeout",
    "ProxyError",
    "Could not fetch URL",
)


def _download(tmp_path: Path) -> dict[str, Path]:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", PACKAGE, "-d", "dl"]
    try:
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip(f"the package registry could not be reached in 600 s (pip download {PACKAGE})")
    if result.returncode != 0:
        output = result.stdout + result.stderr
        if any(marker in output for marker in NETWORK_MARKERS):
            pytest.skip(f"the package registry cannot be reached (pip download {PACKAGE}): {output.strip()[-300:]}")
        pytest.fail(f"pip download {PACKAGE} failed:\n{output[-2000:]}")
    (sdist,) = (tmp_path / "dl").glob("totalsegmentator-2.18.0.tar.gz")
    files = {}
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1]: name for name in archive.getnames() if "/" in name}
        for key, member in MEMBERS.items():
            assert member in names, f"{member} not in {sdist.name}"
            target = tmp_path / Path(member).name
            target.write_bytes(archive.extractfile(names[member]).read())
            files[key] = target
    return files


def _as_kits19_case(ct_path: Path, seg_path: Path, root: Path) -> Path:
    """Reorient to the KiTS19 convention (I, P, L) and keep both kidneys as label 1."""
    ct, seg = nib.load(ct_path), nib.load(seg_path)
    ornt = nib.orientations.ornt_transform(nib.io_orientation(ct.affine), nib.orientations.axcodes2ornt("IPL"))
    ct_ipl, seg_ipl = ct.as_reoriented(ornt), seg.as_reoriented(ornt)
    kidney = np.isin(np.asarray(seg_ipl.dataobj), KIDNEY_LABELS).astype(np.uint8)
    case = root / "data" / "case_00000"
    save_nifti(case / "imaging.nii.gz", np.asarray(ct_ipl.dataobj).astype(np.int16), ct_ipl.affine)
    save_nifti(case / "segmentation.nii.gz", kidney, seg_ipl.affine)
    return case


def _centroid_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    index = np.argwhere(mask).mean(axis=0)
    return affine[:3, :3] @ index + affine[:3, 3]


def test_real_ct_through_kits19_loader_and_preprocessing(tmp_path: Path) -> None:
    files = _download(tmp_path)
    source_ct, source_seg = nib.load(files["ct"]), nib.load(files["seg"])
    assert nib.aff2axcodes(source_ct.affine) == ("R", "A", "S")
    source_kidney = np.isin(np.asarray(source_seg.dataobj), KIDNEY_LABELS)
    assert source_kidney.sum() > 1000

    root = tmp_path / "kits19"
    case = _as_kits19_case(files["ct"], files["seg"], root)
    laid_out = nib.load(case / "imaging.nii.gz")
    assert nib.aff2axcodes(laid_out.affine) == ("I", "P", "L")
    assert laid_out.shape == source_ct.shape[::-1]  # (slices, H, W)

    datalist = kits19_datalist(root, check_labels=True)
    assert datalist.case_ids == ["case_00000"]
    item = {key: str(root / datalist.cases[0][key]) for key in ("image", "label")}
    out = Compose(kits19_deterministic_transforms())(item)
    image, label = out["image"], out["label"]

    np.testing.assert_allclose(label.pixdim.numpy(), (1.62, 1.62, 3.22), atol=1e-5)
    assert nib.aff2axcodes(label.affine.numpy()) == ("R", "A", "S")
    extent = np.array(source_ct.shape) * np.array(source_ct.header.get_zooms())
    np.testing.assert_allclose(np.array(image.shape[1:]) * (1.62, 1.62, 3.22), extent, atol=3.3)  # same field of view
    assert set(torch.unique(label).tolist()) == {0.0, 1.0}  # label values kept, nothing invented by interpolation
    kidney = label[0].numpy() > 0
    volume = kidney.sum() * 1.62 * 1.62 * 3.22
    assert volume == pytest.approx(source_kidney.sum() * 27.0, rel=0.1)
    shift = _centroid_mm(kidney, label.affine.numpy()) - _centroid_mm(source_kidney, source_seg.affine)
    assert np.abs(shift).max() < 3.0  # the kidneys stay where they are in world coordinates (mm)
    assert float(image[0][kidney].mean()) > float(image.mean()) + 0.3  # enhanced kidney brighter than average
