# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""BraTS20 datalist: T1-CE images and binary enhancing-tumour (ET) masks.

Layout: ``MICCAI_BraTS2020_TrainingData/BraTS20_Training_XXX/BraTS20_Training_XXX_{t1,t1ce,t2,flair,seg}.nii[.gz]``,
where the root given may be that folder or any folder above it with at most three folder levels between it and the
case folders (e.g. ``BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData/...`` as in common mirrors).
Case 355's mask is named ``W39_1998.09.19_Segm.nii`` in the official release. Labels: 0 background, 1 necrotic /
non-enhancing core, 2 oedema, 4 enhancing tumour. Only T1-CE is used and the target is ET (label 4) as a binary mask;
cases without an ET voxel are excluded by default (342 of the 369 remain).

MONAI Label and the bundles train from binary label files, so the 4 -> 1 remap is done here, once: the masks are
written as uint8 0/1 NIfTI files with the segmentation's affine into ``labels_dir`` and the datalist's ``"label"``
points at them (the original segmentation stays available as ``"seg"``). Each mask records a SHA-256 of its
segmentation file in its header's ``descrip`` and is reused only while that fingerprint matches.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_mixedfocal.data.datalist import Datalist
from monai_mixedfocal.data.errors import DataError
from monai_mixedfocal.data.io import (
    NIFTI_SUFFIXES,
    case_folders,
    check_label_values,
    check_pair,
    is_macos_metadata,
    load_array,
    read_nifti_header,
    save_nifti,
    warn_of_case_like_entries,
)

__all__ = [
    "BRATS20_ET_LABEL",
    "BRATS20_LABELS",
    "BRATS20_LABEL_VALUES",
    "BRATS20_NOT_IMAGES",
    "BRATS20_SEG_ALIASES",
    "brats20_datalist",
    "find_brats20_cases",
    "refresh_et_masks",
]

BRATS20_LABEL_VALUES: tuple[int, ...] = (0, 1, 2, 4)
"""Label values of a BraTS20 segmentation: background, necrotic core, oedema, enhancing tumour."""
BRATS20_ET_LABEL = 4
BRATS20_LABELS: dict[str, str] = {"0": "background", "1": "enhancing tumor"}
"""Labels of the binary masks the datalist points at."""
BRATS20_SEG_ALIASES: dict[str, str] = {"BraTS20_Training_355": "W39_1998.09.19_Segm.nii"}
"""Segmentations that do not follow the ``<case>_seg.nii`` naming in the official release."""
BRATS20_NOT_IMAGES: tuple[str, ...] = (
    "*_seg.nii*",
    "*_Segm.nii*",
    "*_et.nii*",
    "*_t1.nii*",
    "*_t2.nii*",
    "*_flair.nii*",
)
"""Names (shell patterns) of the files of the layout that are not T1-CE images: the segmentations (and the one named
otherwise, :data:`BRATS20_SEG_ALIASES`), the enhancing-tumour masks this project derives, the other modalities."""

_CASE_RE = re.compile(r"^BraTS20_Training_(\d{3})$")
_MAX_DEPTH = 3
_HASH_CHUNK = 1 << 20


