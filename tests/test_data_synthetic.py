# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Generated KiTS19-like and BraTS20-like data: real layouts and geometry, determinism, class fractions, contrast."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from monai_mixedfocal.data import synthesize_brats20, synthesize_kits19
from monai_mixedfocal.data.synthetic_brats20 import synthetic_brats20_case
from monai_mixedfocal.data.synthetic_kits19 import synthetic_kits19_case


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_kits19_layout_and_real_geometry(tmp_path: Path) -> None:
    folders = synthesize_kits19(tmp_path, cases=2, seed=3)
    assert [f.relative_to(tmp_path).as_posix() for f in folders] == ["data/case_00000", "data/case_00001"]
    image = nib.load(folders[0] / "imaging.nii.gz")
    label = nib.load(folders[0] / "segmentation.nii.gz")
    assert image.shape == label.shape == (40, 128, 128)  # (slices, H, W) as in KiTS19
    assert nib.aff2axcodes(image.affine) == ("I", "P", "L")
    assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
    zooms = image.header.get_zooms()
    assert 2.2 <= zooms[0] <= 2.8 and all(1.1 <= z <= 1.4 for z in zooms[1:])
    np.testing.assert_allclose(np.abs(image.affine[:3, :3]).sum(0), zooms)  # one axis per column, signs from I,P,L
    np.testing.assert_allclose(image.affine, label.affine)


def test_kits19_byte_identical_per_seed_and_case(tmp_path: Path) -> None:
    synthesize_kits19(tmp_path / "a", cases=2, seed=5, shape=(16, 32, 32))
    synthesize_kits19(tmp_path / "b", cases=2, seed=5, shape=(16, 32, 32))
    synthesize_kits19(tmp_path / "c", case_ids=[1], seed=5, shape=(16, 32, 32))
    synthesize_kits19(tmp_path / "d", cases=2, seed=6, shape=(16, 32, 32))
    a, b, c, d = (_digests(tmp_path / name) for name in "abcd")
    assert a == b
    assert c.items() <= a.items()  # a case does not depend on which other cases are generated
    assert a.keys() == d.keys() and not set(a.values()) & set(d.values())


@pytest.mark.parametrize("case", range(6))
def test_kits19_classes_visible_and_small_tumour_attached(case: int) -> None:
    image, label, _ = synthetic_kits19_case(case, seed=0)
    kidney, tumor = label == 1, label == 2
    assert 0.004 < kidney.mean() < 0.03
    assert 0 < tumor.mean() < 0.01
    ring = ndimage.binary_dilation(kidney, iterations=3) & ~kidney & (label == 0)
    assert image[kidney].mean() > image[ring].mean() + 80  # kidneys stand out by HU from their surroundings
    assert image[kidney].mean() > 150 and image.min() >= -1024 and image.max() <= 3071
    grown = ndimage.binary_dilation(tumor, iterations=2)
    assert (grown & kidney).any()  # the tumour touches a kidney
    components = ndimage.label(kidney | tumor)[1]
    assert components == 2  # two kidneys, the tumour inside or attached to one of them


def test_kits19_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="tumor_fraction"):
        synthetic_kits19_case(0, tumor_fraction=(0.005, 0.02))
    with pytest.raises(ValueError, match="shape"):
        synthetic_kits19_case(0, shape=(8, 32, 32))
    with pytest.raises(ValueError, match="cases must be a positive integer"):
        synthesize_kits19("unused", cases=0)


def test_brats20_layout_labels_and_determinism(tmp_path: Path) -> None:
    folders = synthesize_brats20(tmp_path / "a", cases=2, seed=1)
    synthesize_brats20(tmp_path / "b", cases=2, seed=1)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert folders[0].relative_to(tmp_path / "a").as_posix() == "MICCAI_BraTS2020_TrainingData/BraTS20_Training_001"
    names = sorted(p.name for p in folders[0].iterdir())
    assert names == [f"BraTS20_Training_001_{m}.nii.gz" for m in ("flair", "seg", "t1", "t1ce", "t2")]
    t1ce = nib.load(folders[0] / "BraTS20_Training_001_t1ce.nii.gz")
    assert nib.aff2axcodes(t1ce.affine) == ("L", "P", "S") and t1ce.header.get_zooms() == (1.0, 1.0, 1.0)
    w39 = synthesize_brats20(tmp_path / "c", case_ids=[355], suffix=".nii")[0]
    assert (w39 / "W39_1998.09.19_Segm.nii").is_file() and (w39 / "BraTS20_Training_355_t1ce.nii").is_file()


@pytest.mark.parametrize("case", [1, 2, 3, 4])
def test_brats20_tumour_structure(case: int) -> None:
    images, seg, _ = synthetic_brats20_case(case)
    assert set(np.unique(seg).tolist()) == {0, 1, 2, 4}
    et = seg == 4
    assert 0 < et.mean() < 0.01
    t1ce = images["t1ce"]
    brain = t1ce > 0
    assert brain.mean() > 0.2 and all((image > 0).sum() == brain.sum() for image in images.values())
    assert t1ce[et].mean() > 1.5 * t1ce[brain & (seg == 0)].mean()  # the rim enhances on T1-CE only
    assert images["t1"][et].mean() < 1.2 * images["t1"][brain & (seg == 0)].mean()
    no_et = synthetic_brats20_case(case, enhancing=False)[1]
    assert not (no_et == 4).any() and (no_et == 1).sum() == ((seg == 1) | et).sum()


def test_brats20_no_enhancing_must_name_generated_cases(tmp_path: Path) -> None:
    """A typo in no_enhancing would silently give every case an enhancing tumour; nothing is written then."""
    with pytest.raises(ValueError, match=r"no_enhancing names case\(s\) \[9\] that are not generated \(generated: 1"):
        synthesize_brats20(tmp_path, cases=3, no_enhancing=[2, 9])
    assert not any(tmp_path.iterdir())


def test_repeated_case_ids_are_refused() -> None:
    """Against the bug (drop the uniqueness check): ``case_ids=[1, 1]`` wrote the same case twice."""
    from monai_mixedfocal.data.synthetic_common import check_cases

    with pytest.raises(ValueError, match="case_ids must be unique integers"):
        check_cases(0, [1, 2, 1], first=0, last=999)


def test_brats20_affine_is_the_release_s() -> None:
    """Against the bug ``shape[1] - 1`` -> ``shape[1]``: the generated cases lay one voxel away from the real release's
    grid (its 240 x 240 x 155 volumes have the origin row 239); only axis codes were tested."""
    from monai_mixedfocal.data.synthetic_brats20 import brats20_affine

    expected = np.array([[-1, 0, 0, 0], [0, -1, 0, 239], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
    np.testing.assert_array_equal(brats20_affine((240, 240, 155)), expected)
