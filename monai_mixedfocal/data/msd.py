# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Datalist from a Medical Segmentation Decathlon style ``dataset.json``, for any other data set (2-D or 3-D).

The file holds a ``training`` list of ``{"image": ..., "label": ...}`` items with paths relative to the JSON's folder
(``./imagesTr/x.nii.gz``) and a ``labels`` map (``{"0": "background", "1": "liver"}``; the nnU-Net v2 form
``{"background": 0, ...}`` is accepted too). Multi-channel images may keep their channels in a last axis or be given
as a list of files. NIfTI files are checked from their headers; other formats (PNG, ...) only for existence.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from monai_mixedfocal.data.datalist import Datalist
from monai_mixedfocal.data.errors import DataError
from monai_mixedfocal.data.io import check_label_values, check_pair, is_nifti, load_array, read_training_json

__all__ = ["msd_datalist"]

_SUFFIX_RE = re.compile(r"(\.nii\.gz|\.nii|\.[A-Za-z0-9]+)$", re.IGNORECASE)


def _read_json(path: Path) -> dict[str, Any]:
    content = read_training_json(path, "dataset.json")
    if not content["training"]:
        raise DataError(f"{path}: expected a JSON object with a non-empty 'training' list")
    return content


def _labels(content: dict[str, Any], path: Path) -> dict[str, str]:
    labels = content.get("labels", {})
    if not isinstance(labels, dict):
        raise DataError(f"{path}: 'labels' must be a map of label value to name, got {type(labels).__name__}")
    if labels and all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
        labels = {str(v): str(k) for k, v in labels.items()}  # nnU-Net v2: {"background": 0}
    if not all(str(k).isdigit() for k in labels):
        raise DataError(f"{path}: 'labels' keys must be integer label values, got {sorted(labels)[:5]}")
    return {str(int(k)): str(v) for k, v in sorted(labels.items(), key=lambda kv: int(kv[0]))}


def _case_id(image: str | list[str]) -> str:
    first = image[0] if isinstance(image, list) else image
    name = Path(first).name
    return _SUFFIX_RE.sub("", name)


def _existing(base: Path, value: Any, key: str, path: Path, index: int) -> list[Path]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v for v in values):
        raise DataError(f"{path}: training item {index} needs '{key}' as a path or a list of paths, got {value!r}")
    files = [base / v for v in values]
    for file in files:
        if not file.is_file():
            raise DataError(f"{file}: {key} file of training item {index} not found (listed in {path})")
    return files


def msd_datalist(
    dataset_json_or_root: str | os.PathLike, validate: bool = True, check_labels: bool = False
) -> Datalist:
    """List the training cases of an MSD-style data set.

    Args:
        dataset_json_or_root: the ``dataset.json`` file or the folder holding it; paths are relative to that folder.
        validate: check that NIfTI image and label headers are readable, complete and of matching shape (the label's
            shape equals the image's leading 2 or 3 dimensions).
        check_labels: also read each NIfTI label and check its values against the ``labels`` map (reads all voxels).

    Returns:
        The :class:`~monai_mixedfocal.data.datalist.Datalist` (source ``"msd"``); case ids are the image file names
        without suffix.

    Raises:
        DataError: a missing or malformed ``dataset.json``, a missing file, duplicate case ids, an unreadable,
            truncated or mismatched NIfTI, or an undefined label value.
    """
    path = Path(dataset_json_or_root)
    if path.is_dir():
        path = path / "dataset.json"
    content = _read_json(path)
    labels = _labels(content, path)
    if check_labels and not labels:
        raise DataError(f"{path}: checking the label values needs a 'labels' map (value -> name) in the file")
    datalist = Datalist(base_dir=path.parent, source="msd", labels=labels, name=str(content.get("name", "MSD")))
    seen: set[str] = set()
    for index, item in enumerate(content["training"]):
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise DataError(f"{path}: training item {index} is not an object with 'image' and 'label'")
        images = _existing(path.parent, item["image"], "image", path, index)
        if not isinstance(item["label"], str):
            raise DataError(f"{path}: training item {index} needs 'label' as one path, got {item['label']!r}")
        label = _existing(path.parent, item["label"], "label", path, index)[0]
        case = _case_id(item["image"])
        if case in seen:
            raise DataError(f"{path}: case id {case!r} (from training item {index}) appears twice")
        seen.add(case)
        if (validate or check_labels) and is_nifti(label):
            label_image = None
            for image in images:
                if is_nifti(image):
                    _, label_image = check_pair(image, label, ndim=None)
            if check_labels:
                check_label_values(label, load_array(label, label_image), [int(k) for k in labels], datalist.name)
        image_value: str | list[str] = (
            [datalist.relative(i) for i in images] if isinstance(item["image"], list) else datalist.relative(images[0])
        )
        datalist.cases.append({"case": case, "image": image_value, "label": datalist.relative(label)})
    return datalist