def find_brats20_cases(root: str | os.PathLike) -> list[Path]:
    """The ``BraTS20_Training_XXX`` folders under ``root``, sorted by name.

    The case folders are looked for directly in ``root``, then one, two and at most three folder levels below it
    (``<root>/a/b/c/BraTS20_Training_XXX``); they must all lie at one level. A ``__MACOSX`` copy (a zip made on a
    Mac) is not looked into.

    Raises:
        DataError: the root is missing, holds no case folder, holds the same case twice, holds case folders at more
            than one level (e.g. a stray copy beside the data set), or a ``BraTS20_Training_XXX`` entry that is not a
            folder (a broken link or a file).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: BraTS20 root does not exist or is not a folder")
    levels = [_cases_at_depth(root, depth) for depth in range(_MAX_DEPTH + 1)]
    for depth, found in enumerate(levels):
        if found:
            names = [p.name for p in found]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise DataError(f"{root}: case folder(s) {duplicates[:3]} found more than once; point at one copy")
            deeper = [p for level in levels[depth + 1 :] for p in level]
            if deeper:
                raise DataError(
                    f"{root}: BraTS20 case folders at more than one folder level: {len(found)} like "
                    f"{found[0].relative_to(root)}, and {len(deeper)} deeper like {deeper[0].relative_to(root)}; "
                    "point at the folder holding the copy to use"
                )
            beside = [entry for folder in {p.parent for p in found} for entry in folder.iterdir()]
            warn_of_case_like_entries(beside, _CASE_RE, prefix="BraTS20_Training_")
            return found
    raise DataError(
        f"{root}: no BraTS20_Training_XXX folders up to {_MAX_DEPTH} folder levels below it (expected "
        "MICCAI_BraTS2020_TrainingData or a folder above it; the validation data, without segmentations, cannot be "
        "trained on)"
    )


def _cases_at_depth(root: Path, depth: int) -> list[Path]:
    """The ``BraTS20_Training_XXX`` entries ``depth`` folder levels below ``root`` (each checked to be a folder)."""
    pattern = "/".join(["*"] * depth + ["BraTS20_Training_*"])
    return case_folders((p for p in root.glob(pattern) if not is_macos_metadata(p.relative_to(root))), _CASE_RE)


def _find_file(case_dir: Path, stem: str) -> Path | None:
    """``<stem>.nii.gz`` or ``<stem>.nii`` in ``case_dir``; both present is ambiguous."""
    present = [case_dir / f"{stem}{suffix}" for suffix in NIFTI_SUFFIXES if (case_dir / f"{stem}{suffix}").is_file()]
    if len(present) > 1:
        raise DataError(f"{case_dir}: both {present[0].name} and {present[1].name}; keep one")
    return present[0] if present else None


def _find_seg(case_dir: Path) -> Path | None:
    seg = _find_file(case_dir, f"{case_dir.name}_seg")
    if seg is None and case_dir.name in BRATS20_SEG_ALIASES:
        alias = case_dir / BRATS20_SEG_ALIASES[case_dir.name]
        seg = _find_file(case_dir, alias.name.split(".nii")[0])
    return seg


def _et_mask_path(labels_dir: Path, case: str) -> Path:
    return labels_dir / f"{case}_et.nii.gz"


def _seg_fingerprint(seg_path: Path) -> str:
    """The ``descrip`` of an ET mask made from ``seg_path``: a SHA-256 of the file's bytes (32 hex digits)."""
    digest = hashlib.sha256()
    try:
        with seg_path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as err:
        raise DataError(f"{seg_path}: cannot read the segmentation ({err})") from err
    return f"ET mask of sha256:{digest.hexdigest()[:32]}"


def _current_mask(mask_path: Path, fingerprint: str) -> nib.Nifti1Image | None:
    """The mask's image (header only) when it was made from the segmentation with ``fingerprint``, else ``None``."""
    if not mask_path.is_file():
        return None
    try:
        mask_image = read_nifti_header(mask_path)
    except DataError:
        return None  # a damaged mask is simply rebuilt from the segmentation
    return mask_image if mask_image.header["descrip"].item() == fingerprint.encode() else None


#: what to do when a mask cannot be written where the data set is listed
_LISTING_HINT = "pass a writable folder for the masks (the bundles' --labels_dir, the datalist command's --labels-dir)"


def _write_et_mask(seg_path: Path, mask_path: Path, fingerprint: str, validate: bool, hint: str = _LISTING_HINT) -> int:
    """Write the binary ET mask of ``seg_path`` (recording ``fingerprint``); returns its number of ET voxels.

    Raises:
        DataError: the segmentation cannot be read or has a value outside {0, 1, 2, 4}; the mask cannot be written
            (the message ends with ``hint``).
    """
    seg_image = read_nifti_header(seg_path, check_complete=validate)
    seg = load_array(seg_path, seg_image)
    check_label_values(seg_path, seg, BRATS20_LABEL_VALUES, "BraTS20")
    mask = (seg == BRATS20_ET_LABEL).astype(np.uint8)
    header = seg_image.header.copy()
    header["descrip"] = fingerprint
    try:
        save_nifti(mask_path, mask, seg_image.affine, header=header)
    except OSError as err:
        raise DataError(
            f"{mask_path}: cannot write the enhancing-tumour mask made from {seg_path.name} "
            f"({type(err).__name__}: {err.strerror or err}); {hint}"
        ) from err
    return int(mask.sum())


def _et_voxels(seg_path: Path, mask_path: Path, validate: bool) -> int:
    """Number of ET voxels; reuses the mask made from this very segmentation's bytes, else (re)writes it."""
    fingerprint = _seg_fingerprint(seg_path)
    mask_image = _current_mask(mask_path, fingerprint)
    if mask_image is not None:
        try:
            return int(np.count_nonzero(load_array(mask_path, mask_image)))
        except DataError:
            pass  # a damaged mask is simply rebuilt from the segmentation below
    return _write_et_mask(seg_path, mask_path, fingerprint, validate)


