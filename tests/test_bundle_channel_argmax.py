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


KINDS = ["random", "ties", "nan", "nan_first", "nan_last", "nan_twice", "infinite", "one_channel", "five_channels"]
KINDS += ["float64", "float16", "integer", "300_channels"]


def _scores(kind: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    channels = {"one_channel": 1, "five_channels": 5, "300_channels": 300}.get(kind, 3)
    scores = torch.rand(channels, 9, 8, 7, generator=generator)
    if kind == "ties":
        scores = torch.randint(0, 2, (3, 9, 8, 7), generator=generator).float()  # many voxels with equal channels
    for channel, name in ((1, "nan"), (0, "nan_first"), (2, "nan_last"), (0, "nan_twice"), (2, "nan_twice")):
        if kind == name:
            scores[channel, :2] = float("nan")  # argmax: the first NaN channel
    if kind == "infinite":
        scores[2, :3], scores[0, 1:4] = float("inf"), float("-inf")
    if kind == "integer":
        return (scores * 10).long()  # many ties too
    return scores.to({"float64": torch.float64, "float16": torch.float16}.get(kind, torch.float32))


@pytest.mark.parametrize("kind", KINDS)
def test_the_labels_of_monai_s_argmax(kind: str) -> None:
    """Also on the strided tensors that Invertd returns, through the per-channel pass (float, 1 to 256 channels, no
    NaN) and through torch.max (the rest)."""
    scores = _scores(kind)
    meta = MetaTensor(scores.permute(0, 3, 2, 1), affine=torch.diag(torch.tensor([0.8, 0.8, 3.0, 1.0])))
    meta.meta["filename_or_obj"] = "case_00001/imaging.nii.gz"
    got, expected = _both(meta)
    assert isinstance(got, MetaTensor) and got.dtype == expected.dtype == torch.float32
    assert got.shape == expected.shape == (1, 7, 8, 9) and torch.equal(got.as_tensor(), expected.as_tensor())
    assert torch.equal(got.affine, expected.affine) and got.meta["filename_or_obj"] == "case_00001/imaging.nii.gz"


@pytest.mark.parametrize("kind", KINDS)
def test_the_per_channel_pass_is_taken_for_finite_floating_point_scores(kind: str) -> None:
    """Against a per-channel pass that was never taken (the test above would then check torch.max alone)."""
    from monai_mixedfocal.bundle.channel_argmax import _first_max_channel

    scores = _scores(kind).permute(0, 3, 2, 1)
    if not scores.is_floating_point() or len(scores) > 256:
        return
    labels = _first_max_channel(scores)
    if kind.startswith("nan"):
        assert labels is None
    else:
        assert labels is not None and labels.dtype == torch.uint8
        assert torch.equal(labels.long(), scores.float().argmax(dim=0, keepdim=True))


@pytest.mark.parametrize("channels", [255, 256, 257])
def test_the_labels_at_the_uint8_bound_of_the_per_channel_pass(channels: int) -> None:
    """The pass keeps the channel index in uint8 (256 channels at most); past it torch.max (257 raised in uint8)."""
    scores = torch.rand(channels, 4, 3, 2, generator=torch.Generator().manual_seed(0))
    scores[-1, :2] += 2.0  # the last channel wins on some voxels
    got, expected = _both(scores.permute(0, 3, 2, 1))
    assert torch.equal(got, expected) and int(got.max()) == channels - 1


@pytest.mark.parametrize("channels", [1, 3, 256, 257])
def test_channel_argmaxd_takes_the_per_channel_pass_up_to_256_channels(
    channels: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through ChannelArgmaxd, not only _first_max_channel: a transform that never took the pass would give the same
    labels and lose only the time and memory it saves."""
    from monai_mixedfocal.bundle import channel_argmax

    calls = []
    original = channel_argmax._first_max_channel
    monkeypatch.setattr(
        channel_argmax, "_first_max_channel", lambda scores: calls.append(len(scores)) or original(scores)
    )
    scores = torch.rand(channels, 5, 4, 3, generator=torch.Generator().manual_seed(1)).permute(0, 3, 2, 1)
    assert torch.equal(ChannelArgmaxd("pred")({"pred": scores})["pred"], scores.argmax(dim=0, keepdim=True).float())
    assert calls == ([channels] if channels <= 256 else [])


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
