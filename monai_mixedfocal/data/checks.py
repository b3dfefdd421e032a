# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Voxel checks right after loading, so that a bad file fails at once with its name instead of deep in the loss.

The header checks of the datalist step cannot see voxel values. A segmentation with an undefined value (e.g. a 3 in
KiTS19) otherwise fails after the first training iteration inside the loss, or in evaluation inside ``AsDiscreted``
(``index 3 is out of bounds``), and an image with a NaN voxel fails inside the loss, all without naming the case.
:class:`CheckLabelValuesd` and :class:`CheckFinited` raise :class:`~monai_mixedfocal.data.errors.DataError` naming
the file (``meta["filename_or_obj"]`` of the loaded MetaTensor) instead.

Both are plain, non-spatial, non-invertible MONAI dictionary transforms: they return the data unchanged, and
:class:`~monai.transforms.Invertd` skips them. Given an ``image_key``, :class:`CheckLabelValuesd` also checks that the
label shares the image's voxel grid (shape and affine), which the data set's start-up check does from the headers.

:class:`CheckedNibabelReader` is MONAI's NIfTI reader with the same guarantees as
:func:`~monai_mixedfocal.data.io.load_array`: every read failure is a :class:`DataError` naming the file, and a
``.nii.gz`` file's gzip checksum is verified while its voxels are read (no second pass), so a file damaged in place,
its size intact, fails instead of loading wrong voxels.
"""

from __future__ import annotations

import gzip
import numbers
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import nibabel as nib
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelReader
from monai.data.utils import correct_nifti_header_if_necessary
from monai.transforms import MapTransform
from monai.utils import ensure_tuple

from monai_mixedfocal.data.errors import DataError
from monai_mixedfocal.data.io import NIFTI_READ_ERRORS, check_grids, check_label_values, read_nifti_header

__all__ = ["CheckFinited", "CheckLabelValuesd", "CheckedNibabelReader"]

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

    With ``image_key``, the label must also share that image's voxel grid, as
    :func:`~monai_mixedfocal.data.io.check_pair` checks it from the headers: its shape equal to the image's leading
    (spatial) dimensions, as loaded before any channel is added, and the two affines placing every voxel within
    :data:`~monai_mixedfocal.data.io.GRID_TOLERANCE` voxels of each other.

    Args:
        keys: the label keys.
        values: the label values the data set defines (integers).
        dataset: the data set name, for the message (e.g. ``"KiTS19"``).
        image_key: the image the labels belong to, or ``None`` not to compare them; skipped where the data hold no
            such key.
        allow_missing_keys: do not raise for a missing key.

    Raises:
        ValueError: in ``__init__``, empty or non-integer ``values`` or an empty ``dataset``.

    Example:
        >>> from monai.transforms import Compose, LoadImaged
        >>> load = Compose([LoadImaged("label"), CheckLabelValuesd("label", values=(0, 1, 2), dataset="KiTS19")])
        >>> # load({"label": "case_00000/segmentation.nii.gz"}) raises DataError naming the file for a value 3
    """

    def __init__(
        self,
        keys: KeysCollection,
        values: Sequence[int],
        dataset: str,
        allow_missing_keys: bool = False,
        image_key: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if image_key is not None and (not isinstance(image_key, str) or not image_key or image_key in self.keys):
            raise ValueError(f"image_key must be None or a key other than the label keys, got {image_key!r}")
        self.image_key = image_key
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
            DataError: naming the file, the undefined values found and the defined ones; or naming the label and the
                image of a label whose shape or voxel grid is not the image's.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            if self.image_key is not None and self.image_key in d:
                _check_same_grid(d[self.image_key], d[key], self.image_key, key)
            label = _plain(d[key])
            if label.numel() == 0 or (self._range is not None and self._in_range(label)):
                continue
            check_label_values(_source(d[key], key), label.detach().cpu().numpy(), self.values, self.dataset)
        return d


def _check_same_grid(image: Any, label: Any, image_key: Hashable, label_key: Hashable) -> None:
    """Raise :class:`DataError` naming both files unless ``label``'s shape is ``image``'s leading shape and (for
    MetaTensors) their affines agree."""
    label_shape, image_shape = tuple(label.shape), tuple(image.shape)
    if image_shape[: len(label_shape)] != label_shape:
        raise DataError(
            f"{_source(label, label_key)}: label shape {label_shape} does not match image shape {image_shape} of "
            f"{_source(image, image_key)}"
        )
    if isinstance(image, MetaTensor) and isinstance(label, MetaTensor):
        check_grids(image.affine, label.affine, label_shape, _source(image, image_key), _source(label, label_key))


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


class CheckedNibabelReader(NibabelReader):
    """MONAI's :class:`~monai.data.NibabelReader` that names the file of every read failure and verifies the gzip
    checksum of a ``.nii.gz`` file.

    Nibabel reads a compressed file only up to the end of its voxels and never reaches the gzip trailer, so a file
    damaged in place (its size, and so the start-up check, intact) decodes into wrong voxels without an error. This
    reader opens the stream itself, lets nibabel read the voxels from it, then reads on to the end of the stream,
    where Python's :mod:`gzip` compares the CRC-32 and length of everything decompressed: no second pass over the
    file, and no extra memory.

    Register it on a :class:`~monai.transforms.LoadImaged` (``load.register(CheckedNibabelReader())``), which then
    picks it by suffix for NIfTI files; other formats keep MONAI's readers. (Given as ``LoadImaged(reader=...)``
    instead, a failure in :meth:`read` would make MONAI try every other reader and bury the message.)

    Args:
        kwargs: as for :class:`~monai.data.NibabelReader` (``to_gpu`` is not supported and ignored).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("to_gpu", None)
        super().__init__(**kwargs)

    def read(self, data: Sequence[os.PathLike | str] | os.PathLike | str, **kwargs: Any) -> Any:
        """Open the header(s) of the file(s); the voxels are read in :meth:`get_data`.

        Raises:
            DataError: a missing file or an unreadable header, naming the file.
        """
        images = []
        filenames = ensure_tuple(data)
        self.filenames = filenames
        options = {**self.kwargs, **kwargs}
        for name in filenames:
            header_image = read_nifti_header(name, check_complete=False)
            if str(name).lower().endswith(".gz"):
                stream = gzip.open(name, "rb")  # noqa: SIM115 (read from and closed in get_data)
                try:
                    holder = nib.FileHolder(filename=str(name), fileobj=stream)
                    image = type(header_image).from_file_map({"header": holder, "image": holder}, mmap=False)
                except NIFTI_READ_ERRORS as err:
                    stream.close()
                    raise DataError(f"{name}: cannot read the NIfTI header ({err})") from err
            else:
                image = header_image if not options else nib.load(name, **options)
            images.append(correct_nifti_header_if_necessary(image))
        return images if len(filenames) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[Any, dict]:
        """Read the voxels and the metadata (see :meth:`monai.data.NibabelReader.get_data`), then verify each gzip
        stream to its end.

        Raises:
            DataError: naming the file: truncated, corrupt, or a gzip checksum that does not match.
        """
        images = ensure_tuple(img)
        streams = [getattr(getattr(image, "dataobj", None), "file_like", None) for image in images]
        names = [_image_name(image) for image in images]
        try:
            try:
                result = super().get_data(img)
            except NIFTI_READ_ERRORS as err:
                shown = ", ".join(names)
                raise DataError(
                    f"{shown}: cannot read the voxel data, the file is truncated or corrupt ({err})"
                ) from err
            for name, stream in zip(names, streams):
                if isinstance(stream, gzip.GzipFile):
                    try:
                        while stream.read(1 << 20):  # to the end of the stream: gzip checks CRC-32 and length there
                            pass
                    except NIFTI_READ_ERRORS as err:
                        raise DataError(f"{name}: corrupt gzip stream, the file is damaged ({err})") from err
        finally:
            for stream in streams:
                if isinstance(stream, gzip.GzipFile):
                    stream.close()
        return result


def _image_name(image: Any) -> str:
    """The file a nibabel image was read from."""
    holder = getattr(image, "file_map", {}).get("image")
    return str(getattr(holder, "filename", None) or image.get_filename() or "<unnamed image>")
