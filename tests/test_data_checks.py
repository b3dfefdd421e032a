# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Voxel checks after loading: undefined label values and NaN / infinite image voxels fail with the file's name."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_utils import BUNDLES, make_data
from error_chain import error_chain
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, LoadImaged

from monai_mixedfocal.data import (
    CheckedNibabelReader,
    CheckFinited,
    CheckLabelValuesd,
    DataError,
    brats20_deterministic_transforms,
    kits19_deterministic_transforms,
)

AFFINE = np.diag([-0.8, -0.8, 2.5, 1.0])


def _meta(array: np.ndarray | torch.Tensor, name: str = "/data/case_00007/segmentation.nii.gz") -> MetaTensor:
    return MetaTensor(torch.as_tensor(array), meta={"filename_or_obj": name})


def _write(path: Path, array: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(array, AFFINE), path)
    return str(path)


@pytest.fixture
def kits_pair(tmp_path: Path) -> dict[str, str]:
    """A tiny KiTS19-like case: an int16 HU image and a uint8 0/1/2 segmentation."""
    rng = np.random.default_rng(0)
    image = rng.integers(-200, 300, size=(12, 10, 8)).astype(np.int16)
    label = np.zeros((12, 10, 8), np.uint8)
    label[3:8, 3:7, 2:6] = 1
    label[4:6, 4:6, 3:5] = 2
    return {
        "image": _write(tmp_path / "imaging.nii.gz", image),
        "label": _write(tmp_path / "segmentation.nii.gz", label),
    }


def test_label_check_passes_valid_data_unchanged() -> None:
    label = _meta(torch.tensor([[[0.0, 1.0], [2.0, 2.0]]]))
    data = {"label": label, "other": "kept"}
    out = CheckLabelValuesd("label", values=(0, 1, 2), dataset="KiTS19")(data)
    assert out["label"] is label and out["other"] == "kept"
    assert torch.equal(label, torch.tensor([[[0.0, 1.0], [2.0, 2.0]]]))
    for dtype in (torch.uint8, torch.int64, torch.bool):  # integer labels skip the whole-number check
        CheckLabelValuesd("label", values=[0, 1, 2], dataset="KiTS19")({"label": _meta(label.as_tensor().to(dtype))})
    CheckLabelValuesd("label", values=[0, 1], dataset="x")({"label": np.array([0, 1, 1], np.uint8)})  # NumPy input
    CheckLabelValuesd("label", values=[0, 1], dataset="x")({"label": _meta(torch.zeros(0))})  # empty


@pytest.mark.parametrize(
    ("voxels", "shown"),
    [([0.0, 3.0], "3"), ([-1.0, 1.0], "-1"), ([0.0, 1.5], "1.5"), ([0.0, float("nan")], "nan")],
    ids=["above-range", "below-range", "not-whole", "nan"],
)
def test_label_check_names_the_file_and_the_value(voxels: list[float], shown: str) -> None:
    check = CheckLabelValuesd("label", values=(0, 1, 2), dataset="KiTS19")
    with pytest.raises(DataError) as info:
        check({"label": _meta(torch.tensor(voxels).reshape(1, 2, 1, 1))})
    message = str(info.value)
    assert message.startswith("/data/case_00007/segmentation.nii.gz: ")
    assert f"label value(s) {shown} not defined for KiTS19 (defined: 0, 1, 2)" in message


def test_label_check_reads_every_chunk_of_a_large_label() -> None:
    """The whole-number check runs in chunks of 2**20 voxels; a fraction in the last one is still found."""
    label = torch.zeros((1 << 20) + 8)
    label[-1] = 0.5
    with pytest.raises(DataError, match=r"label value\(s\) 0.5 not defined"):
        CheckLabelValuesd("label", values=(0, 1), dataset="x")({"label": _meta(label)})


