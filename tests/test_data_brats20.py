# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""BraTS20 datalist on generated cases: .nii / .nii.gz, nested mirrors, case 355, no-ET exclusion, binary ET masks."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import monai_mixedfocal.data.brats20 as brats20_module
from monai_mixedfocal.data import DataError, brats20_datalist, refresh_et_masks, synthesize_brats20
from monai_mixedfocal.data.io import save_nifti

SHAPE = (24, 24, 16)
MIRROR = "BraTS2020_TrainingData"


@pytest.fixture(scope="module")
def brats_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cases 1-2 (.nii.gz), 3 without ET, 355 (.nii, W39 mask name), all nested one level deeper as in mirrors."""
    root = tmp_path_factory.mktemp("brats") / MIRROR
    synthesize_brats20(root, case_ids=[1, 2, 3], no_enhancing=[3], shape=SHAPE)
    synthesize_brats20(root, case_ids=[355], shape=SHAPE, suffix=".nii")
    return root.parent


@pytest.fixture
def copy_root(brats_root: Path, tmp_path: Path) -> Path:
    shutil.copytree(brats_root, tmp_path / "brats")
    return tmp_path / "brats"


def _case_dir(root: Path, case: int) -> Path:
    return root / MIRROR / "MICCAI_BraTS2020_TrainingData" / f"BraTS20_Training_{case:03d}"


def test_layout_nested_mirror_and_exclusions(brats_root: Path, tmp_path: Path) -> None:
    datalist = brats20_datalist(brats_root, labels_dir=tmp_path / "labels_et")
    assert datalist.case_ids == ["BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_355"]
    assert datalist.excluded == [
        {
            "case": "BraTS20_Training_003",
            "reason": "no enhancing-tumour voxel (label 4) in BraTS20_Training_003_seg.nii.gz",
        }
    ]
    case_355 = datalist.cases[-1]
    assert case_355["seg"].endswith("BraTS20_Training_355/W39_1998.09.19_Segm.nii")
    assert case_355["image"].endswith("BraTS20_Training_355_t1ce.nii")
    assert datalist.cases[0]["image"].endswith("BraTS20_Training_001_t1ce.nii.gz")
    assert datalist.labels == {"0": "background", "1": "enhancing tumor"}
    # the same cases from the MICCAI folder itself
    inner = brats20_datalist(brats_root / MIRROR / "MICCAI_BraTS2020_TrainingData", labels_dir=tmp_path / "labels_et")
    assert inner.case_ids == datalist.case_ids
    assert inner.cases[0]["image"] == "BraTS20_Training_001/BraTS20_Training_001_t1ce.nii.gz"


def test_cases_in_sibling_folders_are_sorted_by_name(tmp_path: Path) -> None:
    """The cases of one level come sorted by case name, also when they lie in two folders (not by path)."""
    (tmp_path / "a" / "BraTS20_Training_002").mkdir(parents=True)
    (tmp_path / "b" / "BraTS20_Training_001").mkdir(parents=True)
    found = brats20_module.find_brats20_cases(tmp_path)
    assert [p.name for p in found] == ["BraTS20_Training_001", "BraTS20_Training_002"]


def test_binary_et_masks_match_label_4(brats_root: Path, tmp_path: Path) -> None:
    datalist = brats20_datalist(brats_root, labels_dir=tmp_path / "et")
    for case in datalist.cases:
        mask_image = nib.load(datalist.base_dir / case["label"])
        seg_image = nib.load(datalist.base_dir / case["seg"])
        mask = np.asarray(mask_image.dataobj)
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, (np.asarray(seg_image.dataobj) == 4).astype(np.uint8))
        np.testing.assert_allclose(mask_image.affine, seg_image.affine)
        assert 0 < mask.mean() < 0.01
    assert not [p for p in (tmp_path / "et").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_keep_empty_cases(brats_root: Path, tmp_path: Path) -> None:
    datalist = brats20_datalist(brats_root, exclude_empty=False, labels_dir=tmp_path / "et")
    assert len(datalist.cases) == 4 and not datalist.excluded
    empty = next(case for case in datalist.cases if case["case"] == "BraTS20_Training_003")
    assert not np.asarray(nib.load(datalist.base_dir / empty["label"]).dataobj).any()


def _label_of_case_1(root: Path, labels_dir: Path | None = None) -> np.ndarray:
    """The binary mask the datalist of ``root`` points at for case 1."""
    datalist = brats20_datalist(root, labels_dir=labels_dir)
    case = next(case for case in datalist.cases if case["case"] == "BraTS20_Training_001")
    return np.asarray(nib.load(datalist.base_dir / case["label"]).dataobj)


def test_mask_of_another_segmentation_not_reused(tmp_path: Path) -> None:
    labels_dir = tmp_path / "labels_et"
    for name, seed in (("a", 0), ("b", 1)):  # two data sets with the same case names
        synthesize_brats20(tmp_path / name, seed=seed, case_ids=[1], shape=SHAPE)
    mask_a = _label_of_case_1(tmp_path / "a", labels_dir)
    seg_b = next((tmp_path / "b").rglob("BraTS20_Training_001_seg.nii.gz"))
    os.utime(seg_b, (0, 0))  # unpacked from an archive: far older than the mask made from set a
    expected = (np.asarray(nib.load(seg_b).dataobj) == 4).astype(np.uint8)
    assert not np.array_equal(mask_a, expected)
    np.testing.assert_array_equal(_label_of_case_1(tmp_path / "b", labels_dir), expected)


def test_mask_reused_for_the_same_segmentation(copy_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    brats20_datalist(copy_root)
    mask = copy_root / "labels_et" / "BraTS20_Training_001_et.nii.gz"
    seg = _case_dir(copy_root, 1) / "BraTS20_Training_001_seg.nii.gz"
    digest = hashlib.sha256(seg.read_bytes()).hexdigest()[:32]
    assert nib.load(mask).header["descrip"].item() == f"ET mask of sha256:{digest}".encode()
    before = mask.stat()
    os.utime(seg, ns=(before.st_mtime_ns + 10**9,) * 2)  # touched, same bytes

    def no_rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("an up-to-date mask was rebuilt")

    monkeypatch.setattr(brats20_module, "save_nifti", no_rebuild)
    assert _label_of_case_1(copy_root).any()
    assert (mask.stat().st_ino, mask.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize("descrip", ["", "ET mask of sha256:" + "0" * 32], ids=["no_fingerprint", "other"])
def test_mask_without_matching_fingerprint_rebuilt(copy_root: Path, descrip: str) -> None:
    brats20_datalist(copy_root)
    mask = copy_root / "labels_et" / "BraTS20_Training_001_et.nii.gz"
    seg = _case_dir(copy_root, 1) / "BraTS20_Training_001_seg.nii.gz"
    seg_image = nib.load(seg)
    header = nib.Nifti1Header()
    header["descrip"] = descrip  # e.g. written by an older version, or for another segmentation
    save_nifti(mask, np.zeros(SHAPE, np.uint8), seg_image.affine, header=header)
    later = seg.stat().st_mtime_ns + 10**9
    os.utime(mask, ns=(later, later))
    expected = (np.asarray(seg_image.dataobj) == 4).astype(np.uint8)
    np.testing.assert_array_equal(_label_of_case_1(copy_root), expected)
    mask.write_bytes(mask.read_bytes()[:-20])  # a damaged mask is rebuilt too
    np.testing.assert_array_equal(_label_of_case_1(copy_root), expected)


def test_a_mask_that_cannot_be_written_is_named_with_what_to_do(copy_root: Path, tmp_path: Path) -> None:
    """A labels_dir that cannot be made (here below a file; read-only folders behave alike for non-root users) is a
    DataError naming the mask and the option, not a bare OSError; rebuilding a saved datalist's mask says the same."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    mask = blocker / "labels_et" / "BraTS20_Training_001_et.nii.gz"
    with pytest.raises(DataError, match=re.escape(f"{mask}: cannot write the enhancing-tumour mask made from")) as err:
        brats20_datalist(copy_root, labels_dir=blocker / "labels_et")
    assert "NotADirectoryError" in str(err.value) and "--labels_dir" in str(err.value)
    seg = _case_dir(copy_root, 1) / "BraTS20_Training_001_seg.nii.gz"
    item = {"case": "BraTS20_Training_001", "label": str(mask), "seg": str(seg)}
    with pytest.raises(DataError, match="the datalist names this mask: make its folder writable"):
        refresh_et_masks([item])


