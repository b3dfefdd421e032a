# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Voxel checks right after loading, so that a bad file fails at once with its name instead of deep in the loss.

The header checks of the datalist step cannot see voxel values. A segmentation with an undefined value (e.g. a 3 in
KiTS19) otherwise fails after the first training iteration inside the loss, or in evaluation inside ``AsDiscreted``
(``index 3 is out of bounds``), and an image with a NaN voxel fails inside the loss, all without naming the case.
:class:`CheckLabelValuesd` and :class:`CheckFinited` raise :class:`~monai_mixedfocal.data.errors.DataError` naming
the file (``meta["filename_or_obj"]`` of the loaded MetaTensor) instead.

Both are plain, non-spatial, non-invertible MONAI dictionary transforms: they return the data unchanged, and
:class:`~monai.transforms.Invertd` skips them.
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from monai_mixedfocal.data.errors import DataError
from monai_mixedfocal.data.io import check_label_values

__all__ = ["CheckFinited", "CheckLabelValuesd"]

_CHUNK = 1 << 20
"""Voxels per step of the integrality check (bounds its temporary memory to 4 MiB for float32)."""


def _source(value: Any, key: Hashable) -> str:
    """The file a loaded value came from (``meta["filename_or_obj"]``), or the key when it is unknown."""
    meta = value.meta if isinstance(value, MetaTensor) else None
    name = meta.get("filename_or_obj") if meta else None
    if isinstance(name, (list, tuple)):  # a batch or a multi-file image: name them all
        name = ", ".join(map(str, name)) if name else None
    return str(name) if name else f"data[{key!r}]"


def _plain(value: Any) -> torch.Tensor:
    """A plain tensor view of ``value`` (no MetaTensor bookkeeping on the reductions; NumPy arrays are not copied)."""
    if isinstance(value, MetaTensor):
        return value.as_tensor()
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(value)


def _all_integral(flat: torch.Tensor) -> bool:
    """Whether every element of a 1-D floating-point tensor is a whole number (NaN and inf are not)."""
    buffer = torch.empty(min(_CHUNK, flat.numel()), dtype=flat.dtype, device=flat.device)
    for chunk in flat.split(_CHUNK):
        fraction = buffer[: chunk.numel()]
        torch.frac(chunk, out=fraction)
        if torch.count_nonzero(fraction):
            return False
    return True


class CheckLabelValuesd(MapTransform):
    """Check that every voxel of a loaded label map is one of the values the data set defines.

    Place it right after :class:`~monai.transforms.LoadImaged`. When ``values`` is a contiguous integer range (the
    common case, e.g. 0, 1, 2) the check is one :func:`torch.aminmax` pass plus, for floating-point labels (MONAI
    loads them as float32), a chunked whole-number check; the unique values are computed only to write the message
    of a failure. A non-contiguous set (e.g. 0, 1, 2, 4) computes the unique values every time.

    Args:
        keys: the label keys.
        values: the label values the data set defines (integers).
        dataset: the data set name, for the message (e.g. ``"KiTS19"``).
        allow_missing_keys: do not raise for a missing key.

    Raises:
        ValueError: in ``__init__``, empty or non-integer ``values`` or an empty ``dataset``.

    Example:
        >>> from monai.transforms import Compose, LoadImaged
        >>> load = Compose([LoadImaged("label"), CheckLabelValuesd("label", values=(0, 1, 2), dataset="KiTS19")])
        >>> # load({"label": "case_00000/segmentation.nii.gz"}) raises DataError naming the file for a value 3
    """

    def __init__(
        self, keys: KeysCollection, values: Sequence[int], dataset: str, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ValueError(f"values must be a non-empty sequence of integer label values, got {values!r}")
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Integral)]
        if bad:
            raise ValueError(f"values must be integers, got {', '.join(map(repr, bad))} in {values!r}")
        if not isinstance(dataset, str) or not dataset.strip():
            raise ValueError(f"dataset must be a non-empty name for the error message, got {dataset!r}")
        self.values: tuple[int, ...] = tuple(sorted({int(v) for v in values}))
        self.dataset = dataset
        low, high = self.values[0], self.values[-1]
        self._range: tuple[int, int] | None = (low, high) if high - low + 1 == len(self.values) else None

    def _in_range(self, label: torch.Tensor) -> bool:
        """The fast test for a contiguous ``values`` range: min / max inside it and (for floats) whole numbers."""
        low, high = self._range  # type: ignore[misc]
        if label.dtype == torch.bool:
            label = label.view(torch.uint8)
        if label.is_complex():
            return False  # let the unique-value path describe it
        vmin, vmax = (float(v) for v in torch.aminmax(label))  # NaN propagates and fails both comparisons
        if not (low <= vmin and vmax <= high):
            return False
        return not label.is_floating_point() or _all_integral(label.reshape(-1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Check each key; return the data unchanged.

        Raises:
            DataError: naming the file, the undefined values found and the defined ones.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            label = _plain(d[key])
            if label.numel() == 0 or (self._range is not None and self._in_range(label)):
                continue
            check_label_values(_source(d[key], key), label.detach().cpu().numpy(), self.values, self.dataset)
        return d


class CheckFinited(MapTransform):
    """Check that a loaded image has no NaN or infinite voxel.

    Place it right after :class:`~monai.transforms.LoadImaged`. One :func:`torch.aminmax` pass: a NaN propagates to
    the minimum and maximum, an infinity shows in one of them. Integer images always pass.

    Args:
        keys: the image keys.
        allow_missing_keys: do not raise for a missing key.

    Example:
        >>> from monai.transforms import Compose, LoadImaged
        >>> load = Compose([LoadImaged("image"), CheckFinited("image")])
        >>> # load({"image": "case_00000/imaging.nii.gz"}) raises DataError naming the file for a NaN voxel
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Check each key; return the data unchanged.

        Raises:
            DataError: naming the file and the number of NaN or infinite voxels.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            image = _plain(d[key])
            if image.numel() == 0 or not (image.is_floating_point() or image.is_complex()):
                continue
            if image.is_complex():
                finite = bool(torch.isfinite(image).all())
            else:
                finite = bool(torch.isfinite(torch.stack(torch.aminmax(image))).all())
            if not finite:
                bad = int(image.numel() - torch.isfinite(image).sum())
                raise DataError(
                    f"{_source(d[key], key)}: NaN or infinite voxel values ({bad} of {image.numel()} voxels)"
                )
        return d
