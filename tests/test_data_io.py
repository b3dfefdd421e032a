# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""``monai_mixedfocal.data.io``: the voxel values ``load_array`` returns for NIfTI headers with and without scaling;
read errors naming the file; the voxel-grid check of an image / label pair."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage

from monai_mixedfocal.data import DataError
from monai_mixedfocal.data.checks import CheckedNibabelReader
from monai_mixedfocal.data.io import (
    check_grids,
    check_image_ndim,
    check_pair,
    grid_offset,
    is_macos_metadata,
    is_nifti,
    load_array,
    read_nifti_header,
    save_nifti,
    warn_of_case_like_entries,
)
from monai_mixedfocal.data.kits19 import _CASE_RE as KITS19_CASE_NAME

STORED = np.arange(4, dtype=np.int16).reshape(2, 2, 1)


def _save(path: Path, slope: float, intercept: float) -> Path:
    """``STORED`` as int16 with the raw header fields ``scl_slope`` / ``scl_inter`` (0 and NaN mean unset)."""
    image = nib.Nifti1Image(STORED, np.eye(4))
    image.header.set_data_dtype(np.int16)
    image.header["scl_slope"], image.header["scl_inter"] = slope, intercept
    nib.save(image, path)
    return path


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_scaling_is_applied_as_monai_reads_it(tmp_path: Path, suffix: str) -> None:
    """A header that scales gives ``slope * stored + intercept`` in float64, the values MONAI's loader trains on."""
    path = _save(tmp_path / f"label{suffix}", 2.0, 10.0)
    array = load_array(path)
    assert array.dtype == np.float64
    np.testing.assert_array_equal(array, 2.0 * STORED + 10.0)
    np.testing.assert_array_equal(np.asarray(LoadImage(image_only=True, reader="NibabelReader")(str(path))), array)


@pytest.mark.parametrize(("slope", "intercept"), [(1.0, 0.0), (0.0, 0.0), (np.nan, np.nan)])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_without_scaling_the_on_disk_dtype(tmp_path: Path, suffix: str, slope: float, intercept: float) -> None:
    """No scaling (identity or unset): the stored values in their on-disk dtype; an uncompressed file as a
    copy-on-write memory map."""
    array = load_array(_save(tmp_path / f"label{suffix}", slope, intercept))
    assert array.dtype == np.int16
    np.testing.assert_array_equal(array, STORED)
    if suffix == ".nii":
        assert isinstance(array, np.memmap) and array.mode == "c"


def _pair(folder: Path, label_affine: np.ndarray | None = None, label_shape: tuple[int, ...] = (6, 8, 5)) -> tuple:
    """An int16 image (6 x 8 x 5, 0.8 x 0.8 x 3 mm) and a uint8 label; the label's affine and shape can differ."""
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    affine[:3, 3] = (-100.0, 20.0, 300.0)
    image = save_nifti(folder / "imaging.nii.gz", np.zeros((6, 8, 5), np.int16), affine)
    label_affine = affine if label_affine is None else label_affine
    label = save_nifti(folder / "segmentation.nii.gz", np.zeros(label_shape, np.uint8), label_affine)
    return image, label, affine


def test_an_undefined_datatype_code_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    """nibabel's HeaderDataError (datatype code 999) is a read error like the others: a DataError with the path."""
    image, label, _ = _pair(tmp_path)
    raw = bytearray(gzip.decompress(image.read_bytes()))
    raw[70:72] = np.array([999], "<i2").tobytes()  # the datatype field
    image.write_bytes(gzip.compress(bytes(raw)))
    for check in (lambda: read_nifti_header(image), lambda: check_pair(image, label), lambda: load_array(image)):
        with pytest.raises(DataError, match=rf"{image}: cannot read the NIfTI header \(data code 999"):
            check()