def test_undefined_label_value(copy_root: Path) -> None:
    seg = _case_dir(copy_root, 2) / "BraTS20_Training_002_seg.nii.gz"
    image = nib.load(seg)
    data = np.asarray(image.dataobj).copy()
    data[0, 0, 0] = 3
    save_nifti(seg, data, image.affine)
    with pytest.raises(
        DataError, match=r"BraTS20_Training_002_seg\.nii\.gz: label value\(s\) 3 not defined for BraTS20"
    ):
        brats20_datalist(copy_root)


def test_missing_t1ce_truncated_and_mismatched_files(copy_root: Path) -> None:
    t1ce = _case_dir(copy_root, 355) / "BraTS20_Training_355_t1ce.nii"
    t1ce.write_bytes(t1ce.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"BraTS20_Training_355_t1ce\.nii: truncated NIfTI"):
        brats20_datalist(copy_root)
    t1ce.unlink()
    with pytest.raises(DataError, match=r"BraTS20_Training_355: case folder without BraTS20_Training_355_t1ce"):
        brats20_datalist(copy_root)
    seg = _case_dir(copy_root, 1) / "BraTS20_Training_001_seg.nii.gz"
    save_nifti(seg, np.zeros((24, 24, 15), np.int16), nib.load(seg).affine)
    with pytest.raises(DataError, match=r"BraTS20_Training_001_seg\.nii\.gz: label shape"):
        brats20_datalist(copy_root)