def refresh_et_masks(items: Iterable[Mapping[str, object]]) -> list[str]:
    """Rebuild every ET mask of resolved datalist items that was not made from the item's own segmentation.

    A saved datalist names both the binary mask (``"label"``) and the segmentation it was made from (``"seg"``). When
    the data set under the datalist's root has changed since (another copy with the same case names, a corrected
    segmentation), the mask's SHA-256 fingerprint no longer matches and the mask is written again from ``"seg"``, so
    training and evaluation never use another segmentation's masks. Items without ``"seg"`` are left alone. Only
    headers are read and segmentations hashed unless a mask is rebuilt.

    Args:
        items: datalist items with absolute (or working-directory relative) ``"label"`` and ``"seg"`` paths, e.g. the
            output of :func:`~monai_mixedfocal.data.split_datalist`.

    Returns:
        The case ids (``"case"``, else the label path) whose masks were rebuilt; a warning names them and any that
        now have no enhancing-tumour voxel.

    Raises:
        DataError: an unreadable segmentation, a label value outside {0, 1, 2, 4}, or a mask that cannot be written.
    """
    rebuilt, empty = [], []
    for item in items:
        seg, label = item.get("seg"), item.get("label")
        if not isinstance(seg, str) or not isinstance(label, str):
            continue
        fingerprint = _seg_fingerprint(Path(seg))
        if _current_mask(Path(label), fingerprint) is not None:
            continue
        case = str(item.get("case", label))
        rebuilt.append(case)
        hint = "the datalist names this mask: make its folder writable, or write the datalist again with --labels-dir"
        if _write_et_mask(Path(seg), Path(label), fingerprint, validate=True, hint=hint) == 0:
            empty.append(case)
    if rebuilt:
        warnings.warn(
            f"{len(rebuilt)} enhancing-tumour mask(s) were not made from their segmentation and were rebuilt: "
            f"{', '.join(rebuilt)}" + (f"; now without an enhancing-tumour voxel: {', '.join(empty)}" if empty else ""),
            stacklevel=2,
        )
    return rebuilt


def brats20_datalist(
    root: str | os.PathLike,
    exclude_empty: bool = True,
    validate: bool = True,
    labels_dir: str | os.PathLike | None = None,
) -> Datalist:
    """List the BraTS20 training cases (T1-CE + binary ET mask), writing the masks, and report every exclusion.

    Every segmentation is read (to find ET and to check that its values are in {0, 1, 2, 4}); the binary masks are
    written atomically as ``<labels_dir>/<case>_et.nii.gz``, each with a SHA-256 of its segmentation file in the NIfTI
    ``descrip`` field, and a mask is reused only while that fingerprint matches the segmentation's bytes (a mask from
    another segmentation, an older version or a damaged one is rebuilt).

    Args:
        root: ``MICCAI_BraTS2020_TrainingData``, or a folder above it with at most three folder levels between it and
            the case folders (see :func:`find_brats20_cases`); paths in the result are relative to ``root``.
        exclude_empty: leave out cases without an enhancing-tumour voxel (as in the paper).
        validate: also check the T1-CE header (readable, complete, same 3-D shape as the segmentation).
        labels_dir: where to write the binary masks; default ``<root>/labels_et`` (the command line puts them beside
            the datalist JSON instead).

    Returns:
        The :class:`~monai_mixedfocal.data.datalist.Datalist` (source ``"brats20"``); each case has ``"image"``
        (T1-CE), ``"label"`` (binary ET mask) and ``"seg"`` (original segmentation).

    Raises:
        DataError: a missing root, no case folders, a case folder without T1-CE or without segmentation (an incomplete
            download: a silently smaller data set would move most cases to other folds), an unreadable, truncated or
            mismatched file, a label value outside {0, 1, 2, 4}, or a mask that cannot be written in ``labels_dir``.
    """
    root = Path(root)
    case_dirs = find_brats20_cases(root)
    labels_dir = root / "labels_et" if labels_dir is None else Path(labels_dir)
    datalist = Datalist(base_dir=root, source="brats20", labels=dict(BRATS20_LABELS))
    for case_dir in case_dirs:
        case = case_dir.name
        image = _find_file(case_dir, f"{case}_t1ce")
        if image is None:
            raise DataError(f"{case_dir}: case folder without {case}_t1ce.nii or {case}_t1ce.nii.gz")
        seg = _find_seg(case_dir)
        if seg is None:
            others = sorted(p.name for p in case_dir.iterdir() if "seg" in p.name.lower())
            raise DataError(
                f"{case_dir}: training case without {case}_seg.nii or {case}_seg.nii.gz (every BraTS20 training case "
                "has one)" + (f"; found {others}" if others else "") + ": the download may be incomplete"
            )
        if validate:
            check_pair(image, seg, ndim=3)
        mask = _et_mask_path(labels_dir, case)
        if _et_voxels(seg, mask, validate) == 0 and exclude_empty:
            datalist.exclude(case, f"no enhancing-tumour voxel (label {BRATS20_ET_LABEL}) in {seg.name}")
            continue
        datalist.cases.append(
            {
                "case": case,
                "image": datalist.relative(image),
                "label": datalist.relative(mask),
                "seg": datalist.relative(seg),
            }
        )
    return datalist