def test_check_pair_rejects_a_label_on_another_voxel_grid(tmp_path: Path) -> None:
    """A label shifted by 30 mm, flipped, or on another spacing is misregistered; float32 rounding of the header and
    a spacing rounded to 4 decimals are not."""
    _, _, affine = _pair(tmp_path)
    shifted = affine.copy()
    shifted[:3, 3] += 30.0
    flipped = affine @ np.diag([-1.0, 1.0, 1.0, 1.0])
    flipped[0, 3] += 0.8 * 5  # the same first voxel centre, the axis running the other way
    spacing = affine.copy()
    spacing[2, 2] = 3.3
    half_voxel = affine.copy()
    half_voxel[0, 3] += 0.4
    for bad in (shifted, flipped, spacing, half_voxel):
        image, label, _ = _pair(tmp_path, label_affine=bad)
        with pytest.raises(DataError, match=rf"{label}: label voxel grid does not match the image's \({image}\)"):
            check_pair(image, label)
    rounded = affine.copy()
    rounded[:3, 3] += 1e-4
    rounded[0, 0] = 0.80003  # a spacing rounded to 4 decimals over 6 voxels
    image, label, _ = _pair(tmp_path, label_affine=rounded.astype(np.float32).astype(np.float64))
    check_pair(image, label)


def test_grid_offset_measures_the_corners(tmp_path: Path) -> None:
    affine = np.diag([2.0, 1.0, 1.0, 1.0])
    shifted = affine.copy()
    shifted[:3, 3] = (3.0, 4.0, 0.0)
    assert grid_offset(affine, shifted, (10, 10, 10)) == pytest.approx((5.0, 1.0))
    stretched = np.diag([2.5, 1.0, 1.0, 1.0])
    assert grid_offset(affine, stretched, (11, 1, 1))[0] == pytest.approx(5.0)  # 0.5 mm x 10 voxels at the far end
    assert grid_offset(affine, affine, (4, 4))[0] == 0.0  # a 2-D grid


def _stale_pixdim(path: Path, affine: np.ndarray, zooms: tuple[float, ...], shape: tuple[int, ...] = (6, 8, 5)) -> Path:
    """A file whose sform (code 2) is ``affine`` but whose pixdim, and so its qform's voxel size, is ``zooms``."""
    image = nib.Nifti1Image(np.zeros(shape, np.int16), affine)
    image.header.set_zooms(zooms)
    image.set_sform(affine, code=2)
    nib.save(image, path)
    return path


def test_a_header_that_monai_reads_on_another_grid_is_refused(tmp_path: Path) -> None:
    """pixdim disagreeing with the sform: nibabel reads the sform, MONAI's NibabelReader swaps in the qform. The
    datalist checks, the pair check and the training reader all refuse the file instead of training on a 1 mm grid."""
    affine = np.array([[0, 0, -0.919, 0], [0, -0.919, 0, 0], [-5.0, 0, 0, 0], [0, 0, 0, 1]])  # KiTS19-like
    path = _stale_pixdim(tmp_path / "imaging.nii.gz", affine, (1.0, 1.0, 1.0))
    monai_affine = np.asarray(LoadImage(image_only=True)(path).affine)  # the premise: MONAI loads another grid
    assert grid_offset(nib.load(path).affine, monai_affine, (6, 8, 5))[0] > 10.0
    message = rf"{path}: inconsistent NIfTI header: pixdim \[1.0, 1.0, 1.0\] disagrees with the sform \(voxel size "
    with pytest.raises(DataError, match=message + r"\[5.0, 0.919, 0.919\]\), so MONAI's NibabelReader .* qform"):
        read_nifti_header(path)
    label = save_nifti(tmp_path / "segmentation.nii.gz", np.zeros((6, 8, 5), np.uint8), affine)
    with pytest.raises(DataError, match=message):
        check_pair(path, label)
    load = LoadImage(image_only=True)
    load.register(CheckedNibabelReader())
    with pytest.raises(DataError, match=message):
        load(path)
    with pytest.raises(DataError, match=rf"{path}: inconsistent NIfTI header"):
        check_pair(label, path)  # a label with the stale header (the image is fine) is refused by name as well


