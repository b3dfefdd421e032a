# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The label voxel counts of a datalist's training cases, counted once with nibabel and cached beside the datalist.

The counts feed :class:`~monai_mixedfocal.losses.class_weights.EffectiveNumberWeights`. The cache is a JSON file
(``<datalist>.label_counts.json``) whose entries are keyed by the class count and every label file's path, size and
modification time, so that changed labels are counted again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CACHE_SUFFIX", "cached_label_counts", "count_label_voxels", "datalist_label_files"]

CACHE_SUFFIX = ".label_counts.json"
"""Suffix of the label-count cache written beside a datalist JSON (``datalist.json.label_counts.json``)."""


def count_label_voxels(label_files: Sequence[str | os.PathLike], num_classes: int) -> np.ndarray:
    """Count the voxels of every class over a list of NIfTI label maps (read with nibabel, one at a time).

    Args:
        label_files: label map files holding integer class indices.
        num_classes: the number of classes ``C``; every value must lie in ``[0, C)``.

    Returns:
        the counts, int64, shape ``[C]``.

    Raises:
        monai_mixedfocal.data.errors.DataError: a file is missing or corrupt, holds fractional values or values outside
            ``[0, C)`` (the message names the file and the values).
    """
    from monai_mixedfocal.data.errors import DataError
    from monai_mixedfocal.data.io import load_array

    counts = np.zeros(num_classes, dtype=np.int64)
    for path in label_files:
        array = np.asarray(load_array(path))
        if not np.issubdtype(array.dtype, np.integer):
            if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
                raise DataError(f"{path}: a label map must hold integer class indices; found fractional values")
            array = array.astype(np.int64)
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= num_classes:
            raise DataError(
                f"{path}: label values must lie in [0, {num_classes - 1}] for num_classes={num_classes}; "
                f"found values in [{low}, {high}]"
            )
        counts += np.bincount(array.ravel().astype(np.int64), minlength=num_classes)
    return counts


def cached_label_counts(files: Sequence[str], num_classes: int, cache_path: Path | None) -> np.ndarray:
    """The voxel counts of every class over ``files``, read from the cache file when it holds them.

    Args:
        files: the label files.
        num_classes: the number of classes ``C``.
        cache_path: the cache file (``None``: no cache). An unreadable cache or a malformed entry is counted again and
            rewritten (atomically).

    Returns:
        the counts, float64, shape ``[C]``.

    Raises:
        monai_mixedfocal.data.errors.DataError: see :func:`count_label_voxels`.
    """
    from monai_mixedfocal.data.io import atomic_write_json

    key = _cache_key(files, num_classes)
    entries: dict[str, Any] = {}
    if cache_path is not None and cache_path.is_file():
        try:
            entries = json.loads(cache_path.read_text(encoding="utf-8")).get("entries", {})
        except (OSError, ValueError, AttributeError):
            entries = {}  # an unreadable cache is recomputed and rewritten
        if not isinstance(entries, dict):
            entries = {}
    counts = _cached_counts(entries.get(key), num_classes)
    if counts is None:  # not cached, or a malformed entry: counted again, and the entry rewritten
        counts = count_label_voxels(files, num_classes).astype(np.float64)
        if cache_path is not None:
            entries[key] = {"num_classes": num_classes, "num_files": len(files), "counts": counts.tolist()}
            atomic_write_json(cache_path, {"entries": entries})
    return counts


def _cached_counts(entry: Any, num_classes: int) -> np.ndarray | None:
    """The voxel counts of a label-count cache entry, or ``None`` for a missing or malformed entry.

    Args:
        entry: the entry of the cache file (``{"counts": [...], ...}``), or ``None``.
        num_classes: the number of classes the counts must have.

    Returns:
        The ``num_classes`` counts, or ``None`` when the entry is missing, is not a mapping, has no ``"counts"``, or
        its counts are not ``num_classes`` finite, non-negative numbers (the caller counts the voxels again, as for an
        unreadable cache file).
    """
    if not isinstance(entry, Mapping):
        return None
    try:
        counts = np.asarray(entry["counts"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return None
    if counts.shape != (num_classes,) or not np.isfinite(counts).all() or (counts < 0).any():
        return None
    return counts


def datalist_label_files(
    datalist: str | os.PathLike | Sequence[Mapping[str, Any] | str | os.PathLike],
    fold: int | None,
    base_dir: str | os.PathLike | None,
    label_key: str,
) -> list[str]:
    """The label files of the training cases of a datalist (see :meth:`EffectiveNumberWeights.from_datalist`)."""
    from monai_mixedfocal.data.datalist import split_datalist
    from monai_mixedfocal.data.errors import DataError

    if isinstance(datalist, (str, os.PathLike)):
        train, val = split_datalist(datalist, 0 if fold is None else fold, base_dir)
        cases: list[Any] = train + val if fold is None else train
    else:
        cases = list(datalist)
    files = []
    for index, case in enumerate(cases):
        if isinstance(case, Mapping):
            if label_key not in case:
                raise DataError(f"{datalist}: case {index} ({case.get('case', '?')}) has no {label_key!r} entry")
            case = case[label_key]
        path = Path(case)
        if base_dir is not None and not path.is_absolute() and not isinstance(datalist, (str, os.PathLike)):
            path = Path(base_dir) / path
        files.append(str(path))
    return files


def _cache_key(files: Sequence[str], num_classes: int) -> str:
    """A digest of the class count and of every label file's path, size and modification time."""
    digest = hashlib.sha256(str(num_classes).encode())
    for name in files:
        try:
            stat = os.stat(name)
            digest.update(f"{os.path.abspath(name)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{name}|missing\n".encode())  # counting will raise a clear error
    return digest.hexdigest()
