# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""``ChannelArgmaxd`` gives what MONAI's ``AsDiscreted(argmax=True)`` gives: values, ties, NaN, type, dtype, meta."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted

from monai_mixedfocal.bundle import ChannelArgmaxd


def _both(scores: object) -> tuple[object, object]:
    expected = AsDiscreted("pred", argmax=True)({"pred": scores})["pred"]
    return ChannelArgmaxd("pred")({"pred": scores, "other": 1})["pred"], expected


@pytest.mark.parametrize("kind", ["random", "ties", "nan"])
def test_the_labels_of_monai_s_argmax(kind: str) -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(3, 9, 8, 7, generator=generator)
    if kind == "ties":
        scores = torch.randint(0, 2, (3, 9, 8, 7), generator=generator).float()  # many voxels with equal channels
    if kind == "nan":
        scores[1, :2] = float("nan")
    meta = MetaTensor(scores.permute(0, 3, 2, 1), affine=torch.diag(torch.tensor([0.8, 0.8, 3.0, 1.0])))
    meta.meta["filename_or_obj"] = "case_00001/imaging.nii.gz"
    got, expected = _both(meta)
    assert isinstance(got, MetaTensor) and got.dtype == expected.dtype == torch.float32
    assert got.shape == expected.shape == (1, 7, 8, 9) and torch.equal(got.as_tensor(), expected.as_tensor())
    assert torch.equal(got.affine, expected.affine) and got.meta["filename_or_obj"] == "case_00001/imaging.nii.gz"


def test_a_numpy_array_and_a_plain_tensor_stay_what_they_are() -> None:
    scores = np.random.default_rng(0).random((2, 5, 4)).astype(np.float32)
    got, expected = _both(scores)
    assert isinstance(got, np.ndarray) and np.array_equal(got, expected) and got.dtype == np.float32
    got, expected = _both(torch.from_numpy(scores))
    assert type(got) is torch.Tensor and torch.equal(got, torch.as_tensor(expected))


def test_a_missing_key_is_an_error_unless_allowed() -> None:
    with pytest.raises(KeyError):
        ChannelArgmaxd("pred")({"image": torch.zeros(2, 3)})
    assert ChannelArgmaxd("pred", allow_missing_keys=True)({"image": 1}) == {"image": 1}
