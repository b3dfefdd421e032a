# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""``monai_mixedfocal.data.io.load_array``: the voxel values it returns for NIfTI headers with and without scaling."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage

from monai_mixedfocal.data.io import load_array

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
