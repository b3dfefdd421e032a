# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""KiTS19 datalist from the layout of the ``neheller/kits19`` repository.

Layout: ``data/case_XXXXX/imaging.nii.gz`` and ``segmentation.nii.gz``. Cases without a segmentation (the 90 test
cases, 210-299) are excluded, as are cases 15, 23, 37, 68, 125 and 133 by default (as in Yeung et al.), which leaves
204 cases of the 210 labelled ones. Labels: 0 background, 1 kidney, 2 tumour.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from monai_mixedfocal.data.datalist import Datalist
from monai_mixedfocal.data.errors import DataError
from monai_mixedfocal.data.io import (
    case_folders,
    check_label_values,
    check_pair,
    load_array,
    warn_of_case_like_entries,
)

__all__ = [
    "KITS19_EXCLUDED_CASES",
    "KITS19_LABELLED_CASES",
    "KITS19_LABELS",
    "KITS19_NOT_IMAGES",
    "data_set_folder",
    "kits19_case_id",
    "kits19_datalist",
    "kits19_repository",
]

KITS19_EXCLUDED_CASES: tuple[int, ...] = (15, 23, 37, 68, 125, 133)
"""Labelled cases left out by default, as in the paper (204 of 210 remain)."""

KITS19_LABELS: dict[str, str] = {"0": "background", "1": "kidney", "2": "tumor"}

KITS19_LABELLED_CASES = 210
"""Cases 0-209 come with a segmentation; 210-299 are the challenge's test cases, without one."""

IMAGE_NAME = "imaging.nii.gz"
LABEL_NAME = "segmentation.nii.gz"

KITS19_NOT_IMAGES: tuple[str, ...] = (LABEL_NAME, "*_seg.nii*")
"""Names (shell patterns) of the files of the layout that are not CT images: the segmentations, and KiTS21's
``aggregated_*_seg.nii.gz`` beside them."""
_CASE_RE = re.compile(r"^case_(\d{5})$")


def kits19_case_id(case: int | str) -> str:
    """The folder name of a case: ``15``, ``"15"`` and ``"case_00015"`` all give ``"case_00015"``.

    Raises:
        ValueError: ``case`` is neither a non-negative number nor a ``case_XXXXX`` name.
    """
    text = str(case)
    if _CASE_RE.match(text):
        return text
    if text.isdigit() and not isinstance(case, bool):
        return f"case_{int(text):05d}"
    raise ValueError(f"expected a KiTS19 case number or 'case_XXXXX' name, got {case!r}")


def _exclusion_reason(case: str) -> str:
    if case in {kits19_case_id(c) for c in KITS19_EXCLUDED_CASES}:
        return "in the exclusion list (KITS19_EXCLUDED_CASES, left out in the paper)"
    return "in the exclusion list"


def _data_dir(root: Path) -> Path:
    if not root.exists():
        raise DataError(f"{root}: KiTS19 root does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: KiTS19 root is not a folder")
    return root / "data" if (root / "data").is_dir() else root


def kits19_repository(root: str | os.PathLike) -> Path:
    """The KiTS19 repository folder of ``root``, given as the repository or as its ``data/`` folder (the two name one
    data set; a datalist written from the repository lists ``data/case_XXXXX/...`` paths)."""
    root = Path(root)
    return root.parent if root.name == "data" and not (root / "data").is_dir() else root


def data_set_folder(source: str, root: str | os.PathLike) -> Path:
    """The folder that identifies a data set of ``source`` given at ``root``, as a datalist records it: resolved, and
    for KiTS19 the repository (its ``data/`` folder names the same data set, see :func:`kits19_repository`)."""
    root = Path(root).resolve()
    return kits19_repository(root) if source == "kits19" else root