def test_missing_or_empty_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        brats20_datalist(tmp_path / "missing")
    with pytest.raises(DataError, match="no BraTS20_Training_XXX folders"):
        brats20_datalist(tmp_path)


def test_a_case_entry_that_is_not_a_folder_is_an_error(copy_root: Path, tmp_path: Path) -> None:
    parent = _case_dir(copy_root, 1).parent
    (parent / "BraTS20_Training_009").symlink_to(tmp_path / "nowhere")  # a broken link, e.g. a moved case folder
    with pytest.raises(DataError, match="BraTS20_Training_009: a case entry that is not a folder"):
        brats20_datalist(copy_root, labels_dir=tmp_path / "masks")


def test_a_stray_copy_of_a_case_folder_is_left_out_with_a_warning(brats_root: Path, tmp_path: Path) -> None:
    """``BraTS20_Training_006 (copy)`` and ``BraTS20_Training_07`` were left out without a word; they still are not
    cases, but the warning names them. The ``BraTS20_Validation_XXX`` folders do not look like training cases, nor
    do the case folders' own files (``BraTS20_Training_001_flair.nii.gz``, one folder level deeper)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(brats20_module.find_brats20_cases(brats_root)) > 0
    data = tmp_path / "MICCAI_BraTS2020_TrainingData"
    names = ("BraTS20_Training_006", "BraTS20_Training_006 (copy)", "BraTS20_Training_07", "BraTS20_Validation_1")
    for name in (*names, "Brats20_Training_005"):  # a name in other capitals was left out without a word
        (data / name).mkdir(parents=True)
    left_out = r"3 entries named like a case .*left out: \[.*006 \(copy\)', .*_07', .*Brats20_Training_005'\]"
    with pytest.warns(UserWarning, match=left_out):
        assert [p.name for p in brats20_module.find_brats20_cases(tmp_path)] == ["BraTS20_Training_006"]


def test_case_folders_found_at_most_three_levels_below_the_root(tmp_path: Path) -> None:
    """As the docstrings say: ``<root>/a/b/c/BraTS20_Training_XXX`` is found, one level deeper is not."""
    (tmp_path / "a" / "b" / "c" / "BraTS20_Training_001").mkdir(parents=True)
    assert [p.name for p in brats20_module.find_brats20_cases(tmp_path)] == ["BraTS20_Training_001"]
    (tmp_path / "deep" / "a" / "b" / "c" / "d" / "BraTS20_Training_002").mkdir(parents=True)
    with pytest.raises(DataError, match="no BraTS20_Training_XXX folders up to 3 folder levels below it"):
        brats20_module.find_brats20_cases(tmp_path / "deep")


def test_case_folders_at_two_levels_are_an_error(tmp_path: Path) -> None:
    """A stray copy of some cases beside the data set would otherwise hide the data set (the shallowest level won)."""
    for case in ("BraTS20_Training_001", "BraTS20_Training_002"):
        (tmp_path / "MICCAI_BraTS2020_TrainingData" / case).mkdir(parents=True)
    (tmp_path / "BraTS20_Training_001").mkdir()
    with pytest.raises(
        DataError,
        match=r"case folders at more than one folder level: 1 like BraTS20_Training_001, and 2 deeper like "
        r"MICCAI_BraTS2020_TrainingData/BraTS20_Training_001; point at the folder",
    ):
        brats20_module.find_brats20_cases(tmp_path)
    assert len(brats20_module.find_brats20_cases(tmp_path / "MICCAI_BraTS2020_TrainingData")) == 2


def test_the_macos_copy_of_a_zip_made_on_a_mac_is_not_a_second_level_of_cases(tmp_path: Path) -> None:
    """A zip made on a Mac unpacks ``__MACOSX/MICCAI_BraTS2020_TrainingData/BraTS20_Training_XXX`` beside the data:
    it stopped the listing as case folders at two levels."""
    for top in ("", "__MACOSX/"):
        for case in ("BraTS20_Training_001", "BraTS20_Training_002"):
            (tmp_path / f"{top}MICCAI_BraTS2020_TrainingData" / case).mkdir(parents=True)
    found = brats20_module.find_brats20_cases(tmp_path)
    assert [p.relative_to(tmp_path).parts[0] for p in found] == ["MICCAI_BraTS2020_TrainingData"] * 2


def test_a_training_case_without_segmentation_is_an_error(copy_root: Path, tmp_path: Path) -> None:
    """Every BraTS20 training case has a segmentation: a missing one is an incomplete download, not an exclusion
    that would move most cases to other folds."""
    seg = _case_dir(copy_root, 2) / "BraTS20_Training_002_seg.nii.gz"
    seg.rename(seg.with_name("BraTS20_Training_002_seg (1).nii.gz"))
    with pytest.raises(
        DataError,
        match=r"BraTS20_Training_002: training case without BraTS20_Training_002_seg\.nii or .*_seg\.nii\.gz \(every "
        r"BraTS20 training case has one\); found \['BraTS20_Training_002_seg \(1\)\.nii\.gz'\]: the download may be",
    ):
        brats20_datalist(copy_root, labels_dir=tmp_path / "masks")


def test_a_case_with_both_nii_and_nii_gz_is_ambiguous(tmp_path: Path) -> None:
    """Against the bug ``len(present) > 1`` -> ``> 2``: a case folder holding both ``_t1ce.nii`` and ``_t1ce.nii.gz`` (a
    half-finished re-compression) silently used one of them."""
    root = tmp_path / "brats"
    folder = synthesize_brats20(root, case_ids=[1], shape=(24, 24, 16))[0]
    t1ce = folder / "BraTS20_Training_001_t1ce.nii.gz"
    (folder / "BraTS20_Training_001_t1ce.nii").write_bytes(gzip.decompress(t1ce.read_bytes()))
    with pytest.raises(DataError, match=r"both BraTS20_Training_001_t1ce\.nii\.gz and BraTS20_Training_001_t1ce\.nii"):
        brats20_datalist(root, labels_dir=tmp_path / "et")


def test_refresh_et_masks_leaves_current_masks_alone(tmp_path: Path) -> None:
    """Against the bug (drop the ``_current_mask(...) is not None: continue``): every bundle start rewrote every mask of
    a saved datalist and warned that they "were not made from their segmentation"."""
    import warnings

    from monai_mixedfocal.data import refresh_et_masks

    root = tmp_path / "brats"
    synthesize_brats20(root, case_ids=[1, 2], shape=(24, 24, 16))
    datalist = brats20_datalist(root, labels_dir=tmp_path / "et")
    items = [
        {
            key: str(datalist.base_dir / value) if key in ("image", "label", "seg") else value
            for key, value in case.items()
        }
        for case in datalist.cases
    ]
    before = {item["label"]: Path(item["label"]).stat().st_mtime_ns for item in items}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert refresh_et_masks(items) == []
    assert {item["label"]: Path(item["label"]).stat().st_mtime_ns for item in items} == before
    stale = items[0]
    save_nifti(stale["label"], np.zeros((24, 24, 16), np.uint8), np.eye(4))  # no fingerprint: rebuilt
    with pytest.warns(UserWarning, match="1 enhancing-tumour mask"):
        assert refresh_et_masks(items) == [stale["case"]]