def test_label_check_accepts_a_channel_last_image_on_the_label_grid() -> None:
    """Right after LoadImaged a multi-modal image (MSD BraTS) is [H, W, D, C]: the label is its leading shape."""
    check = CheckLabelValuesd("label", values=(0, 1), dataset="x", image_key="image")
    image, label = MetaTensor(torch.zeros(4, 5, 6, 2)), MetaTensor(torch.zeros(4, 5, 6))
    assert check({"image": image, "label": label})["label"] is label
    with pytest.raises(DataError, match=r"label shape \(4, 5, 7\) does not match image shape \(4, 5, 6, 2\)"):
        check({"image": image, "label": MetaTensor(torch.zeros(4, 5, 7))})


def test_label_check_without_a_file_name_names_the_key() -> None:
    with pytest.raises(DataError, match=r"'seg'.*label value\(s\) 7"):
        CheckLabelValuesd("seg", values=(0, 1), dataset="x")({"seg": torch.tensor([0, 7])})


def test_label_check_non_contiguous_values() -> None:
    check = CheckLabelValuesd("label", values=[4, 0, 2, 1], dataset="BraTS20")
    assert check.values == (0, 1, 2, 4)
    label = _meta(torch.tensor([0.0, 1.0, 2.0, 4.0]))
    assert check({"label": label})["label"] is label
    with pytest.raises(DataError, match=r"segmentation\.nii\.gz: label value\(s\) 3 not defined for BraTS20"):
        check({"label": _meta(torch.tensor([0.0, 3.0, 4.0]))})


def test_label_check_missing_keys() -> None:
    check = CheckLabelValuesd("label", values=(0, 1), dataset="x", allow_missing_keys=True)
    assert check({"image": 1}) == {"image": 1}
    with pytest.raises(KeyError):
        CheckLabelValuesd("label", values=(0, 1), dataset="x")({"image": 1})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"values": []}, "non-empty sequence"),
        ({"values": "012"}, "non-empty sequence"),
        ({"values": 2}, "non-empty sequence"),
        ({"values": [0, 1.5]}, "integers, got 1.5"),
        ({"values": [0, True]}, "integers, got True"),
        ({"dataset": ""}, "dataset must be"),
        ({"keys": []}, "keys"),
    ],
)
def test_label_check_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"keys": "label", "values": (0, 1, 2), "dataset": "KiTS19", **kwargs}
    with pytest.raises(ValueError, match=match):
        CheckLabelValuesd(**args)


def test_finite_check() -> None:
    image = _meta(torch.linspace(-1000, 1000, 24).reshape(1, 2, 3, 4), "/data/case_00007/imaging.nii.gz")
    out = CheckFinited("image")({"image": image})
    assert out["image"] is image
    CheckFinited("image")({"image": _meta(torch.tensor([0, 1], dtype=torch.int16))})  # integers are always finite
    for bad in (float("nan"), float("inf"), -float("inf")):
        broken = image.clone()
        broken[0, 1, 2, 3] = bad
        with pytest.raises(DataError) as info:
            CheckFinited("image")({"image": broken})
        assert str(info.value) == "/data/case_00007/imaging.nii.gz: NaN or infinite voxel values (1 of 24 voxels)"
    with pytest.raises(DataError, match=r"data\['img'\]: NaN"):
        CheckFinited("img")({"img": np.array([np.nan], np.float32)})
    with pytest.raises(ValueError, match="keys"):
        CheckFinited([])


def test_kits19_pipeline_names_the_bad_label_file(kits_pair: dict[str, str], tmp_path: Path) -> None:
    out = Compose(kits19_deterministic_transforms())(dict(kits_pair))
    assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0, 2.0}
    label = np.asarray(nib.load(kits_pair["label"]).dataobj).copy()
    label[label == 2] = 3
    bad = _write(tmp_path / "bad_segmentation.nii.gz", label)
    with pytest.raises(Exception) as info:  # MONAI wraps the DataError in a RuntimeError
        Compose(kits19_deterministic_transforms())({"image": kits_pair["image"], "label": bad})
    assert isinstance(info.value.__cause__, DataError)
    assert f"{bad}: label value(s) 3 not defined for KiTS19 (defined: 0, 1, 2)" in error_chain(info.value)


