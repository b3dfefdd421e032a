# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""A workaround that lets the KiTS19 inference preprocessing run under MONAI Label with MONAI >= 1.6.

MONAI PR #8269 made ``Spacingd`` update, for NIfTI input, every dictionary entry whose key starts with
``"<key>_"`` as if it were a metadata dictionary. MONAI Label puts the input file's path, a string, under
``"image_path"``, so ``Spacingd(keys="image")`` fails with ``AttributeError: 'str' object has no attribute 'update'``.
:func:`protect_key` moves such an entry aside for the duration of the preprocessing and puts it back at the end
(MONAI Label's writer needs it to choose the output extension). Entries that are absent (command-line inference) are
left alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import CopyItemsd, DeleteItemsd, MapTransform

__all__ = ["protect_key"]


def protect_key(transforms: Sequence[MapTransform], key: str = "image_path") -> list[MapTransform]:
    """Wrap ``transforms`` so that the entry ``key`` is moved aside before them and restored after them.

    Args:
        transforms: the preprocessing (e.g. ``kits19_deterministic_transforms(label_key=None)``).
        key: the entry to protect.

    Returns:
        ``[CopyItemsd(key -> stash), DeleteItemsd(key), *transforms, CopyItemsd(stash -> key), DeleteItemsd(stash)]``,
        all tolerant of a missing entry.

    Example:
        >>> from monai.transforms import Compose, Identityd
        >>> Compose(protect_key([Identityd("image")]))({"image": 1, "image_path": "a.nii.gz"})
        {'image': 1, 'image_path': 'a.nii.gz'}
    """
    stash = f"_protected_{key}"
    return [
        CopyItemsd(keys=key, names=stash, allow_missing_keys=True),
        DeleteItemsd(keys=key),
        *transforms,
        CopyItemsd(keys=stash, names=key, allow_missing_keys=True),
        DeleteItemsd(keys=stash),
    ]
