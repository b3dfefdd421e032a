# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""KiTS19-like generated CT volumes, written in the real KiTS19 layout.

Each case is an abdominal phantom in Hounsfield units (air, subcutaneous fat, soft tissue, liver, spleen, bowel gas,
aorta, vena cava, vertebrae with discs, two bean-shaped kidneys with cortex, medulla and a fatty hilum, and one small
tumour inside or attached to a kidney), blurred for partial volume and with Gaussian noise. Like the real data it is
stored as int16 ``(slices, H, W)`` arrays with an affine whose axis codes are I, P, L
(``[[0, 0, -dx, 0], [0, -dy, 0, 0], [-dz, 0, 0, 0], [0, 0, 0, 1]]``), in ``OUT/data/case_XXXXX/imaging.nii.gz`` and
``segmentation.nii.gz`` (uint8, 0 background, 1 kidney, 2 tumour). The tumour stays under 1 % of the voxels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monai_mixedfocal.data.io import save_nifti
from monai_mixedfocal.data.kits19 import IMAGE_NAME, KITS19_LABELLED_CASES, LABEL_NAME, kits19_case_id
from monai_mixedfocal.data.synthetic_common import (
    MmGrid,
    case_rng,
    check_cases,
    check_fraction_range,
    check_shape,
    finish_intensities,
    largest_component,
    refuse_existing,
    shrink_to_budget,
)

__all__ = ["kits19_affine", "synthesize_kits19", "synthetic_kits19_case"]

HU_CLIP: tuple[int, int] = (-1024, 3071)
DEFAULT_SHAPE: tuple[int, int, int] = (40, 128, 128)
DEFAULT_SPACING: tuple[float, float, float] = (2.5, 1.25, 1.25)
DEFAULT_TUMOR_FRACTION: tuple[float, float] = (0.002, 0.008)