def test_kits19_pipeline_names_the_nan_image(kits_pair: dict[str, str], tmp_path: Path) -> None:
    image = np.asarray(nib.load(kits_pair["image"]).dataobj).astype(np.float32)
    image[5, 5, 5] = np.nan
    bad = _write(tmp_path / "nan_imaging.nii.gz", image)
    for transforms in (
        kits19_deterministic_transforms(label_key=None),
        brats20_deterministic_transforms(label_key=None),
    ):
        with pytest.raises(Exception) as info:
            Compose(transforms)({"image": bad})
        assert f"{bad}: NaN or infinite voxel values" in error_chain(info.value)


def test_brats20_pipeline_checks_the_binary_mask(kits_pair: dict[str, str]) -> None:
    """The kits pair's label has a 2, which the binary enhancing-tumour mask does not define."""
    with pytest.raises(Exception) as info:
        Compose(brats20_deterministic_transforms())(dict(kits_pair))
    assert "label value(s) 2 not defined for BraTS20 enhancing-tumour mask (defined: 0, 1)" in error_chain(info.value)


def test_checks_sit_after_loading_and_invertd_skips_them(kits_pair: dict[str, str]) -> None:
    transforms = kits19_deterministic_transforms()
    assert [type(t) for t in transforms[:3]] == [LoadImaged, CheckFinited, CheckLabelValuesd]
    assert transforms[2].values == (0, 1, 2)
    assert brats20_deterministic_transforms()[2].values == (0, 1)

    def restore(preprocess: Compose) -> torch.Tensor:
        data = preprocess(dict(kits_pair))
        data["pred"] = data["label"].clone()
        return Invertd("pred", transform=preprocess, orig_keys="label", nearest_interp=True)(data)["pred"]

    restored = restore(Compose(transforms))
    original = nib.load(kits_pair["label"])
    assert tuple(restored.shape[1:]) == original.shape
    np.testing.assert_allclose(restored.affine.numpy(), original.affine, atol=1e-4)
    unchecked = restore(Compose([t for t in transforms if not isinstance(t, (CheckFinited, CheckLabelValuesd))]))
    assert torch.equal(restored.as_tensor(), unchecked.as_tensor())  # the checks change nothing, inverted or not


@pytest.mark.parametrize(("name", "values"), [("kits19", (0, 1, 2)), ("brats20", (0, 1))])
def test_evaluate_config_checks_the_original_label(name: str, values: tuple[int, ...], tmp_path: Path) -> None:
    configs = BUNDLES[name] / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "evaluate.json")])
    parser.read_meta(str(configs / "metadata.json"))
    parser["bundle_root"] = str(tmp_path)
    parser["dataset_dir"] = str(make_data(name, tmp_path / "data", cases=3))  # SaveImaged mirrors the split's folders
    parser["num_folds"] = 3
    post = parser.get_parsed_content("validate#postprocessing")
    names = [type(t).__name__ for t in post.transforms]
    position = names.index("CheckLabelValuesd")
    assert names[position - 1] == "LoadImaged" and position == len(names) - 1  # checked right before the metric
    check = post.transforms[position]
    assert check.keys == ("original_label",) and check.values == values
    raw = json.loads((configs / "evaluate.json").read_text())
    targets = [t["_target_"] for t in raw["validate#postprocessing"]["transforms"]]
    assert "monai_mixedfocal.data.CheckLabelValuesd" in targets
    load = post.transforms[position - 1]
    assert isinstance(load._loader.readers[-1], CheckedNibabelReader)  # the user reader is tried first
    label = tmp_path / "damaged_label.nii.gz"
    voxels = np.random.default_rng(0).integers(0, 2, (64, 64, 64), dtype=np.uint8)  # compressed beyond one read buffer
    nib.save(nib.Nifti1Image(voxels, AFFINE), label)
    data = bytearray(label.read_bytes())
    data[-8] ^= 0xFF  # the gzip trailer's CRC-32: nibabel alone reads the voxels and never sees it
    label.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{label}: corrupt gzip stream"):
        load({"original_label": str(label)})
