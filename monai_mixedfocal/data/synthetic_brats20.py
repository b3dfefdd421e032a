# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""BraTS20-like generated MRI volumes, written in the real BraTS20 training layout.

Each case is a skull-stripped brain phantom (zero outside the brain) with grey and white matter, ventricles and a
glioma made of oedema (label 2), a necrotic / non-enhancing core (label 1) and an enhancing-tumour rim (label 4) that
stays under 1 % of the voxels. Four contrasts are written (T1, T1-CE, T2, FLAIR; only T1-CE shows the enhancing rim)
plus the segmentation, as int16 arrays on a 1 mm grid with the BraTS affine (axis codes L, P, S), in
``OUT/MICCAI_BraTS2020_TrainingData/BraTS20_Training_XXX/BraTS20_Training_XXX_{t1,t1ce,t2,flair,seg}.nii.gz``.
Case 355's segmentation is named ``W39_1998.09.19_Segm.nii``, as in the official release.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from monai_mixedfocal.data.brats20 import BRATS20_SEG_ALIASES
from monai_mixedfocal.data.io import NIFTI_SUFFIXES, save_nifti
from monai_mixedfocal.data.synthetic_common import (
    MmGrid,
    case_rng,
    check_cases,
    check_fraction_range,
    check_shape,
    finish_intensities,
    refuse_existing,
    shrink_to_budget,
)

__all__ = ["BRATS20_MODALITIES", "brats20_affine", "synthesize_brats20", "synthetic_brats20_case"]

BRATS20_MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
TRAINING_FOLDER = "MICCAI_BraTS2020_TrainingData"

# mean intensity per tissue and contrast: white matter, grey matter, CSF, oedema, necrosis, enhancing tumour
_TISSUES = ("wm", "gm", "csf", "edema", "necrosis", "et")
_CONTRAST: dict[str, tuple[float, ...]] = {
    "t1": (560, 440, 160, 390, 200, 430),
    "t1ce": (520, 420, 150, 380, 180, 1000),
    "t2": (300, 420, 1400, 950, 1200, 700),
    "flair": (350, 430, 120, 900, 400, 650),
}


