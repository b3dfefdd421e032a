# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""What a bundle run resolves and checks before any training time is spent: the loss, the data split, the images.

The bundle configs call these from ``$`` expressions; ``initialize`` references them, so a wrong ``--loss``, a
``--dataset_dir`` without cases or a ``--fold`` out of range stops the run at start with a message that names the
option and the value.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data.utils import create_file_basename

from monai_mixedfocal.data import DataError, brats20_datalist, kits19_datalist, refresh_et_masks, split_datalist
from monai_mixedfocal.data.datalist import datalist_to_json, first_missing_file, read_datalist
from monai_mixedfocal.data.io import check_image_ndim, check_pair, is_macos_metadata, is_nifti, read_nifti_header
from monai_mixedfocal.data.kits19 import kits19_repository
from monai_mixedfocal.losses import get_loss, loss_class
from monai_mixedfocal.utils import is_integer, is_number

__all__ = [
    "DATA_SOURCES",
    "build_loss",
    "check_sliding_window",
    "check_training_setup",
    "find_images",
    "inference_images",
    "inference_root",
    "load_split",
    "prediction_root",
]

logger = logging.getLogger(__name__)

DATA_SOURCES: tuple[str, ...] = ("kits19", "brats20")

#: how many times a voxel may be inferred before :func:`check_sliding_window` warns: 64 is an overlap of 0.75 on each
#: axis of a 3-D window, 8 times the work of the bundles' default 0.5 (``--sw_overlap 0.99`` ran 422,331 windows on
#: one volume instead of 27)
MAX_WINDOW_REPEATS = 64
"""Data sets :func:`load_split` can list from their own folder layout."""


def build_loss(loss: str | Callable[..., Any], device: str | torch.device | None = None, **kwargs: Any) -> Any:
    """The training loss: a registry name built with ``kwargs``, or a ready loss object used as it is.

    The bundles pass ``softmax=True``: their networks output one logit per class. A sigmoid loss of the registry
    (``sigmoid_focal``, ``asymmetric_focal``) scores each of those channels with its own sigmoid against the one-hot
    target instead (RetinaNet's per-class focal loss), so ``softmax=True`` is read as ``sigmoid=True`` for it; the
    argmax of the logits that evaluation and inference take is the same under both activations.

    Args:
        loss: a name of :data:`monai_mixedfocal.losses.LOSS_NAMES` (``--loss focal_tversky``), or a callable loss
            (what a ``"_target_"`` config instantiates, e.g. ``monai.losses.DiceCELoss``), which must then take care of
            its own activation and target format.
        device: move a ``torch.nn.Module`` loss there (losses with buffers, such as class weights).
        kwargs: constructor arguments for a named loss (the bundles pass ``softmax=True, to_onehot_y=True``); ignored
            for a loss object.

    Returns:
        The loss callable.

    Raises:
        ValueError: an unknown loss name (the message lists the valid names), or an argument out of range for the
            named loss (the message names the loss and its arguments).
        TypeError: ``loss`` is neither a string nor callable, or an argument the named loss does not take.

    Example:
        >>> build_loss("mixed_focal", softmax=True, to_onehot_y=True)  # doctest: +ELLIPSIS
        MixedFocalLoss(...)
        >>> build_loss("sigmoid_focal", softmax=True, to_onehot_y=True).sigmoid
        True
    """
    if isinstance(loss, str):
        try:
            cls = loss_class(loss)
        except ValueError as err:
            raise ValueError(f"--loss {loss!r} is not a loss of the registry: {err}") from err
        if kwargs.get("softmax") and getattr(cls, "sigmoid_only", False):
            logger.info("--loss %s is a sigmoid loss: each output channel gets its own sigmoid (not softmax).", loss)
            kwargs = {**{k: v for k, v in kwargs.items() if k != "softmax"}, "sigmoid": True}
        try:
            function = get_loss(loss, **kwargs)
        except (TypeError, ValueError) as err:
            raise type(err)(f"--loss {loss!r} with arguments {kwargs}: {err}") from err
    elif callable(loss):
        function = loss
    else:
        raise TypeError(
            f"--loss must be a registry name or a callable loss (a '_target_' config), got {type(loss).__name__}: "
            f"{loss!r}."
        )
    if device is not None and isinstance(function, torch.nn.Module):
        function = function.to(device)
    return function


