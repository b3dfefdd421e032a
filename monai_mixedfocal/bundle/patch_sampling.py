# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""How the bundles draw their training patches: uniformly at random (the paper) or centred on each class in turn.

Yeung et al. (2021) train on "random patches" (Section IV-C) and handle the class imbalance with the loss alone: the
paper names sampling rules that centre patches on the foreground as the alternative it avoids (Section I). Centring
a third of the KiTS19 patches on tumour removes much of the imbalance the losses are compared on, so the bundles draw
patches uniformly by default (``"random"``) and offer class-centred sampling (``"by_class"``, MONAI's
``RandCropByLabelClassesd``) as an option.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import ClassesToIndicesd, DeleteItemsd, MapTransform, RandCropByLabelClassesd, RandSpatialCropd

__all__ = ["MAX_INDICES_PER_CLASS", "PATCH_SAMPLING_MODES", "patch_sampling"]

PATCH_SAMPLING_MODES: tuple[str, ...] = ("random", "by_class")
"""``"random"``: a uniformly random patch position (the paper); ``"by_class"``: patches centred on a voxel of each
class, in the proportions ``ratios``."""
MAX_INDICES_PER_CLASS = 200_000
"""Voxel indices kept per class for ``"by_class"`` (cached with the image: a KiTS19 volume has tens of millions of
background voxels)."""


def patch_sampling(
    mode: str,
    patch_size: Sequence[int],
    num_classes: int,
    ratios: Sequence[float] | None = None,
    keys: Sequence[str] = ("image", "label"),
    label_key: str = "label",
) -> list[MapTransform]:
    """The transforms that cut one training patch of ``patch_size`` from an image at least that large.

    Put them after the padding to the patch size and before the augmentation. With ``"by_class"`` the first transform
    (the voxel indices of each class) is deterministic, so a ``CacheDataset`` caches it with the image.

    Args:
        mode: ``"random"`` (uniform position, as in the paper) or ``"by_class"`` (centred on a voxel of class ``c``
            with probability ``ratios[c] / sum(ratios)``).
        patch_size: spatial size of the patch.
        num_classes: number of label classes (background included).
        ratios: ``"by_class"`` only: one non-negative weight per class, not all zero (``None``: equal weights).
        keys: the entries cropped alike (image and label).
        label_key: the label map's entry.

    Returns:
        ``[RandSpatialCropd]`` for ``"random"``; ``[ClassesToIndicesd, RandCropByLabelClassesd, DeleteItemsd]`` for
        ``"by_class"``.

    Raises:
        ValueError: an unknown ``mode``, or ``ratios`` of the wrong length, negative or all zero.

    Example:
        >>> [type(t).__name__ for t in patch_sampling("random", [96, 96, 96], num_classes=2)]
        ['RandSpatialCropd']
    """
    if mode not in PATCH_SAMPLING_MODES:
        raise ValueError(f"patch_sampling must be one of {PATCH_SAMPLING_MODES}, got {mode!r}")
    if mode == "random":
        return [RandSpatialCropd(keys=keys, roi_size=patch_size, random_size=False)]
    ratios = [1.0] * num_classes if ratios is None else [float(r) for r in ratios]
    if len(ratios) != num_classes:
        raise ValueError(f"crop_ratios needs one weight per class ({num_classes}), got {len(ratios)}: {ratios}")
    if any(not r >= 0.0 for r in ratios) or sum(ratios) == 0.0:
        raise ValueError(f"crop_ratios must be non-negative and not all zero, got {ratios}")
    indices_key = f"{label_key}_cls_indices"  # ClassesToIndicesd's default name
    return [
        ClassesToIndicesd(keys=label_key, num_classes=num_classes, max_samples_per_class=MAX_INDICES_PER_CLASS),
        RandCropByLabelClassesd(
            keys=keys,
            label_key=label_key,
            indices_key=indices_key,
            spatial_size=patch_size,
            num_classes=num_classes,
            ratios=ratios,
            num_samples=1,
            warn=False,
        ),
        DeleteItemsd(keys=indices_key),
    ]