def brats20_affine(shape: Sequence[int]) -> np.ndarray:
    """The BraTS20 affine (1 mm, axis codes L, P, S) for an array of ``shape``."""
    return np.array([[-1, 0, 0, 0], [0, -1, 0, shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)


def _shell_radius(voxels: float, thickness: float) -> float:
    """Outer radius of a spherical shell of ``thickness`` holding ``voxels`` mm^3 (bisection)."""
    low, high = thickness, 100.0
    for _ in range(60):
        mid = (low + high) / 2
        volume = 4.0 / 3.0 * np.pi * (mid**3 - max(mid - thickness, 0.0) ** 3)
        low, high = (mid, high) if volume < voxels else (low, mid)
    return (low + high) / 2


def synthetic_brats20_case(
    case: int,
    seed: int = 0,
    shape: Sequence[int] = (64, 64, 48),
    et_fraction: Sequence[float] = (0.002, 0.006),
    enhancing: bool = True,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Generate one BraTS20-like case in memory.

    Args:
        case: case number (with ``seed``, it alone decides the random draws).
        seed: generator seed.
        shape: array shape on the 1 mm grid.
        et_fraction: ``(low, high)`` range of the enhancing tumour's voxel share, ``high < 0.01``.
        enhancing: ``False`` for a tumour without enhancing part (its rim is labelled 1 and does not enhance).

    Returns:
        ``(images, seg, affine)``: ``{"t1", "t1ce", "t2", "flair"}`` int16 arrays (0 outside the brain), the int16
        segmentation with labels {0, 1, 2, 4}, and the affine.

    Raises:
        ValueError: a bad shape or fraction range.
    """
    shape = check_shape(shape)
    low, high = check_fraction_range("et_fraction", et_fraction)
    rng = case_rng(seed, case)
    grid = MmGrid(shape, (1.0, 1.0, 1.0))
    semi = np.array([0.40, 0.46, 0.40]) * grid.extent * rng.uniform(0.92, 1.0, 3)
    brain = grid.ellipsoid((0, 0, 0), semi)
    tissue = np.full(shape, -1, dtype=np.int8)  # index into _TISSUES, -1 outside the brain
    tissue[brain] = _TISSUES.index("gm")
    tissue[grid.ellipsoid((0, 0, 0), semi * rng.uniform(0.72, 0.8))] = _TISSUES.index("wm")
    for side in (-1, 1):
        ventricle = grid.ellipsoid((side * 0.08 * semi[0], -0.05 * semi[1], 0.1 * semi[2]), semi * [0.1, 0.35, 0.18])
        tissue[ventricle] = _TISSUES.index("csf")

    hemisphere = rng.choice([-1.0, 1.0])
    center = np.array([hemisphere * rng.uniform(0.3, 0.5), rng.uniform(-0.35, 0.35), rng.uniform(-0.2, 0.3)]) * semi
    thickness = rng.uniform(1.5, 2.5)
    outer = _shell_radius(rng.uniform(low, high) * tissue.size, thickness)

    def rim(radius: float) -> np.ndarray:
        return grid.ellipsoid(center, [radius] * 3) & ~grid.ellipsoid(center, [radius - thickness] * 3) & brain

    et, outer = shrink_to_budget(rim, outer, int(high * tissue.size))
    edema = grid.ellipsoid(center, outer * rng.uniform(1.6, 2.2, 3)) & brain
    core = grid.ellipsoid(center, [outer - thickness] * 3) & brain
    seg = np.zeros(shape, dtype=np.int16)
    seg[edema] = 2
    tissue[edema] = _TISSUES.index("edema")
    seg[core] = 1
    tissue[core] = _TISSUES.index("necrosis")
    seg[et] = 4 if enhancing else 1
    tissue[et] = _TISSUES.index("et" if enhancing else "necrosis")

    images = {}
    for name in BRATS20_MODALITIES:
        means = np.asarray(_CONTRAST[name], dtype=np.float32) * rng.uniform(0.85, 1.15)
        values = np.where(tissue >= 0, means[np.maximum(tissue, 0)], 0.0).astype(np.float32)
        image = finish_intensities(values, rng, 0.03 * float(means[0]), (0.6, 0.6, 0.6), (1, 32767))
        images[name] = np.where(brain, image, 0).astype(np.int16)
    return images, seg, brats20_affine(shape)


def synthesize_brats20(
    out_dir: str | os.PathLike,
    cases: int = 6,
    seed: int = 0,
    shape: Sequence[int] = (64, 64, 48),
    et_fraction: Sequence[float] = (0.002, 0.006),
    case_ids: Sequence[int] | None = None,
    no_enhancing: Collection[int] = (),
    suffix: str = ".nii.gz",
    overwrite: bool = True,
) -> list[Path]:
    """Write BraTS20-like cases in the real training layout (see the module docstring).

    Output is byte-identical for a given seed (and case id), and each case is independent of the others.

    Args:
        out_dir: output root; cases go to ``OUT/MICCAI_BraTS2020_TrainingData/BraTS20_Training_XXX/``.
        cases: number of cases, numbered from 1 (ignored when ``case_ids`` is given).
        seed: generator seed.
        shape: array shape on the 1 mm grid.
        et_fraction: ``(low, high)`` range of the enhancing tumour's voxel share, ``high < 0.01``.
        case_ids: explicit case numbers (e.g. ``[355]`` for the case with the ``W39_1998.09.19_Segm.nii`` mask).
        no_enhancing: case numbers whose tumour has no enhancing part (excluded by the BraTS20 datalist by default).
        suffix: ``".nii.gz"`` or ``".nii"`` (the official release ships ``.nii``).
        overwrite: replace case folders that exist; with ``False`` (the ``synthesize`` command's default) an existing
            one raises ``FileExistsError`` before anything is written.

    Returns:
        The case folders written.

    Raises:
        ValueError: a bad ``suffix``, case count or id, or a ``no_enhancing`` case that is not generated (a typo would
            silently give every case an enhancing tumour).
    """
    if suffix not in NIFTI_SUFFIXES:
        raise ValueError(f"suffix must be one of {NIFTI_SUFFIXES}, got {suffix!r}")
    ids = check_cases(cases, case_ids, first=1, last=999)
    unknown = sorted(set(no_enhancing) - set(ids))
    if unknown:
        shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
        raise ValueError(f"no_enhancing names case(s) {unknown} that are not generated (generated: {shown})")
    folders = [Path(out_dir) / TRAINING_FOLDER / f"BraTS20_Training_{case:03d}" for case in ids]
    if not overwrite:
        refuse_existing(folders)
    for case, folder in zip(ids, folders):
        images, seg, affine = synthetic_brats20_case(case, seed, shape, et_fraction, enhancing=case not in no_enhancing)
        name = folder.name
        for modality, image in images.items():
            save_nifti(folder / f"{name}_{modality}{suffix}", image, affine)
        save_nifti(folder / BRATS20_SEG_ALIASES.get(name, f"{name}_seg{suffix}"), seg, affine)
    return folders