def load_split(
    source: str,
    dataset_dir: str | os.PathLike,
    fold: int,
    datalist: str | os.PathLike | None = None,
    num_folds: int = 5,
    seed: int = 0,
    labels_dir: str | os.PathLike | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The training and validation cases of one fold, from a datalist JSON or listed from the data set folder.

    Args:
        source: ``"kits19"`` or ``"brats20"``: how to list ``dataset_dir`` when no ``datalist`` is given.
        dataset_dir: the data set root (the kits19 repository or its ``data/`` folder; the folder holding
            ``MICCAI_BraTS2020_TrainingData``). With a ``datalist``, the first root under which every file of the
            datalist exists is used: ``dataset_dir`` (for KiTS19 also its parent when it is the ``data/`` folder),
            then the ``dataset_root`` recorded in the JSON; so the bundle's default ``dataset_dir`` does not hide
            the recorded root, and a moved data set is found through ``--dataset_dir``.
        fold: the validation fold.
        datalist: a JSON written by ``python -m monai_mixedfocal datalist`` (fixed folds), or ``None`` to list
            ``dataset_dir`` and assign the folds here (the same assignment for the same cases and seed).
        num_folds: number of folds when listing ``dataset_dir``.
        seed: fold shuffling seed when listing ``dataset_dir``.
        labels_dir: BraTS20 only: where the binary enhancing-tumour masks are written when listing ``dataset_dir``
            (default ``<dataset_dir>/labels_et``).

    Returns:
        ``(train, val)`` lists of case dicts with absolute ``image`` / ``label`` paths and a ``case`` id.

    Raises:
        DataError: no cases, a bad datalist, a datalist whose files are under none of the roots tried, a fold out
            of range (the message names the option and the value), or an image / label pair that listing the folder
            would reject: unreadable or truncated, shapes or voxel grids that differ (headers only, as
            :func:`~monai_mixedfocal.data.check_pair` reads them; the message names the file).
        ValueError: an unknown ``source``.
    """
    if source not in DATA_SOURCES:
        raise ValueError(f"source must be one of {DATA_SOURCES}, got {source!r}.")
    base_dir = Path(dataset_dir) if dataset_dir not in (None, "") else None
    try:
        if datalist not in (None, ""):
            return _split_under_a_root(source, datalist, fold, base_dir)
        if base_dir is None:
            raise DataError("neither --dataset_dir nor --datalist is set")
        if not is_integer(fold) or not 0 <= fold < num_folds:
            raise DataError(f"fold must be an integer in 0..{num_folds - 1} (--num_folds {num_folds}), got {fold!r}")
        if source == "kits19":
            cases = kits19_datalist(base_dir)
        else:
            cases = brats20_datalist(base_dir, labels_dir=labels_dir)
        items = datalist_to_json(cases, cases.base_dir, num_folds=num_folds, seed=seed)["training"]
        return split_datalist(items, fold, base_dir=cases.base_dir)
    except DataError as err:
        raise DataError(
            f"cannot make the {source} training split (--dataset_dir {dataset_dir!r}, --datalist {datalist!r}, "
            f"--fold {fold!r}): {err}"
        ) from err


def _split_under_a_root(
    source: str, datalist: str | os.PathLike, fold: int, dataset_dir: Path | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """:func:`split_datalist` against the first root under which every image and label of the datalist exists.

    Every case's files are then checked as listing the data set folder checks them (:func:`check_pair`, headers
    only): readable and complete, label shape equal to the image's, voxel grids in the same place.
    """
    recorded = read_datalist(datalist).get("source")
    if recorded in DATA_SOURCES and recorded != source:  # an MSD or hand-made datalist may serve either bundle
        raise DataError(
            f"{datalist} is a {recorded} datalist (its 'source'), and this is the {source} bundle: its preprocessing "
            f"and labels are {source}'s. Give it a datalist written by `python -m monai_mixedfocal datalist {source}`."
        )
    roots: list[Path | None] = []
    if dataset_dir is not None:
        roots.append(dataset_dir)
        repository = kits19_repository(dataset_dir) if source == "kits19" else dataset_dir
        if repository != dataset_dir:
            roots.append(repository)  # the datalist's paths start with data/
    roots.append(None)  # the dataset_root recorded in the JSON
    tried = []
    for root in roots:
        train, val = split_datalist(datalist, fold, base_dir=root)
        missing = first_missing_file(train + val)
        if missing is None:
            for item in train + val:  # the files may have changed since the datalist was written
                _check_item(item)
            if source == "brats20":
                refresh_et_masks(train + val)  # the data under the root may have changed since the masks were made
            return train, val
        tried.append(f"{'the dataset_root recorded in it' if root is None else str(root)} (no {missing})")
    raise DataError(f"the files of the datalist are under none of the roots tried: {'; '.join(tried)}")


def prediction_root(
    items: Sequence[dict[str, Any]], dataset_dir: str | os.PathLike | None = None, key: str = "image"
) -> str:
    """The folder that saved predictions mirror (``SaveImaged(data_root_dir=...)``), so that they land inside
    ``output_dir`` whichever root a ``--datalist`` was resolved under.

    ``dataset_dir`` when every image lies under it (predictions then mirror the data set's layout, as inference's do,
    e.g. ``<output_dir>/data/case_00001/imaging_seg.nii.gz``); otherwise the common folder of the cases' folders, e.g.
    KiTS19's ``data/`` or BraTS20's ``MICCAI_BraTS2020_TrainingData`` (``<output_dir>/case_00001/...``). Relative to a
    folder that does not hold the images, ``SaveImaged`` would write outside ``output_dir``.

    Args:
        items: datalist entries with absolute paths (as :func:`load_split` returns them).
        dataset_dir: the run's ``--dataset_dir``.
        key: the image key; a list of files uses its first.

    Raises:
        ValueError: no item has an image path.
    """
    images = []
    for item in items:
        value = item.get(key)
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, (str, os.PathLike)):
            images.append(os.path.abspath(value))
    if not images:
        raise ValueError(f"no {key!r} path in the {len(items)} data item(s) to save predictions for.")
    if dataset_dir not in (None, ""):
        root = os.path.abspath(os.fspath(dataset_dir))  # type: ignore[arg-type]
        if all(os.path.commonpath([root, image]) == root for image in images):
            return root
    return os.path.commonpath([os.path.dirname(os.path.dirname(image)) for image in images])


def _check_item(item: dict[str, Any]) -> None:
    """:func:`check_pair` (headers only) on each image of a datalist entry against its label; for a BraTS20 entry
    against its segmentation, from which the mask is made."""
    label_key = "seg" if "seg" in item else "label"
    images = item.get("image")
    for image in images if isinstance(images, list) else [images]:
        if isinstance(image, str) and isinstance(item.get(label_key), str):
            check_pair(image, item[label_key], ndim=3)


def find_images(dataset_dir: str | os.PathLike, pattern: str, not_images: Sequence[str] = ()) -> list[str]:
    """The images to run inference on: files under ``dataset_dir`` matching a glob pattern, sorted, without the
    metadata macOS adds to archives (``._<name>`` files, ``__MACOSX`` folders), which stopped inference as unreadable.

    Args:
        dataset_dir: the folder to search.
        pattern: a glob relative to ``dataset_dir``; ``**`` matches any depth (e.g. ``"**/imaging.nii.gz"``).
        not_images: shell patterns of the file names in the data set's layout that are not images the network takes
            (labels, other modalities), e.g. :data:`~monai_mixedfocal.data.KITS19_NOT_IMAGES`: a ``pattern`` that
            matches one is refused (``"**/*.nii.gz"`` segmented KiTS19's segmentations as CT scans).

    Returns:
        Absolute paths, sorted.

    Raises:
        DataError: ``dataset_dir`` is not a folder, nothing matches, a match is named like ``not_images``, or a NIfTI
            file that matches is unreadable or truncated (its header is read, no voxels), so that inference stops
            before it starts, naming the file.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DataError(f"--dataset_dir {str(dataset_dir)!r} is not a folder.")
    matches = [p for p in root.glob(pattern) if p.is_file() and not is_macos_metadata(p.relative_to(root))]
    found = sorted(str(p.absolute()) for p in matches)
    if not found:
        raise DataError(f"--dataset_dir {str(dataset_dir)!r}: no image matches {pattern!r}.")
    wrong = [path for path in found if any(fnmatch.fnmatchcase(Path(path).name, name) for name in not_images)]
    if wrong:
        raise DataError(
            f"--image_pattern {pattern!r} also matches {len(wrong)} file(s) that are not images this network takes "
            f"(named like {', '.join(not_images)}), e.g. {wrong[0]}: inference would segment them as images. "
            "Narrow --image_pattern to the images' names."
        )
    for path in found:
        if is_nifti(path):
            check_image_ndim(path, read_nifti_header(path))
    return found


def inference_images(
    dataset_dir: str | os.PathLike,
    pattern: str,
    datalist: str | os.PathLike | Sequence[str] | None = None,
    not_images: Sequence[str] = (),
) -> list[str]:
    """The images ``inference.json`` segments: ``--datalist`` when given (a list of image files, or one file), else
    the files under ``dataset_dir`` that match ``pattern`` (:func:`find_images`).

    Args:
        dataset_dir: the folder searched when ``datalist`` is ``None``.
        pattern: the glob of :func:`find_images`.
        datalist: image files to segment, e.g. ``--datalist "['/data/ct_1.nii.gz', '/data/ct_2.nii.gz']"``.
        not_images: the names :func:`find_images` refuses when it searches (files listed in ``datalist`` are taken
            as given).

    Returns:
        Absolute paths (``datalist`` in its order; found files sorted).

    Raises:
        DataError: an empty list, a missing file, an unreadable or truncated NIfTI file (header read, no voxels), a
            JSON file (a training datalist: ``evaluate.json`` segments its validation fold), two images whose label
            maps would have one name (``ct.nii`` and ``ct.nii.gz`` in one folder, a file listed twice: the second
            replaced the first without a word), or what :func:`find_images` raises.
    """
    images = find_images(dataset_dir, pattern, not_images) if datalist is None else _listed_images(datalist)
    written_by: dict[str, str] = {}
    for image in images:
        # the label map's path as SaveImaged names it: the folder mirrored, .nii and .nii.gz dropped, _seg added
        output = create_file_basename("seg", image, "/", data_root_dir="/", separate_folder=False)
        if output in written_by:
            raise DataError(
                f"{written_by[output]} and {image} would both be segmented into {Path(output).name}.nii.gz, the second "
                "replacing the first: keep one of them (or list them from different folders)"
            )
        written_by[output] = image
    return images


def _listed_images(datalist: str | os.PathLike | Sequence[str]) -> list[str]:
    """Inference's ``--datalist`` files, absolute and checked (see :func:`inference_images`)."""
    files = _listed_files(datalist)
    if not files or not all(isinstance(f, (str, os.PathLike)) and os.fspath(f) for f in files):
        raise DataError(f"--datalist for inference must be a list of image files, got {datalist!r}")
    images = [os.path.abspath(os.fspath(f)) for f in files]
    for image in images:
        if image.lower().endswith(".json"):
            raise DataError(
                f"--datalist {image}: a JSON datalist; inference takes a list of image files, e.g. "
                "--datalist \"['/data/ct.nii.gz']\" (evaluate.json segments a datalist's validation fold)"
            )
        if not os.path.isfile(image):
            raise DataError(f"{image}: image file not found (listed in --datalist)")
        if is_nifti(image):
            check_image_ndim(image, read_nifti_header(image))
    return images


def inference_root(dataset_dir: str | os.PathLike, datalist: str | os.PathLike | Sequence[str] | None = None) -> str:
    """The folder that ``inference.json``'s saved label maps mirror under ``output_dir``: ``dataset_dir``, or with a
    ``--datalist`` of files, the folder :func:`prediction_root` gives for them (a file outside ``dataset_dir`` would
    otherwise be written beside itself, or above ``output_dir``). Reads no file, so that MONAI Label, which builds the
    postprocessing without running inference, never lists ``dataset_dir``."""
    if datalist is None:
        return os.fspath(dataset_dir)
    return prediction_root([{"image": os.fspath(f)} for f in _listed_files(datalist)], dataset_dir)


def _listed_files(datalist: str | os.PathLike | Sequence[str]) -> list[Any]:
    """Inference's ``--datalist`` as a list: one file, or the files listed."""
    return [datalist] if isinstance(datalist, (str, os.PathLike)) else list(datalist)


def check_training_setup(
    loss_function: Callable[..., Any],
    train_data: Sequence[dict[str, Any]],
    val_data: Sequence[dict[str, Any]],
    patch_size: Sequence[int] | None = None,
    crop: Sequence[Callable[..., Any]] | None = None,
    epochs: int | None = None,
    iterations_per_epoch: int | None = None,
    num_classes: int | None = None,
    labels: Mapping[str, str] | None = None,
    world_size: int = 1,
    loss: Any = None,
) -> dict[str, Any]:
    """Check and log what a training run is about to use; called from ``initialize``.

    Referencing the loss, the two data lists and the patch sampling here resolves them, so any error in them (a wrong
    ``--patch_sampling``, say) is raised before the data are cached or the first iteration runs.

    Args:
        loss_function: the resolved loss.
        train_data: the training cases.
        val_data: the validation cases.
        patch_size: the training patch size (logged; checked to be positive integers).
        crop: the transforms that cut the training patch (:func:`~monai_mixedfocal.bundle.patch_sampling`; logged).
        epochs: the number of epochs (checked to be a positive integer).
        iterations_per_epoch: the iterations of one epoch (checked to be a positive integer: with 0, MONAI's trainer
            skips the run with a warning, and the command ends "successfully" without a model).
        num_classes: the network's output channels, one per class (checked against ``labels``: with fewer, the run
            failed at its first loss call, after every case had been cached; with more, its evaluation failed after
            inferring every case, since the metrics name one class per channel).
        labels: the label values of the data set and their names, e.g. :data:`~monai_mixedfocal.data.KITS19_LABELS`.
        world_size: the number of processes of a ``torchrun`` run (``multi_gpu_train.json``); each one validates at
            least one case (MONAI's ``DistributedSampler`` failed after every case had been cached).
        loss: the ``loss`` setting (``--loss``), which the run records and resumes by: ``loss_function`` must be
            built from it (:func:`build_loss`). An overridden ``--loss_function`` trained with one loss while the
            run settings, the resume check and the study named another.

    The loss is also called once, without gradients, on a tiny output and class-index label shaped as the training's
    (``[1, num_classes, 4, 4, 4]`` and ``[1, 1, 4, 4, 4]``), so that a loss that cannot take them fails here and not
    after the caching: a ``_target_`` loss without ``to_onehot_y=True``, or a registry loss whose ``--loss_kwargs``
    were given whole and so lost the bundle's ``softmax`` and ``to_onehot_y``.

    Returns:
        A small summary (``loss``, ``train_cases``, ``val_cases``, ``patch_size``, ``crop``), also logged.

    Raises:
        ValueError: an empty case list, a bad patch size, a number of epochs or iterations that is not a positive
            integer, fewer classes than the data set's label values, fewer validation cases than processes, a loss
            that fails on the training's shapes, or a ``loss_function`` not built from ``loss``.
    """
    if loss is not None:
        _check_loss_source(loss, loss_function)
    if len(train_data) == 0:
        raise ValueError("no training cases: check --dataset_dir / --datalist and --fold.")
    if len(val_data) == 0:
        raise ValueError("no validation cases: check --dataset_dir / --datalist and --fold.")
    if len(val_data) < world_size:
        raise ValueError(
            f"{len(val_data)} validation case(s) for {world_size} processes: each process validates at least one case. "
            "Start fewer processes, or give the validation fold more cases (fewer --num_folds)."
        )
    if patch_size is not None:
        sizes = list(patch_size) if isinstance(patch_size, Sequence) and not isinstance(patch_size, str) else []
        if len(sizes) != 3 or not all(is_integer(p) and p >= 1 for p in sizes):  # --patch_size 32: a number
            raise ValueError(f"--patch_size must be three positive integers, got {patch_size!r}.")
    for option, value in (("epochs", epochs), ("iterations_per_epoch", iterations_per_epoch)):
        if value is not None and (not is_integer(value) or value < 1):
            raise ValueError(f"--{option} must be a positive integer, got {value!r}.")
    if num_classes is not None and labels:
        needed = max(int(value) for value in labels) + 1
        if not is_integer(num_classes) or num_classes != needed:
            names = ", ".join(f"{value} {name}" for value, name in sorted(labels.items(), key=lambda kv: int(kv[0])))
            raise ValueError(
                f"--num_classes must be {needed}, one output channel per label value of the data ({names}); "
                f"got {num_classes!r}."
            )
    if num_classes is not None:
        _check_loss_call(loss_function, int(num_classes), named=isinstance(loss, str))
    summary = {
        "loss": type(loss_function).__name__,
        "train_cases": len(train_data),
        "val_cases": len(val_data),
        "patch_size": None if patch_size is None else list(patch_size),
        "crop": None if crop is None else [type(t).__name__ for t in crop],
    }
    logger.info("training setup: %s", summary)
    return summary


def _check_loss_source(loss: Any, loss_function: Callable[..., Any]) -> None:
    """Refuse a ``loss_function`` that :func:`build_loss` did not build from ``loss`` (an overridden one)."""
    built = isinstance(loss_function, loss_class(loss)) if isinstance(loss, str) else loss_function is loss
    if not built:
        named = repr(loss) if isinstance(loss, str) else type(loss).__name__
        raise ValueError(
            f"loss_function is a {type(loss_function).__name__}, not the loss of --loss ({named}); the run records, "
            "resumes and reports its loss by --loss. Give the loss whole to --loss instead of --loss_function: "
            "--loss \"{'_target_': 'monai.losses.DiceCELoss', 'softmax': True, 'to_onehot_y': True}\"."
        )


def _check_loss_call(loss_function: Callable[..., Any], num_classes: int, named: bool = False) -> None:
    """Call a loss on a tiny output and class-index label shaped as the training's; raise what it cannot take.

    ``named``: the loss was built from a registry name with ``--loss_kwargs`` (the message says how to keep the
    bundle's arguments). Under ``torch.no_grad`` the call changes no state (running class weights update in training
    steps only)."""
    buffers = list(loss_function.buffers()) if isinstance(loss_function, torch.nn.Module) else []
    device = buffers[0].device if buffers else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    output = torch.randn(1, num_classes, 4, 4, 4, generator=generator).to(device)
    label = torch.randint(0, num_classes, (1, 1, 4, 4, 4), generator=generator).float().to(device)
    try:
        with torch.no_grad():
            value = loss_function(output, label)
    except Exception as err:  # whatever the user's loss raises: named with the shapes, before any caching
        hint = (
            "--loss_kwargs given whole replaces the bundle's {'softmax': True, 'to_onehot_y': True}: set one argument "
            "with --loss_kwargs#<name> <value>, or give all of them."
            if named
            else "A MONAI loss needs to_onehot_y=True and softmax=True for them."
        )
        raise ValueError(
            f"the loss {type(loss_function).__name__} fails on a network output [1, {num_classes}, 4, 4, 4] and a "
            f"class-index label [1, 1, 4, 4, 4], the shapes of every training step ({type(err).__name__}: {err}). "
            + hint
        ) from err
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = f" of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else ""
        raise ValueError(
            f"the loss {type(loss_function).__name__} returns a {type(value).__name__}{shape}, not a scalar tensor: "
            "set reduction='mean'."
        )


def check_sliding_window(sw_batch_size: int, overlap: float | Sequence[float], spatial_dims: int = 3) -> None:
    """At start, before any case is cached or inferred: the sliding-window settings MONAI's ``SlidingWindowInferer``
    takes without checking (``sw_batch_size=0`` failed at the first validation, after an epoch of training, with
    ``range() arg 3 must not be zero``).

    Args:
        sw_batch_size: windows per network call (``--sw_batch_size``), a positive integer.
        overlap: the windows' overlap (``--sw_overlap``), in [0, 1), one value or one per spatial axis (``[0.5, 0.5]``
            for a 3-D window failed at the first validation, after an epoch of training).
        spatial_dims: the number of spatial axes of the window.

    Raises:
        ValueError: either value out of range; the message names the option.

    Warns:
        UserWarning: an overlap that infers every voxel more than :data:`MAX_WINDOW_REPEATS` times (over 0.75 on each
            axis of a 3-D window): legal, but hours instead of minutes.
    """
    if not is_integer(sw_batch_size) or sw_batch_size < 1:
        raise ValueError(f"--sw_batch_size must be a positive integer, got {sw_batch_size!r}.")
    values = list(overlap) if isinstance(overlap, Sequence) and not isinstance(overlap, str) else [overlap]
    if len(values) not in (1, spatial_dims) or not all(is_number(v) and 0 <= v < 1 for v in values):
        raise ValueError(
            f"--sw_overlap must be in [0, 1) (one value, or one per axis: {spatial_dims}), got {overlap!r}."
        )
    per_axis = values * spatial_dims if len(values) == 1 else values
    repeats = math.prod(1 / (1 - v) for v in per_axis)
    if repeats > MAX_WINDOW_REPEATS:
        warnings.warn(
            f"--sw_overlap {overlap!r}: every voxel is inferred about {repeats:,.0f} times (1 / (1 - overlap) per "
            f"axis; {2**spatial_dims} times with the default 0.5), so sliding-window inference takes about "
            f"{repeats / 2**spatial_dims:,.0f} times as long as with the default.",
            stacklevel=2,
        )
