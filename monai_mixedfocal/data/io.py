# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""File helpers shared by the data module: atomic writes, NIfTI header checks and voxel reads with clear errors.

Every read problem becomes a :class:`~monai_mixedfocal.data.errors.DataError` naming the file; every write goes to a
temporary file in the destination folder first and is moved into place with :func:`os.replace`, so a crash never leaves
a half-written file behind.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import warnings
import zlib
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from monai_mixedfocal.data.errors import DataError
from monai_mixedfocal.utils import atomic_write_bytes, atomic_write_json

__all__ = [
    "GRID_TOLERANCE",
    "NIFTI_READ_ERRORS",
    "NIFTI_SUFFIXES",
    "atomic_write_bytes",
    "atomic_write_json",
    "case_folders",
    "check_grids",
    "check_header_geometry",
    "check_image_ndim",
    "check_label_values",
    "check_pair",
    "grid_offset",
    "is_macos_metadata",
    "is_nifti",
    "load_array",
    "read_nifti_header",
    "read_training_json",
    "save_nifti",
    "warn_of_case_like_entries",
]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
#: what reading a missing, truncated or corrupt NIfTI file (header or voxels) raises through nibabel, gzip and numpy
NIFTI_READ_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    EOFError,
    ValueError,
    zlib.error,
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,  # e.g. an undefined datatype code
)
_GZIP_CHUNK = 1 << 22
GRID_TOLERANCE = 0.1
"""How far apart (in voxels of the finer grid) an image's and its label's voxel grids may lie at the corners of the
volume before :func:`check_pair` calls them misregistered: far above float32 rounding of the header fields (and a
spacing rounded to 4 decimals), far below a one-voxel shift."""


def is_macos_metadata(path: str | os.PathLike) -> bool:
    """Whether ``path`` is metadata that macOS adds to archives, not data: an AppleDouble file ``._<name>`` or
    anything under a ``__MACOSX`` folder (found in the official MSD tarballs and in zips made on a Mac).

    Example:
        >>> is_macos_metadata("imagesTs/._spleen_1.nii.gz"), is_macos_metadata("imagesTs/spleen_1.nii.gz")
        (True, False)
    """
    path = Path(path)
    return path.name.startswith("._") or "__MACOSX" in path.parts


def case_folders(entries: Iterable[Path], case_name: re.Pattern[str]) -> list[Path]:
    """A data set's case folders among ``entries``: those named like ``case_name``, sorted by name, each a folder.

    Raises:
        DataError: an entry named like a case is not a folder (a broken link or a file), naming the first such entry.
    """
    found = sorted((p for p in entries if case_name.match(p.name)), key=lambda p: p.name)
    not_folders = [p for p in found if not p.is_dir()]
    if not_folders:
        raise DataError(f"{not_folders[0]}: a case entry that is not a folder (a broken link or a file?)")
    return found


def warn_of_case_like_entries(entries: Iterable[Path], case_name: re.Pattern[str], prefix: str) -> None:
    """Warn of the ``entries`` that start like a case (``prefix``) but are not a case name (``case_name``).

    Such an entry, a stray copy ``case_00001 (copy)``, a typo ``case_0001`` or an archive
    ``BraTS20_Training_001.zip``, is not a case and is left out; the warning names it, so that a user who meant it as
    one sees why it is missing. The prefix is compared without regard to case (``Case_00001``, ``Brats20_Training_005``
    were left out without a word). Pass the entries beside the case folders (not a case folder's own files).
    """
    near_misses = sorted(
        str(p) for p in entries if p.name.lower().startswith(prefix.lower()) and not case_name.match(p.name)
    )
    if near_misses:
        warnings.warn(
            f"{len(near_misses)} entr{'y' if len(near_misses) == 1 else 'ies'} named like a case but not a case name "
            f"(expected {case_name.pattern}), left out: {near_misses[:3]}{' and more' if len(near_misses) > 3 else ''}",
            stacklevel=2,
        )