def kits19_affine(spacing: Sequence[float]) -> np.ndarray:
    """The KiTS19 affine for a ``(slices, H, W)`` array with voxel size ``spacing`` (mm): axis codes I, P, L."""
    dz, dy, dx = (float(s) for s in spacing)
    return np.array([[0, 0, -dx, 0], [0, -dy, 0, 0], [-dz, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def _kidney(
    grid: MmGrid, center: np.ndarray, radii: np.ndarray, medial: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bean-shaped kidney (ellipsoid minus a medial hilum), its medulla and the hilum; ``medial`` is +-1 along W."""
    outer = grid.ellipsoid(center, radii)
    hilum = grid.ellipsoid(center + np.array([0.0, 0.0, medial * 0.75 * radii[2]]), radii * np.array([0.45, 0.5, 0.5]))
    medulla = grid.ellipsoid(center, radii * 0.6)
    kidney = largest_component(outer & ~hilum)
    return kidney, medulla & kidney, hilum


def _abdomen(grid: MmGrid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """HU of the body without kidneys, the inner (non-fat) body mask, and the body's semi-axes ``(by, bx)`` in mm.

    Axis 0: + is inferior; axis 1: + is posterior; axis 2: + is the patient's left (the KiTS19 I, P, L order).
    """
    length = grid.extent[0]
    by, bx = 0.36 * grid.extent[1] * rng.uniform(0.9, 1.0), 0.44 * grid.extent[2] * rng.uniform(0.9, 1.0)
    fat = rng.uniform(0.05, 0.09) * bx
    body = grid.cylinder((0, 0, 0), (1, by, bx))
    inner = grid.cylinder((0, 0, 0), (1, by - fat, bx - fat))
    hu = np.full(grid.shape, -1000.0, dtype=np.float32)
    hu[body] = rng.uniform(-110, -80)
    hu[inner] = rng.uniform(35, 55)
    organs = [  # (centre, semi-axes, HU): liver on the patient's right, spleen on the left
        ((-0.3 * length, -0.1 * by, -0.45 * bx), (0.45 * length, 0.55 * by, 0.42 * bx), rng.uniform(90, 115)),
        ((-0.3 * length, 0.25 * by, 0.6 * bx), (0.22 * length, 0.22 * by, 0.17 * bx), rng.uniform(110, 130)),
    ]
    for _ in range(int(rng.integers(3, 7))):  # bowel gas, anterior
        center = (rng.uniform(-0.4, 0.4) * length, rng.uniform(-0.75, -0.25) * by, rng.uniform(-0.5, 0.5) * bx)
        organs.append((center, (rng.uniform(0.05, 0.1) * length, *rng.uniform(0.04, 0.08, 2) * bx), -900.0))
    for center, radii, value in organs:
        hu[grid.ellipsoid(center, radii) & inner] = value
    vertebra = grid.cylinder((0, 0.58 * by, 0), (1, 0.14 * bx, 0.14 * bx))
    period = length * rng.uniform(0.28, 0.34)
    disc = np.broadcast_to(np.mod(grid.axes[0] + rng.uniform(0, period), period) < 0.2 * period, grid.shape)
    tubes = [  # (centre, semi-axes, HU) of structures along the slice axis
        ((0, 0.32 * by, 0.1 * bx), (1, 0.06 * bx, 0.06 * bx), rng.uniform(150, 190)),  # aorta
        ((0, 0.32 * by, -0.14 * bx), (1, 0.07 * bx, 0.08 * bx), rng.uniform(100, 125)),  # vena cava
        ((0, 0.58 * by, 0), (1, 0.14 * bx, 0.14 * bx), 700.0),  # vertebral cortex
        ((0, 0.58 * by, 0), (1, 0.11 * bx, 0.11 * bx), rng.uniform(200, 300)),  # cancellous bone
    ]
    for center, radii, value in tubes:
        hu[grid.cylinder(center, radii) & inner] = value
    hu[vertebra & disc & inner] = 90.0
    hu[grid.cylinder((0, 0.8 * by, 0), (1, 0.05 * bx, 0.05 * bx)) & inner] = 15.0  # spinal canal
    return hu, inner, (by, bx)


def _add_kidneys(
    grid: MmGrid, rng: np.random.Generator, hu: np.ndarray, inner: np.ndarray, body: tuple[float, float]
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Paint both kidneys into ``hu``; returns the label map (1 = kidney) and each kidney's (centre, semi-axes)."""
    length, (by, bx) = grid.extent[0], body
    label = np.zeros(grid.shape, dtype=np.uint8)
    kidneys = []
    for side in (-1.0, 1.0):  # the patient's right kidney (-) sits a little lower
        center = np.array([(0.05 - 0.06 * side + rng.uniform(-0.05, 0.05)) * length, 0.45 * by, side * 0.45 * bx])
        radii = np.array([0.28 * length, 0.24 * by, 0.18 * bx]) * rng.uniform(0.85, 1.15, 3)
        kidney, medulla, hilum = _kidney(grid, center, radii, medial=-side)
        kidney &= inner
        hu[kidney] = rng.uniform(200, 250)
        hu[medulla & kidney] = rng.uniform(140, 170)
        hu[hilum & ~kidney & inner] = -60.0  # renal sinus fat
        label[kidney] = 1
        kidneys.append((center, radii))
    return label, kidneys


def _tumor_mask(
    grid: MmGrid,
    rng: np.random.Generator,
    kidney: tuple[np.ndarray, np.ndarray],
    inner: np.ndarray,
    fractions: tuple[float, float],
) -> np.ndarray:
    """One tumour centred near the surface of ``kidney``, its voxel share drawn from ``fractions`` and capped."""
    center, radii = kidney
    direction = rng.normal(size=3)
    tumor_center = center + direction / np.linalg.norm(direction) * radii * rng.uniform(0.55, 0.9)
    size = int(np.prod(grid.shape))
    budget = rng.uniform(*fractions) * size
    stretch = rng.uniform(0.85, 1.15, 3)
    radius = (3.0 * budget * grid.voxel_volume / (4.0 * np.pi)) ** (1.0 / 3.0)
    tumor, _ = shrink_to_budget(
        lambda r: largest_component(grid.ellipsoid(tumor_center, r * stretch) & inner), radius, int(fractions[1] * size)
    )
    return tumor


def synthetic_kits19_case(
    case: int,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    tumor_fraction: Sequence[float] = DEFAULT_TUMOR_FRACTION,
    spacing_jitter: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate one KiTS19-like case in memory.

    Args:
        case: case number (with ``seed``, it alone decides the random draws).
        seed: generator seed.
        shape: ``(slices, H, W)``.
        spacing: nominal voxel size in mm, ``(slice, row, column)``.
        tumor_fraction: ``(low, high)`` range the tumour's share of all voxels is drawn from; ``high < 0.01``.
        spacing_jitter: relative per-case jitter of the voxel size (0 for the nominal spacing exactly).

    Returns:
        ``(image, label, affine)``: int16 HU ``(slices, H, W)``, uint8 labels {0, 1, 2}, and the I, P, L affine (with
        the case's jittered voxel size).

    Raises:
        ValueError: bad shape, spacing, fraction range or jitter.
    """
    shape = check_shape(shape)
    fractions = check_fraction_range("tumor_fraction", tumor_fraction)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive voxel sizes in mm, got {tuple(spacing)}")
    if not 0.0 <= spacing_jitter < 0.5:
        raise ValueError(f"spacing_jitter must be in [0, 0.5), got {spacing_jitter}")
    rng = case_rng(seed, case)
    spacing = tuple(round(float(s) * rng.uniform(1 - spacing_jitter, 1 + spacing_jitter), 4) for s in spacing)
    grid = MmGrid(shape, spacing)
    hu, inner, body = _abdomen(grid, rng)
    label, kidneys = _add_kidneys(grid, rng, hu, inner, body)
    tumor = _tumor_mask(grid, rng, kidneys[int(rng.integers(0, 2))], inner, fractions)
    texture = rng.normal(0.0, 1.0, shape).astype(np.float32)
    hu[tumor] = rng.uniform(70, 130) + 12.0 * texture[tumor]
    label[tumor] = 2
    image = finish_intensities(hu, rng, rng.uniform(8, 18), (0.5, 0.7, 0.7), HU_CLIP)
    return image, label, kits19_affine(spacing)


def synthesize_kits19(
    out_dir: str | os.PathLike,
    cases: int = 8,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    tumor_fraction: Sequence[float] = DEFAULT_TUMOR_FRACTION,
    spacing_jitter: float = 0.1,
    case_ids: Sequence[int] | None = None,
    overwrite: bool = True,
) -> list[Path]:
    """Write KiTS19-like cases in the real layout: ``OUT/data/case_XXXXX/{imaging,segmentation}.nii.gz``.

    As in the real data set, cases 210 and above (the challenge's test cases) get no ``segmentation.nii.gz``.

    Output is byte-identical for a given seed (and case id), and each case is independent of the others.

    Args:
        out_dir: output root (the equivalent of the kits19 repository folder).
        cases: number of cases, numbered from 0 (ignored when ``case_ids`` is given).
        seed: generator seed.
        shape: ``(slices, H, W)`` of every case.
        spacing: nominal voxel size in mm, slice axis first.
        tumor_fraction: ``(low, high)`` range of the tumour's voxel share, ``high < 0.01``.
        spacing_jitter: relative per-case voxel-size jitter.
        case_ids: explicit case numbers (e.g. ``[15, 23]`` to exercise the default exclusions).
        overwrite: replace case folders that exist; with ``False`` (the ``synthesize`` command's default) an existing
            one raises ``FileExistsError`` before anything is written.

    Returns:
        The case folders written.

    Example:
        >>> folders = synthesize_kits19("/tmp/kits_like", cases=2)  # doctest: +SKIP
        >>> kits19_datalist("/tmp/kits_like").case_ids  # doctest: +SKIP
        ['case_00000', 'case_00001']
    """
    ids = check_cases(cases, case_ids, first=0, last=99999)
    folders = [Path(out_dir) / "data" / kits19_case_id(case) for case in ids]
    if not overwrite:
        refuse_existing(folders)
    for case, folder in zip(ids, folders):
        image, label, affine = synthetic_kits19_case(case, seed, shape, spacing, tumor_fraction, spacing_jitter)
        save_nifti(folder / IMAGE_NAME, image, affine)
        if case < KITS19_LABELLED_CASES:
            save_nifti(folder / LABEL_NAME, label, affine)
    return folders
