# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""MSD-style dataset.json datalists: 2-D and 3-D, multi-channel images, any class count, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monai_mixedfocal.data import DataError, msd_datalist, write_datalist
from monai_mixedfocal.data.io import save_nifti


def make_msd(
    root: Path, shapes: list[tuple[int, ...]], labels: dict, label_shape: tuple[int, ...] | None = None
) -> Path:
    """Write one image / label pair per shape and the dataset.json; labels hold values 0..len(labels)-1."""
    training = []
    for index, shape in enumerate(shapes):
        spatial = label_shape or shape[:3]  # multi-channel images keep their channels last
        rng = np.random.default_rng(index)
        save_nifti(root / "imagesTr" / f"img_{index:03d}.nii.gz", rng.normal(size=shape).astype(np.float32), np.eye(4))
        label = rng.integers(0, len(labels), size=spatial).astype(np.uint8)
        save_nifti(root / "labelsTr" / f"img_{index:03d}.nii.gz", label, np.eye(4))
        training.append({"image": f"./imagesTr/img_{index:03d}.nii.gz", "label": f"./labelsTr/img_{index:03d}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"name": "Toy", "labels": labels, "training": training}))
    return root


def test_3d_multichannel_and_folds(tmp_path: Path) -> None:
    labels = {"0": "background", "1": "edema", "2": "core", "3": "enhancing"}
    root = make_msd(tmp_path, [(8, 8, 6, 2)] * 5, labels)
    datalist = msd_datalist(root, check_labels=True)
    assert datalist.name == "Toy" and datalist.labels == labels and datalist.source == "msd"
    assert datalist.case_ids == [f"img_{i:03d}" for i in range(5)]
    assert datalist.cases[0] == {
        "case": "img_000",
        "image": "imagesTr/img_000.nii.gz",
        "label": "labelsTr/img_000.nii.gz",
    }
    content = json.loads(write_datalist(tmp_path / "datalist.json", datalist).read_text())
    assert sorted(item["fold"] for item in content["training"]) == [0, 1, 2, 3, 4]


def test_2d_and_nnunet_style_labels(tmp_path: Path) -> None:
    root = make_msd(tmp_path, [(16, 16)] * 2, {"background": 0, "vessel": 1})
    datalist = msd_datalist(root / "dataset.json", check_labels=True)
    assert datalist.labels == {"0": "background", "1": "vessel"}
    assert len(datalist.cases) == 2


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset\.json file not found"):
        msd_datalist(tmp_path)
    root = make_msd(tmp_path / "a", [(8, 8, 6)] * 2, {"0": "background", "1": "organ"})
    (root / "labelsTr" / "img_001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"labelsTr/img_001\.nii\.gz: label file of training item 1 not found"):
        msd_datalist(root)
    root = make_msd(tmp_path / "b", [(8, 8, 6)], {"0": "background", "1": "organ"}, label_shape=(8, 8, 5))
    with pytest.raises(DataError, match=r"labelsTr/img_000\.nii\.gz: label shape \(8, 8, 5\) does not match"):
        msd_datalist(root)
    root = make_msd(tmp_path / "c", [(8, 8, 6)], {"0": "background", "1": "a", "2": "b"})
    (root / "dataset.json").write_text(json.dumps({**json.loads((root / "dataset.json").read_text()), "labels": {}}))
    assert msd_datalist(root).labels == {}
    with pytest.raises(DataError, match=r"dataset\.json: checking the label values needs a 'labels' map"):
        msd_datalist(root, check_labels=True)  # asked for a check it cannot make: not a silent pass
    content = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**content, "labels": {"0": "background", "1": "a"}}))
    with pytest.raises(DataError, match=r"img_000\.nii\.gz: label value\(s\) 2 not defined for Toy"):
        msd_datalist(root, check_labels=True)
    (root / "dataset.json").write_text(json.dumps({**content, "training": []}))
    with pytest.raises(DataError, match="non-empty 'training' list"):
        msd_datalist(root)
    nnunet_v2 = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1}, "numTraining": 1}
    (root / "dataset.json").write_text(json.dumps({**nnunet_v2, "file_ending": ".nii.gz"}))
    with pytest.raises(DataError, match=r"'training' list \(this is an nnU-Net v2 dataset\.json, which lists no cases"):
        msd_datalist(root)


def test_case_id_strips_the_nifti_suffix_in_any_case() -> None:
    from monai_mixedfocal.data.msd import _case_id

    assert _case_id("./imagesTr/hippocampus_004.NII.GZ") == "hippocampus_004"
    assert _case_id(["imagesTr/BRATS_001.nii.gz", "imagesTr/BRATS_001_t2.nii.gz"]) == "BRATS_001"


def test_msd_a_case_listed_twice_is_refused(tmp_path: Path) -> None:
    """Against the bug (drop the ``case in seen`` check): two items with one case id gave a datalist whose fold
    assignment then failed with a less helpful message, or (in other folders) two cases with one id."""
    root = make_msd(tmp_path, [(8, 8, 6)] * 2, {"0": "background"})
    content = json.loads((root / "dataset.json").read_text())
    content["training"][1]["image"] = "./labelsTr/img_000.nii.gz"  # the same file name in another folder
    (root / "dataset.json").write_text(json.dumps(content))
    with pytest.raises(DataError, match=r"case id 'img_000' \(from training item 1\) appears twice"):
        msd_datalist(root)


def test_msd_a_label_given_as_a_list_is_refused(tmp_path: Path) -> None:
    """Against the bug (drop the ``isinstance(item['label'], str)`` check): a list of label files silently kept only its
    first file."""
    root = make_msd(tmp_path, [(8, 8, 6)] * 2, {"0": "background"})
    labels = ["./labelsTr/img_000.nii.gz", "./labelsTr/img_001.nii.gz"]
    training = [{"image": "./imagesTr/img_000.nii.gz", "label": labels}]
    (root / "dataset.json").write_text(json.dumps({"name": "Toy", "labels": {"0": "background"}, "training": training}))
    with pytest.raises(DataError, match="training item 0 needs 'label' as one path"):
        msd_datalist(root)