def is_nifti(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_training_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """Read a JSON object holding a ``training`` list (an MSD ``dataset.json`` or a datalist).

    Args:
        path: the JSON file.
        what: what the file is, for the messages (``"dataset.json"``, ``"datalist"``).

    Raises:
        DataError: the file is missing, not JSON, or not an object with a ``training`` list.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a valid JSON {what} ({err})") from err
    if not isinstance(content, dict) or not isinstance(content.get("training"), list):
        hint = (
            " (this is an nnU-Net v2 dataset.json, which lists no cases: add the MSD 'training' list of "
            "{'image': ..., 'label': ...} items)"
            if isinstance(content, dict) and "file_ending" in content
            else ""
        )
        raise DataError(f"{path}: expected a JSON object with a 'training' list{hint}")
    return content


def save_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray, header: Any = None) -> Path:
    """Save ``array`` as NIfTI-1 atomically and byte-reproducibly (gzip with a zero time stamp for ``.nii.gz``).

    Args:
        path: destination ending in ``.nii`` or ``.nii.gz``.
        array: voxel data; its dtype is the on-disk dtype.
        affine: 4 x 4 voxel-to-world (RAS+, mm) matrix, written to both the qform and the sform (code 1, scanner).
        header: optional header to copy (for example the source segmentation's), its dtype is replaced by ``array``'s.

    Returns:
        The destination path.

    Raises:
        ValueError: if ``path`` does not end in ``.nii`` or ``.nii.gz``.
    """
    if not is_nifti(path):
        raise ValueError(f"expected a NIfTI path ending in .nii or .nii.gz, got {str(path)!r}")
    image = nib.Nifti1Image(array, affine, header=header)
    image.set_data_dtype(array.dtype)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    data = image.to_bytes()
    if str(path).lower().endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    return atomic_write_bytes(path, data)


def _expected_size(image: nib.Nifti1Image) -> int:
    """Bytes of the uncompressed single-file NIfTI: header, extensions and voxel data."""
    header = image.header
    offset = getattr(image.dataobj, "offset", None)  # a loaded image's header has its vox_offset reset to 0
    offset = int(header.get_data_offset()) if offset is None else int(offset)
    return offset + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize


def _gzip_size(path: Path) -> int:
    """Decompress ``path`` in chunks and return its uncompressed size; raises on a truncated or corrupt stream."""
    size = 0
    with gzip.open(path, "rb") as handle:
        while chunk := handle.read(_GZIP_CHUNK):
            size += len(chunk)
    return size


def _check_complete(path: Path, image: nib.Nifti1Image) -> None:
    """Raise :class:`DataError` when ``path`` is shorter than its header says (a truncated download or copy).

    For ``.nii.gz`` the gzip trailer (uncompressed size modulo 2**32) is compared with the header first, which costs a
    4-byte read; only when they disagree is the whole stream decompressed to decide.
    """
    expected = _expected_size(image)
    if str(path).lower().endswith(".gz"):
        with path.open("rb") as handle:
            handle.seek(-4, os.SEEK_END)
            trailer = int.from_bytes(handle.read(4), "little")
        if trailer == expected % 2**32:
            return
        try:
            actual = _gzip_size(path)
        except NIFTI_READ_ERRORS as err:
            raise DataError(f"{path}: truncated or corrupt gzip stream ({err})") from err
    else:
        actual = path.stat().st_size
    if actual < expected:
        raise DataError(f"{path}: truncated NIfTI, {actual} bytes of the {expected} its header describes")


def read_nifti_header(path: str | os.PathLike, check_complete: bool = True) -> nib.Nifti1Image:
    """Open a NIfTI file lazily (header only) and check that it is readable, that MONAI loads it with nibabel's affine
    (:func:`check_header_geometry`) and, optionally, that it is complete.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        check_complete: also detect a truncated file without reading the voxels (see :func:`_check_complete`).

    Returns:
        The lazily loaded nibabel image (voxels not read).

    Raises:
        DataError: the file is missing, not NIfTI, unreadable, truncated, or its header gives MONAI another voxel grid
            than nibabel.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        image = nib.load(path)
    except NIFTI_READ_ERRORS as err:
        raise DataError(f"{path}: cannot read the NIfTI header ({err})") from err
    if not isinstance(image, nib.Nifti1Image):
        raise DataError(f"{path}: expected a NIfTI-1/2 image, got {type(image).__name__}")
    check_header_geometry(path, image)
    if check_complete:
        try:
            _check_complete(path, image)
        except DataError:
            raise
        except NIFTI_READ_ERRORS as err:
            raise DataError(f"{path}: cannot check that the file is complete ({err})") from err
    return image


def check_header_geometry(path: str | os.PathLike, image: nib.Nifti1Image) -> None:
    """Check that MONAI's readers load ``image`` on the voxel grid nibabel reads from its header.

    A NIfTI header states the voxel size three times: in ``pixdim``, in the qform and in the sform. When ``pixdim``
    disagrees with the affine nibabel uses (the sform, when its code is set), MONAI's ``NibabelReader`` calls
    :func:`monai.data.utils.correct_nifti_header_if_necessary`, which replaces the sform by the qform (or the reverse)
    when that one agrees with ``pixdim``. Such a file would then pass every check made with nibabel and still be
    trained on another voxel size, orientation or position; a header that disagrees with itself is refused instead,
    naming both grids.

    Args:
        path: the file (for the message).
        image: its nibabel image (header only is enough).

    Raises:
        DataError: the two grids lie more than :data:`GRID_TOLERANCE` voxels apart.
    """
    ndim = int(image.header["dim"][0])
    if ndim >= 5 or np.allclose(image.header.get_zooms()[:ndim], _voxel_size(image.affine, ndim)):
        return  # MONAI keeps such a header as it is (the first test of correct_nifti_header_if_necessary)
    from monai.data.utils import correct_nifti_header_if_necessary  # slow to import: only for the rare bad header

    loaded = correct_nifti_header_if_necessary(type(image)(image.dataobj, image.affine, image.header)).affine
    distance, spacing = grid_offset(image.affine, loaded, image.shape[:3])
    if not distance <= GRID_TOLERANCE * spacing:
        sizes = [_voxel_size(affine, 3).round(4).tolist() for affine in (image.affine, loaded)]
        used, other = ("sform", "qform") if image.header["sform_code"] > 0 else ("qform", "sform")
        pixdim = [round(float(z), 4) for z in image.header.get_zooms()[:3]]
        raise DataError(
            f"{path}: inconsistent NIfTI header: pixdim {pixdim} disagrees with the {used} (voxel size {sizes[0]}), so "
            f"MONAI's NibabelReader would load the file with the {other} instead (voxel size {sizes[1]}), up to "
            f"{distance:.3g} mm away from the grid nibabel reads. Make the header agree with itself and save the file "
            "again (with nibabel: img.set_qform(affine) and img.set_sform(affine) with the right affine; set_qform "
            "also sets pixdim)"
        )


def _voxel_size(affine: Any, ndim: int) -> np.ndarray:
    """The column norms of an affine's first ``ndim`` columns, as MONAI's ``affine_to_spacing`` computes them."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:ndim, :ndim], axis=0)


def load_array(path: str | os.PathLike, image: nib.Nifti1Image | None = None) -> np.ndarray:
    """Read the voxels of a NIfTI file, turning any read failure into a :class:`DataError` naming the file.

    A ``.nii.gz`` file is decompressed whole and its gzip checksum (CRC-32 and length) is checked, so a file damaged
    in place, its size intact, is an error rather than garbage voxels (nibabel alone reads only the bytes it needs and
    never reaches the checksum).

    Args:
        path: the file.
        image: an already opened image for ``path`` (from :func:`read_nifti_header`), to avoid opening it twice.

    Returns:
        The voxel values with the header's scaling applied, as nibabel's ``image.dataobj`` gives them and as MONAI's
        ``LoadImage`` reads them for training: ``scl_slope * stored + scl_inter`` in float64 where the header scales
        (an int16 label map stored as ``0, 1`` with slope 2 and intercept 10 reads ``10.0, 12.0``); the on-disk dtype
        where it does not (slope 1 and intercept 0, or unset), for an uncompressed ``.nii`` as a copy-on-write
        ``np.memmap`` (changes never reach the file).

    Raises:
        DataError: the file is missing, unreadable, truncated or corrupt.
    """
    image = read_nifti_header(path, check_complete=False) if image is None else image
    try:
        if str(path).lower().endswith(".gz"):
            image = type(image).from_bytes(gzip.decompress(Path(path).read_bytes()))
        return np.asanyarray(image.dataobj)
    except NIFTI_READ_ERRORS as err:
        raise DataError(f"{path}: cannot read the voxel data, the file is truncated or corrupt ({err})") from err


def check_label_values(
    path: str | os.PathLike, array: np.ndarray, allowed: Collection[int], dataset: str
) -> np.ndarray:
    """Check that a label map only holds values the data set defines.

    Args:
        path: the label file (for the message).
        array: its voxels.
        allowed: the label values the data set defines.
        dataset: the data set name (for the message).

    Returns:
        The sorted unique values found.

    Raises:
        DataError: naming the file, the undefined values and the defined ones.
    """
    values = np.unique(array)
    undefined = sorted(set(values.tolist()) - {float(v) for v in allowed})
    if undefined:
        shown = ", ".join(f"{v:g}" if float(v).is_integer() else repr(v) for v in undefined[:10])
        defined = ", ".join(map(str, sorted(allowed)))
        raise DataError(f"{path}: label value(s) {shown} not defined for {dataset} (defined: {defined})")
    return values


def check_image_ndim(path: str | os.PathLike, image: Any, ndim: int = 3) -> None:
    """Refuse an image of another number of dimensions than ``ndim`` (its header, ``image.shape``), naming the file.

    A 3-D scan saved with trailing dimensions of size 1 (``(512, 512, 90, 1, 1)``) failed inside MONAI's
    ``Orientationd`` (``axcodes must match data_array spatially``), without the file's name; the message says how to
    save it as a 3-D image.

    Raises:
        DataError: ``path: expected a 3-D image, got shape (...)``.
    """
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == ndim:
        return
    squeeze = len(shape) > ndim and all(n == 1 for n in shape[ndim:])
    hint = " (its extra dimensions have size 1: save it without them, e.g. nibabel.squeeze_image)" if squeeze else ""
    raise DataError(f"{path}: expected a {ndim}-D image, got shape {shape}{hint}")


def check_pair(
    image_path: str | os.PathLike, label_path: str | os.PathLike, ndim: int | None = 3
) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Open an image and its label map (headers only) and check that they are complete and share a voxel grid.

    The label's shape must equal the image's leading dimensions (a multi-channel MSD image keeps its channels last).

    Args:
        image_path: the image file.
        label_path: the label file.
        ndim: the number of spatial dimensions the label must have, or ``None`` for 2-D or 3-D.

    The two voxel grids must also coincide in world space (the affines, compared by :func:`grid_offset`): a label
    shifted, flipped or resampled against its image is a misregistered pair, which MONAI would silently pair up voxel
    by voxel after reorienting each file on its own.

    Returns:
        The two lazily loaded images.

    Raises:
        DataError: naming the file and the problem (missing, unreadable, truncated, wrong dimensionality, shape
            mismatch, voxel grids apart by more than :data:`GRID_TOLERANCE` voxels).
    """
    image = read_nifti_header(image_path)
    label = read_nifti_header(label_path)
    if ndim is not None:
        check_image_ndim(image_path, image, ndim)
    label_shape, image_shape = tuple(label.shape), tuple(image.shape)
    allowed_ndim = (2, 3) if ndim is None else (ndim,)
    if len(label_shape) not in allowed_ndim:
        raise DataError(
            f"{label_path}: expected a {' or '.join(map(str, allowed_ndim))}-D label, got shape {label_shape}"
        )
    if image_shape[: len(label_shape)] != label_shape:
        raise DataError(
            f"{label_path}: label shape {label_shape} does not match image shape {image_shape} of {image_path}"
        )
    check_grids(image.affine, label.affine, label_shape, image_path, label_path)
    return image, label


def grid_offset(affine: Any, other: Any, shape: Sequence[int]) -> tuple[float, float]:
    """How far apart two voxel grids of the same ``shape`` lie: the largest distance, over the corners of the volume,
    between the world positions (mm) the two affines give the same voxel index.

    A shift shows at every corner; a different spacing, flip or rotation grows across the volume and shows at its
    far corners.

    Args:
        affine: a 4 x 4 voxel-to-world matrix (array or tensor).
        other: the other 4 x 4 matrix.
        shape: the spatial shape of the grids (2-D or 3-D; extra dimensions are ignored).

    Returns:
        ``(distance in mm, the smaller voxel size of the two grids in mm)``.
    """
    first, second = (np.asarray(a, dtype=np.float64)[:4, :4] for a in (affine, other))
    extent = [max(int(n) - 1, 0) for n in list(shape)[:3]] + [0] * (3 - min(len(shape), 3))
    corners = np.array(list(itertools.product(*[(0, n) for n in extent])), dtype=np.float64)
    corners = np.concatenate([corners, np.ones((len(corners), 1))], axis=1).T
    distance = float(np.linalg.norm((first - second)[:3] @ corners, axis=0).max())
    spacing = np.concatenate([_voxel_size(first, 3), _voxel_size(second, 3)])
    spacing = spacing[spacing > 0]
    return distance, float(spacing.min()) if spacing.size else 1.0


def check_grids(
    image_affine: Any,
    label_affine: Any,
    shape: Sequence[int],
    image_path: str | os.PathLike,
    label_path: str | os.PathLike,
) -> None:
    """Raise :class:`DataError` naming the label when its voxel grid lies more than :data:`GRID_TOLERANCE` voxels
    from the image's (see :func:`grid_offset`); a NaN in either affine also fails.

    Args:
        image_affine: the image's 4 x 4 voxel-to-world matrix.
        label_affine: the label's.
        shape: the label's spatial shape.
        image_path: the image (for the message).
        label_path: the label (for the message).
    """
    distance, spacing = grid_offset(image_affine, label_affine, shape)
    if not distance <= GRID_TOLERANCE * spacing:
        raise DataError(
            f"{label_path}: label voxel grid does not match the image's ({image_path}): the affines place the same "
            f"voxel up to {distance:.3g} mm apart (tolerance {GRID_TOLERANCE * spacing:.3g} mm, {GRID_TOLERANCE:g} "
            "voxel); a misregistered or wrongly oriented label"
        )
