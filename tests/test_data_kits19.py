# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""KiTS19 datalist on generated cases in the real layout: exclusions, root forms and every bad-input error."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_mixedfocal.data import KITS19_EXCLUDED_CASES, DataError, kits19_datalist, synthesize_kits19
from monai_mixedfocal.data.io import save_nifti
from monai_mixedfocal.data.kits19 import kits19_case_id, kits19_repository

SHAPE = (16, 32, 32)


@pytest.fixture(scope="module")
def kits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cases 0, 1, 2, 15, 23 and an unlabelled test case 210."""
    root = tmp_path_factory.mktemp("kits19")
    synthesize_kits19(root, case_ids=[0, 1, 2, 15, 23, 210], shape=SHAPE)
    # as in the real data set, the generator writes no segmentation for the test cases 210-299
    assert not (root / "data" / "case_00210" / "segmentation.nii.gz").exists()
    assert (root / "data" / "case_00210" / "imaging.nii.gz").is_file()
    (root / "data" / "kits.json").write_text("[]")  # the real data/ folder holds other files too
    return root


@pytest.fixture
def copy_root(kits_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "kits19"
    shutil.copytree(kits_root, root)
    return root


def test_exclusions_are_reported_with_reasons(kits_root: Path) -> None:
    datalist = kits19_datalist(kits_root)
    assert datalist.case_ids == ["case_00000", "case_00001", "case_00002"]
    reasons = {item["case"]: item["reason"] for item in datalist.excluded}
    assert set(reasons) == {"case_00015", "case_00023", "case_00210"}
    assert "KITS19_EXCLUDED_CASES" in reasons["case_00015"]
    assert "segmentation" in reasons["case_00210"]
    assert datalist.labels == {"0": "background", "1": "kidney", "2": "tumor"}
    assert datalist.source == "kits19"
    assert 15 in KITS19_EXCLUDED_CASES and len(KITS19_EXCLUDED_CASES) == 6


def test_paths_relative_to_given_root_repo_or_data_folder(kits_root: Path) -> None:
    repo = kits19_datalist(kits_root)
    data = kits19_datalist(kits_root / "data")
    assert repo.cases[0]["image"] == "data/case_00000/imaging.nii.gz"
    assert data.cases[0]["label"] == "case_00000/segmentation.nii.gz"
    for datalist in (repo, data):
        assert all((datalist.base_dir / case["image"]).is_file() for case in datalist.cases)


def test_custom_exclusion_list(kits_root: Path) -> None:
    datalist = kits19_datalist(kits_root, exclude=("case_00001", 2), validate=False)
    assert datalist.case_ids == ["case_00000", "case_00015", "case_00023"]
    assert {"case_00001", "case_00002", "case_00210"} == {item["case"] for item in datalist.excluded}
    with pytest.raises(DataError, match="exclusion list"):
        kits19_datalist(kits_root, exclude=["kidney"])


def test_missing_root_and_empty_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere.*does not exist"):
        kits19_datalist(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no case_XXXXX folders"):
        kits19_datalist(tmp_path)


def test_a_labelled_case_without_segmentation_is_an_error_not_a_test_case(copy_root: Path) -> None:
    """Cases 0-209 have a segmentation: a missing one is an incomplete download, never an "unlabelled test case"."""
    label = copy_root / "data" / "case_00001" / "segmentation.nii.gz"
    label.rename(label.with_name("segmentation.nii"))
    with pytest.raises(DataError, match=r"case_00001: labelled case .* without segmentation.nii.gz; found \['segm"):
        kits19_datalist(copy_root)
    (copy_root / "data" / "case_00015" / "segmentation.nii.gz").unlink()  # excluded anyway: no error for it
    kits19_datalist(copy_root, exclude=(1, 15))


@pytest.mark.parametrize("kind", ["broken_link", "file"])
def test_a_case_entry_that_is_not_a_folder_is_an_error(copy_root: Path, kind: str) -> None:
    for name in ("case_00013", "case_00011", "case_00012"):  # the error names the first
        entry = copy_root / "data" / name
        entry.symlink_to(copy_root / "nowhere") if kind == "broken_link" else entry.write_text("")
    with pytest.raises(DataError, match="case_00011: a case entry that is not a folder"):
        kits19_datalist(copy_root)


def test_case_folder_without_image(copy_root: Path) -> None:
    (copy_root / "data" / "case_00001" / "imaging.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case_00001.*without imaging\.nii\.gz \(for the kits19 repository"):
        kits19_datalist(copy_root)
    (copy_root / "data" / "case_00001" / "Imaging.nii").write_bytes(b"")
    with pytest.raises(DataError, match=r"without imaging\.nii\.gz \(found \['Imaging\.nii'\]\)"):
        kits19_datalist(copy_root)  # the names found, as for a missing segmentation


def test_case_files_that_are_valid_links_are_listed(copy_root: Path, tmp_path: Path) -> None:
    case = copy_root / "data" / "case_00001"
    (tmp_path / "store").mkdir()
    for name in ("imaging.nii.gz", "segmentation.nii.gz"):
        (case / name).rename(tmp_path / "store" / name)
        (case / name).symlink_to(tmp_path / "store" / name)
    assert "case_00001" in kits19_datalist(copy_root).case_ids


@pytest.mark.parametrize("name", ["imaging.nii.gz", "segmentation.nii.gz"])
def test_a_broken_link_to_a_case_file_is_named_as_one(copy_root: Path, name: str) -> None:
    """A broken segmentation link said 'without segmentation.nii.gz; found ['segmentation.nii.gz']'."""
    file = copy_root / "data" / "case_00001" / name
    file.unlink()
    file.symlink_to(copy_root / "moved" / name)
    with pytest.raises(DataError, match=rf"case_00001/{name}: a broken link \(to .*moved/{name}\); restore its"):
        kits19_datalist(copy_root)


def test_truncated_image_is_detected_from_headers(copy_root: Path) -> None:
    image = copy_root / "data" / "case_00002" / "imaging.nii.gz"
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    with pytest.raises(DataError, match=r"case_00002/imaging\.nii\.gz: truncated"):
        kits19_datalist(copy_root)
    assert len(kits19_datalist(copy_root, validate=False).cases) == 3  # headers not checked


def test_label_damaged_in_place_is_detected_by_its_checksum(copy_root: Path) -> None:
    label = copy_root / "data" / "case_00002" / "segmentation.nii.gz"
    data = bytearray(label.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # same size: the gzip trailer's length still matches the header
    label.write_bytes(bytes(data))
    assert len(kits19_datalist(copy_root).cases) == 3  # the header checks cannot see it
    with pytest.raises(DataError, match=r"case_00002/segmentation\.nii\.gz: cannot read the voxel data"):
        kits19_datalist(copy_root, check_labels=True)


def test_garbage_file_is_reported(copy_root: Path) -> None:
    label = copy_root / "data" / "case_00000" / "segmentation.nii.gz"
    label.write_bytes(b"not a nifti file at all")
    with pytest.raises(DataError, match=r"case_00000/segmentation\.nii\.gz: cannot read the NIfTI header"):
        kits19_datalist(copy_root)


def test_shape_mismatch(copy_root: Path) -> None:
    label = copy_root / "data" / "case_00001" / "segmentation.nii.gz"
    image = nib.load(label)
    save_nifti(label, np.zeros((16, 32, 30), np.uint8), image.affine)
    with pytest.raises(DataError, match=r"case_00001/segmentation\.nii\.gz: label shape \(16, 32, 30\) does not match"):
        kits19_datalist(copy_root)


def test_undefined_label_value_with_check_labels(copy_root: Path) -> None:
    label = copy_root / "data" / "case_00000" / "segmentation.nii.gz"
    image = nib.load(label)
    data = np.asarray(image.dataobj).copy()
    data[0, 0, 0] = 3
    save_nifti(label, data, image.affine)
    assert len(kits19_datalist(copy_root).cases) == 3  # headers only by default
    with pytest.raises(DataError, match=r"case_00000/segmentation\.nii\.gz: label value\(s\) 3 not defined for KiTS19"):
        kits19_datalist(copy_root, check_labels=True)
    save_nifti(label, np.where(data == 3, np.float32(0.9999999), data).astype(np.float32), image.affine)
    with pytest.raises(DataError, match=r"label value\(s\) 0\.99999988\d* not defined"):  # not "1 not defined"
        kits19_datalist(copy_root, check_labels=True)


def test_the_kits21_layout_is_refused_by_name(copy_root: Path) -> None:
    """KiTS21 names its label aggregated_MAJ_seg.nii.gz and adds a cyst label 3; it is not an incomplete KiTS19."""
    label = copy_root / "data" / "case_00001" / "segmentation.nii.gz"
    label.rename(label.with_name("aggregated_MAJ_seg.nii.gz"))
    (label.parent / "segmentations").mkdir()
    with pytest.raises(DataError, match=r"case_00001: a KiTS21 case \(aggregated_MAJ_seg\.nii\.gz; labels 1 kidney, "):
        kits19_datalist(copy_root)


def test_kits19_repository_of_the_repository_or_its_data_folder(tmp_path: Path) -> None:
    (tmp_path / "kits19" / "data" / "case_00000").mkdir(parents=True)
    assert kits19_repository(tmp_path / "kits19") == tmp_path / "kits19"
    assert kits19_repository(tmp_path / "kits19" / "data") == tmp_path / "kits19"
    (tmp_path / "data" / "data").mkdir(parents=True)  # a repository that happens to be called data
    assert kits19_repository(tmp_path / "data") == tmp_path / "data"


def test_a_kits19_image_with_an_extra_dimension_is_refused(kits_root: Path, tmp_path: Path) -> None:
    """Against the bugs (drop ``len(image_shape) != ndim``) and (``check_pair(..., ndim=None)``): a 4-D imaging.nii.gz
    beside a 3-D segmentation was listed as a valid KiTS19 case."""
    root = tmp_path / "kits19"
    shutil.copytree(kits_root, root)
    image = root / "data" / "case_00001" / "imaging.nii.gz"
    source = nib.load(image)
    volume = np.asarray(source.dataobj)
    save_nifti(image, np.stack([volume, volume], axis=-1), source.affine)
    with pytest.raises(
        DataError, match=r"case_00001/imaging\.nii\.gz: expected a 3-D image, got shape \(16, 32, 32, 2\)$"
    ):
        kits19_datalist(root)
    save_nifti(image, volume[..., None, None], source.affine)  # the label's shape, saved with two extra dimensions
    with pytest.raises(DataError, match=r"got shape \(16, 32, 32, 1, 1\) \(its extra dimensions have size 1: save"):
        kits19_datalist(root)  # it said 'label shape (16, 32, 32) does not match image shape (16, 32, 32, 1, 1)'


@pytest.mark.parametrize("name", ["case_1", "case_0001", "Case_00001", "CASE_00001"])
def test_only_five_digit_case_folders_are_kits19_cases(kits_root: Path, tmp_path: Path, name: str) -> None:
    """Against the bug ``case_(\\d{5})`` -> ``case_(\\d+)``: ``case_1`` (a stray copy, a typo) became a case whose id
    the exclusion list (``case_00001``) never matches."""
    with pytest.raises(ValueError, match="case number or 'case_XXXXX' name"):
        kits19_case_id(name)
    root = tmp_path / "kits19"
    shutil.copytree(kits_root, root)
    shutil.copytree(root / "data" / "case_00001", root / "data" / name)
    with pytest.warns(UserWarning, match=rf"1 entry named like a case but not a case name .*{name}'\]"):
        assert kits19_datalist(root).case_ids == kits19_datalist(kits_root).case_ids  # case_1 is not a case


def test_a_stray_copy_of_a_case_folder_is_left_out_with_a_warning(kits_root: Path, tmp_path: Path) -> None:
    """A file manager's copy (``case_00001 (copy)``) was left out without a word: a user who renamed cases by hand
    could not see why one was missing. The real cases are found without a warning."""
    root = tmp_path / "kits19"
    shutil.copytree(kits_root, root)
    for other in ("cases.csv", "old_case_00001", "notes_case_00001.txt"):  # not named like a case: no warning
        (root / "data" / other).write_text("")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = kits19_datalist(root).case_ids
    shutil.copytree(root / "data" / "case_00001", root / "data" / "case_00001 (copy)")
    with pytest.warns(UserWarning, match=r"left out: \['.*data/case_00001 \(copy\)'\]"):
        assert kits19_datalist(root).case_ids == expected
