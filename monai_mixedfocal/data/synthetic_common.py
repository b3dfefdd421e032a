# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Building blocks of the generated (synthetic) data sets: seeded generators, shapes on a mm grid, argument checks.

Everything is numpy / scipy and deterministic: a case's random generator depends only on the seed and the case id, so a
case is identical whichever other cases are generated with it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = [
    "MmGrid",
    "case_rng",
    "check_cases",
    "check_fraction_range",
    "check_shape",
    "finish_intensities",
    "largest_component",
    "shrink_to_budget",
]


def case_rng(seed: int, case: int) -> np.random.Generator:
    """The random generator of one case, from ``(seed, case)`` only."""
    return np.random.default_rng([int(seed), int(case)])


class MmGrid:
    """Voxel-centre coordinates in mm, centred on the volume, one broadcastable array per axis.

    Args:
        shape: array shape.
        spacing: voxel size in mm per array axis.
    """

    def __init__(self, shape: Sequence[int], spacing: Sequence[float]) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.extent = tuple(n * s for n, s in zip(self.shape, self.spacing))
        self.axes = tuple(
            ((np.arange(n) - (n - 1) / 2.0) * s).reshape([-1 if a == i else 1 for a in range(len(self.shape))])
            for i, (n, s) in enumerate(zip(self.shape, self.spacing))
        )

    @property
    def voxel_volume(self) -> float:
        """One voxel's volume in mm^3."""
        return float(np.prod(self.spacing))

    def ellipsoid(self, center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
        """Boolean mask of an axis-aligned ellipsoid (centre, semi-axes in mm per axis); empty if a semi-axis <= 0."""
        if min(radii) <= 0:
            return np.zeros(self.shape, dtype=bool)
        total = sum(((axis - c) / r) ** 2 for axis, c, r in zip(self.axes, center, radii))
        return np.broadcast_to(total <= 1.0, self.shape)

    def cylinder(self, center: Sequence[float], radii: Sequence[float], axis: int = 0) -> np.ndarray:
        """Boolean mask of an elliptic cylinder along ``axis`` (``center`` / ``radii`` per axis, ``axis``'s ignored)."""
        total = sum(((a - c) / r) ** 2 for i, (a, c, r) in enumerate(zip(self.axes, center, radii)) if i != axis)
        return np.broadcast_to(total <= 1.0, self.shape)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of ``mask`` (drops the single voxels an ellipsoid's tips can leave)."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return np.array(mask, dtype=bool)
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def shrink_to_budget(make_mask, radius: float, max_voxels: int, min_voxels: int = 1) -> tuple[np.ndarray, float]:
    """Shrink ``radius`` by 10 % steps until ``make_mask(radius)`` holds at most ``max_voxels`` voxels.

    Args:
        make_mask: ``radius -> bool array``.
        radius: starting radius (mm).
        max_voxels: the voxel budget.
        min_voxels: stop shrinking (and return) once the mask would fall below this.

    Returns:
        ``(mask, radius)``.
    """
    mask = make_mask(radius)
    while int(mask.sum()) > max_voxels:
        smaller = make_mask(radius * 0.9)
        if int(smaller.sum()) < min_voxels:
            break
        mask, radius = smaller, radius * 0.9
    return mask, radius


def finish_intensities(
    values: np.ndarray, rng: np.random.Generator, noise_sigma: float, blur_sigma: Sequence[float], clip: tuple[int, int]
) -> np.ndarray:
    """Partial-volume blur, additive Gaussian noise, clipping and rounding to int16."""
    blurred = ndimage.gaussian_filter(values.astype(np.float32), sigma=blur_sigma)
    noisy = blurred + rng.normal(0.0, noise_sigma, size=values.shape).astype(np.float32)
    return np.clip(np.rint(noisy), *clip).astype(np.int16)


def check_shape(shape: Sequence[int], minimum: int = 16) -> tuple[int, int, int]:
    """Validate a 3-D array shape with every size at least ``minimum``."""
    shape = tuple(shape)
    if len(shape) != 3 or not all(isinstance(s, (int, np.integer)) and s >= minimum for s in shape):
        raise ValueError(f"shape must be three integers >= {minimum}, got {shape}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def check_fraction_range(name: str, value: Sequence[float], upper: float = 0.01) -> tuple[float, float]:
    """Validate a ``(low, high)`` voxel-fraction range with ``0 < low <= high < upper``."""
    low, high = (float(v) for v in value)
    if not 0.0 < low <= high < upper:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high < {upper}, got {tuple(value)}")
    return low, high


def refuse_existing(folders: Sequence[Path]) -> None:
    """Raise ``FileExistsError`` if any of the case ``folders`` to write exists (``overwrite=False``): a mistyped
    output folder would otherwise replace real scans with valid-looking phantoms that training accepts."""
    existing = [folder for folder in folders if os.path.lexists(folder)]
    if existing:
        more = f" (and {len(existing) - 1} more case folder(s))" if len(existing) > 1 else ""
        raise FileExistsError(
            f"{existing[0]} exists{more}: generated cases are not written over existing ones. Choose an empty "
            "folder, or replace them with --force (overwrite=True)."
        )


def check_cases(cases: int, case_ids: Sequence[int] | None, first: int, last: int) -> list[int]:
    """The case ids to generate: ``case_ids`` if given, else ``first .. first + cases - 1``; every id must fit the
    data set's case naming, ``first .. last`` (e.g. BraTS20's three digits: an id of 1000 would name a folder that
    the loader does not read)."""
    if case_ids is None:
        if isinstance(cases, bool) or not isinstance(cases, (int, np.integer)) or cases < 1:
            raise ValueError(f"cases must be a positive integer, got {cases!r}")
        ids = list(range(first, first + int(cases)))
    else:
        ids = [int(c) for c in case_ids]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"case_ids must be unique integers, got {list(case_ids)}")
    if min(ids) < first or max(ids) > last:
        raise ValueError(f"case ids must lie in {first}..{last} (the data set's naming), got {min(ids)}..{max(ids)}")
    return ids
