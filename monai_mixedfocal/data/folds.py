# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""One seeded, balanced k-fold assignment of cases, identical for every loss in the study."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from monai_mixedfocal.utils import is_integer

__all__ = ["assign_folds"]


def assign_folds(case_ids: Iterable[str], num_folds: int = 5, seed: int = 0) -> dict[str, int]:
    """Assign each case to one of ``num_folds`` folds, deterministically and with balanced fold sizes.

    The ids are sorted first, so the result depends only on the set of ids and the seed, not on the order they were
    listed in (directory listings differ between file systems). The sorted ids are shuffled with
    ``numpy.random.default_rng(seed)`` and dealt round-robin, so fold sizes differ by at most one.

    Args:
        case_ids: unique case identifiers.
        num_folds: number of folds, at least 2 and at most the number of cases.
        seed: shuffling seed.

    Returns:
        ``{case_id: fold}`` in sorted id order, folds numbered ``0 .. num_folds - 1``.

    Raises:
        ValueError: duplicate ids, fewer cases than folds, or a bad ``num_folds`` / ``seed``.

    Example:
        >>> assign_folds([f"case_{i:05d}" for i in range(10)], num_folds=5, seed=0)["case_00000"] in range(5)
        True
    """
    ids = [str(case) for case in case_ids]
    if not is_integer(num_folds) or num_folds < 2:
        raise ValueError(f"num_folds must be an integer >= 2, got {num_folds!r}")
    if not is_integer(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    duplicates = sorted({case for case in ids if ids.count(case) > 1}) if len(set(ids)) != len(ids) else []
    if duplicates:
        raise ValueError(f"case ids must be unique, got duplicates {duplicates[:5]}")
    if len(ids) < num_folds:
        raise ValueError(f"need at least num_folds={num_folds} cases to make {num_folds} folds, got {len(ids)}")
    ordered = sorted(ids)
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    folds = {ordered[index]: rank % num_folds for rank, index in enumerate(permutation)}
    return {case: folds[case] for case in ordered}