def kits19_datalist(
    root: str | os.PathLike,
    exclude: Iterable[int | str] = KITS19_EXCLUDED_CASES,
    validate: bool = True,
    check_labels: bool = False,
) -> Datalist:
    """List the labelled KiTS19 cases under ``root``, reporting every case left out and why.

    Args:
        root: the kits19 repository folder or its ``data/`` folder; paths in the result are relative to ``root``.
        exclude: case numbers (or ``case_XXXXX`` names) to leave out; ``()`` keeps every labelled case.
        validate: open both NIfTI headers of each kept case and check that they are readable, complete (not truncated)
            and of equal 3-D shape. Reads headers only, so listing all 210 cases stays fast.
        check_labels: also read every segmentation and check that its values are in {0, 1, 2} (reads all voxels).

    Returns:
        The :class:`~monai_mixedfocal.data.datalist.Datalist` (source ``"kits19"``).

    Raises:
        DataError: a missing root, no case folders, a ``case_XXXXX`` entry that is not a folder (a broken link), a
            case folder without ``imaging.nii.gz``, a labelled case (0-209) without ``segmentation.nii.gz`` (an
            incomplete download: it is not silently taken for a test case), or (with ``validate`` / ``check_labels``)
            an unreadable, truncated or mismatched file or an undefined label value.

    Example:
        >>> datalist = kits19_datalist("kits19")  # doctest: +SKIP
        >>> len(datalist.cases), datalist.excluded[0]  # doctest: +SKIP
        (204, {'case': 'case_00015', 'reason': 'in the exclusion list (KITS19_EXCLUDED_CASES, left out in the paper)'})
    """
    root = Path(root)
    data_dir = _data_dir(root)
    try:
        excluded_ids = {kits19_case_id(case) for case in exclude}
    except ValueError as err:
        raise DataError(f"{root}: bad exclusion list: {err}") from err
    entries = list(data_dir.iterdir())
    case_dirs = case_folders(entries, _CASE_RE)
    warn_of_case_like_entries(entries, _CASE_RE, prefix="case_")
    if not case_dirs:
        raise DataError(f"{data_dir}: no case_XXXXX folders (expected the kits19 repository or its data/ folder)")
    datalist = Datalist(base_dir=root, source="kits19", labels=dict(KITS19_LABELS))
    for case_dir in case_dirs:
        image, label = case_dir / IMAGE_NAME, case_dir / LABEL_NAME
        for path in (image, label):
            if path.is_symlink() and not path.exists():
                raise DataError(f"{path}: a broken link (to {os.readlink(path)}); restore its target or remove it")
        if not image.is_file():
            others = _named_like(case_dir, "imaging")
            raise DataError(
                f"{case_dir}: case folder without {IMAGE_NAME}" + (f" (found {others})" if others else "") + " (for "
                "the kits19 repository, download the images with its get_imaging script first)"
            )
        if case_dir.name in excluded_ids:
            datalist.exclude(case_dir.name, _exclusion_reason(case_dir.name))
            continue
        if not label.is_file():
            if int(case_dir.name[len("case_") :]) < KITS19_LABELLED_CASES:
                kits21 = sorted(p.name for p in case_dir.glob("aggregated_*_seg.nii*"))
                if kits21:
                    raise DataError(
                        f"{case_dir}: a KiTS21 case ({kits21[0]}; labels 1 kidney, 2 tumour, 3 cyst), not the KiTS19 "
                        "layout this loader reads; list KiTS21 with `datalist msd` and a dataset.json naming its labels"
                    )
                others = _named_like(case_dir, "segmentation")
                raise DataError(
                    f"{case_dir}: labelled case (KiTS19 cases 0-{KITS19_LABELLED_CASES - 1} have one) without "
                    f"{LABEL_NAME}" + (f"; found {others}" if others else "") + ": the download may be incomplete"
                )
            datalist.exclude(case_dir.name, f"no {LABEL_NAME} (unlabelled test case)")
            continue
        if validate or check_labels:
            _, label_image = check_pair(image, label, ndim=3)
            if check_labels:
                check_label_values(label, load_array(label, label_image), [int(k) for k in KITS19_LABELS], "KiTS19")
        datalist.cases.append(
            {"case": case_dir.name, "image": datalist.relative(image), "label": datalist.relative(label)}
        )
    return datalist


def _named_like(case_dir: Path, stem: str) -> list[str]:
    """The names in ``case_dir`` that start like ``stem`` in any capitals (``Imaging.nii.gz``, ``imaging.nii``)."""
    return sorted(p.name for p in case_dir.iterdir() if p.name.lower().startswith(stem))