def test_headers_that_monai_loads_unchanged_pass(tmp_path: Path) -> None:
    """Headers MONAI does not move: a consistent one, float32 rounding, and a 4-D multi-channel image (whose pixdim
    MONAI compares with the affine's translation column too, and then rewrites pixdim only)."""
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    affine[:3, 3] = (-100.0, 20.0, 300.0)
    read_nifti_header(save_nifti(tmp_path / "a.nii.gz", np.zeros((6, 8, 5), np.int16), affine))
    rounded = (affine @ np.diag([1.00001, 1.0, 1.0, 1.0])).astype(np.float32)
    read_nifti_header(save_nifti(tmp_path / "c.nii.gz", np.zeros((6, 8, 5), np.int16), rounded))
    read_nifti_header(save_nifti(tmp_path / "d.nii.gz", np.zeros((6, 8, 5, 4), np.int16), affine))


def test_check_grids_refuses_a_nan_affine() -> None:
    """Against the bug ``if not distance <= tol`` -> ``if distance > tol``: a NaN affine passed silently (the docstring
    promises "a NaN in either affine also fails")."""
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    for bad_entry in ((0, 3), (1, 1)):
        bad = affine.copy()
        bad[bad_entry] = np.nan
        with pytest.raises(DataError, match="label voxel grid does not match"):
            check_grids(affine, bad, (6, 8, 5), "imaging.nii.gz", "segmentation.nii.gz")
        with pytest.raises(DataError, match="label voxel grid does not match"):
            check_grids(bad, affine, (6, 8, 5), "imaging.nii.gz", "segmentation.nii.gz")


def test_is_nifti_ignores_the_case_of_the_suffix() -> None:
    """Against the bug drops ``.lower()``: an MSD data set with ``.NII.GZ`` files skips every NIfTI header check."""
    assert is_nifti("imagesTr/a.NII.GZ") and is_nifti("a.Nii") and is_nifti("a.nii.gz")
    assert not is_nifti("a.png") and not is_nifti("a.nii.gz.bak")


def test_save_nifti_writes_a_zero_gzip_time_stamp(tmp_path: Path) -> None:
    """Against the bug ``mtime=0`` -> default (the current time): the byte-identical tests only catch it when two writes
    fall into different seconds; the gzip header's MTIME field (bytes 4-8) says it directly."""
    path = save_nifti(tmp_path / "a.nii.gz", np.zeros((2, 2, 2), np.uint8), np.eye(4))
    data = path.read_bytes()
    assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\x00\x00\x00\x00"


def test_the_warning_of_case_like_entries_counts_them_all_and_names_the_first_three(tmp_path: Path) -> None:
    entries = [tmp_path / name for name in ("case_4", "case_3", "case_00002", "case_2", "case_1", "old_case_5")]
    with pytest.warns(UserWarning) as record:
        warn_of_case_like_entries(entries, KITS19_CASE_NAME, prefix="case_")
    (message,) = [str(w.message) for w in record]
    assert message.startswith("4 entries named like a case") and message.endswith("'] and more")
    assert all(f"case_{n}'" in message for n in (1, 2, 3)) and "case_4'" not in message and "case_5" not in message


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((64, 64, 20, 1, 1), r"got shape \(64, 64, 20, 1, 1\) \(its extra dimensions have size 1: save it without"),
        ((64, 64, 20, 1, 2), r"got shape \(64, 64, 20, 1, 2\)$"),  # not a squeezable 3-D image: no hint
        ((64, 64), r"expected a 3-D image, got shape \(64, 64\)$"),
    ],
)
def test_an_image_of_another_dimensionality_is_named_with_a_hint_only_when_it_helps(shape, message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_image_ndim("scan.nii.gz", np.zeros(shape))
    check_image_ndim("scan.nii.gz", np.zeros((64, 64, 20)))


def test_macos_metadata_is_appledouble_files_and_macosx_folders_only() -> None:
    assert is_macos_metadata("imagesTs/._spleen_1.nii.gz") and is_macos_metadata("__MACOSX/imagesTs/spleen_1.nii.gz")
    assert not is_macos_metadata("imagesTs/.spleen_1.nii.gz") and not is_macos_metadata("imagesTs/spleen_1.nii.gz")
