# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Class weights that adapt to the data by themselves: effective number of samples and running label frequencies.

Three providers share one small interface (:class:`ClassWeights`: ``weights()``, ``update(target, num_classes)``,
``state_dict()``/``load_state_dict()``):

- :class:`FixedClassWeights`: a given sequence.
- :class:`EffectiveNumberWeights` (Cui et al. 2019): ``w_c = (1 - beta) / (1 - beta ** n_c)``, normalised to sum to
  ``C``, from the label voxel counts ``n_c`` of the training datalist, counted once with nibabel and cached in a JSON
  file beside the datalist.
- :class:`RunningClassWeights`: ``w_c ∝ (f_c + eps) ** -power``, normalised to sum to ``C``, from an exponential moving
  average ``f_c`` of the label frequencies of the training batches (updated by the loss itself in training mode).

The losses of this package that take ``class_weights`` (:class:`~monai_mixedfocal.losses.SigmoidFocalLoss`,
:class:`~monai_mixedfocal.losses.Poly1Loss`, :class:`~monai_mixedfocal.losses.UnifiedFocalLoss`) accept a sequence,
``"effective_number"``, ``"running"`` or a provider; :class:`ClassWeightedLoss` sets the per-class ``alpha`` of any
loss built on :class:`~monai_mixedfocal.losses.CategoricalFocalLoss` (``focal``, ``mixed_focal``) at every step; and
:class:`ClassWeightsLogger` is an Ignite handler that writes the current weights to the training log every epoch.

Reference:
    Cui Y, Jia M, Lin T-Y, Song Y, Belongie S. "Class-Balanced Loss Based on Effective Number of Samples". CVPR 2019.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.modules.loss import _Loss

__all__ = [
    "ClassWeightedLoss",
    "ClassWeights",
    "ClassWeightsLogger",
    "ClassWeightsState",
    "EffectiveNumberWeights",
    "FixedClassWeights",
    "RunningClassWeights",
    "class_weight_vector",
    "count_label_voxels",
    "effective_number_weights",
    "make_class_weights",
    "step_class_weights",
]

CACHE_SUFFIX = ".label_counts.json"
"""Suffix of the label-count cache written beside a datalist JSON (``datalist.json.label_counts.json``)."""


def _normalise(weights: np.ndarray) -> np.ndarray:
    """Scale positive weights so that they sum to their number (Cui et al.: ``sum_c w_c = C``)."""
    return weights * (len(weights) / weights.sum())


def effective_number_weights(counts: Sequence[float] | np.ndarray, beta: float = 0.9999) -> np.ndarray:
    """Class-balanced weights from the effective number of samples (Cui et al. 2019, Eq. 4 and Section 4).

    ``E_n = (1 - beta ** n) / (1 - beta)`` and ``w_c = 1 / E_{n_c} = (1 - beta) / (1 - beta ** n_c)``, normalised to
    sum to ``C``. ``beta = 0`` gives equal weights, ``beta -> 1`` inverse frequency. Computed in float64 as
    ``(1 - beta) / -expm1(n * log(beta))`` so that ``beta`` close to 1 and counts of 1e9 voxels stay exact.

    Note that ``E_n <= 1 / (1 - beta)``: with ``beta = 0.9999`` every class with more than ~1e5 voxels gets nearly the
    same weight. For voxel counts choose ``beta`` close to ``1 - 1 / N`` (``N`` the total count), e.g. ``1 - 1e-8``.

    Args:
        counts: number of samples (voxels) of each class, all ``>= 1``.
        beta: the hyper-parameter in ``[0, 1)``.

    Returns:
        the weights, float64, shape ``[C]``, summing to ``C``.

    Raises:
        ValueError: for ``beta`` outside ``[0, 1)``, an empty, negative or non-finite count, or a class with no sample
            (its weight would be infinite; check ``num_classes`` and the label maps).

    Example:
        >>> effective_number_weights([1000, 10], beta=0.99).round(4).tolist()
        [0.1746, 1.8254]
    """
    if not 0.0 <= float(beta) < 1.0:
        raise ValueError(f"beta must lie in [0, 1); got {beta}.")
    n = np.asarray(counts, dtype=np.float64).ravel()
    if n.size == 0 or not np.isfinite(n).all() or (n < 0).any():
        raise ValueError(f"counts must be a non-empty sequence of finite numbers >= 0; got {n.tolist()}.")
    if (n == 0).any():
        missing = np.flatnonzero(n == 0).tolist()
        raise ValueError(
            f"class(es) {missing} have no labelled voxel, so their effective-number weight is infinite; "
            f"check num_classes ({n.size}) and the label maps."
        )
    if beta == 0.0:
        return np.ones_like(n)
    return _normalise((1.0 - beta) / -np.expm1(n * np.log(beta)))


def count_label_voxels(label_files: Sequence[str | os.PathLike], num_classes: int) -> np.ndarray:
    """Count the voxels of every class over a list of NIfTI label maps (read with nibabel, one at a time).

    Args:
        label_files: label map files holding integer class indices.
        num_classes: the number of classes ``C``; every value must lie in ``[0, C)``.

    Returns:
        the counts, int64, shape ``[C]``.

    Raises:
        monai_mixedfocal.data.errors.DataError: a file is missing or corrupt, holds fractional values or values outside
            ``[0, C)`` (the message names the file and the values).
    """
    from monai_mixedfocal.data.errors import DataError
    from monai_mixedfocal.data.io import load_array

    counts = np.zeros(num_classes, dtype=np.int64)
    for path in label_files:
        array = np.asarray(load_array(path))
        if not np.issubdtype(array.dtype, np.integer):
            if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
                raise DataError(f"{path}: a label map must hold integer class indices; found fractional values")
            array = array.astype(np.int64)
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= num_classes:
            raise DataError(
                f"{path}: label values must lie in [0, {num_classes - 1}] for num_classes={num_classes}; "
                f"found values in [{low}, {high}]"
            )
        counts += np.bincount(array.ravel().astype(np.int64), minlength=num_classes)
    return counts


def _target_counts(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Voxel count of each class in a batch target: indices ``[B, 1, *spatial]`` or one-hot ``[B, C, *spatial]``."""
    if type(target) is not torch.Tensor:  # e.g. MONAI's MetaTensor: no batch metadata travels into the weights
        target = target.as_subclass(torch.Tensor)
    with torch.no_grad():
        if (target.shape[1] == num_classes and num_classes > 1) or num_classes == 1:
            return target.detach().double().transpose(0, 1).reshape(target.shape[1], -1).sum(1).cpu()
        if target.shape[1] != 1:
            raise ValueError(
                f"cannot count classes: the target has {target.shape[1]} channels; expected class indices "
                f"[B, 1, *spatial] or one channel per class ({num_classes})."
            )
        labels = target.detach().long().flatten().cpu()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"target class indices must lie in [0, {num_classes - 1}]; "
                f"got values in [{int(labels.min())}, {int(labels.max())}]."
            )
        return torch.bincount(labels, minlength=num_classes).double()


class ClassWeights:
    """Interface of a class-weight provider: one weight per class (all channels, background included)."""

    #: short name used in the training log
    name = "class_weights"

    def weights(self) -> torch.Tensor | None:
        """The current weights (float64, ``[C]``), or ``None`` while they are unknown (all weights are then 1)."""
        raise NotImplementedError

    def update(self, target: torch.Tensor, num_classes: int) -> None:
        """Update from the target of one training batch (a no-op for static weights)."""

    def state_dict(self) -> dict[str, Any]:
        """The state to checkpoint (Ignite ``Checkpoint`` accepts any object with ``state_dict``)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def __repr__(self) -> str:
        values = self.weights()
        shown = "unknown" if values is None else [round(v, 4) for v in values.tolist()]
        return f"{type(self).__name__}({shown})"


class ClassWeightsState:
    """Mixin for a ``torch.nn.Module`` with a ``class_weights`` provider: the provider's state is part of the module's
    own ``state_dict()`` (its ``_extra_state`` entry), so that saving and loading the loss, e.g. MONAI's
    ``CheckpointSaver`` / ``CheckpointLoader`` with ``save_dict={"loss": loss}``, keeps running class statistics."""

    class_weights: ClassWeights | None

    def get_extra_state(self) -> dict[str, Any]:
        """The provider's :meth:`ClassWeights.state_dict` (empty without a provider)."""
        return {} if self.class_weights is None else {"class_weights": self.class_weights.state_dict()}

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`get_extra_state`."""
        if self.class_weights is not None and "class_weights" in state:
            self.class_weights.load_state_dict(state["class_weights"])


class FixedClassWeights(ClassWeights):
    """A fixed weight per class.

    Args:
        values: one non-negative, finite weight per class.

    Raises:
        ValueError: for an empty sequence or a negative / non-finite weight.
    """

    name = "fixed"

    def __init__(self, values: Sequence[float]) -> None:
        tensor = torch.as_tensor(values, dtype=torch.float64).flatten()
        if tensor.numel() == 0 or not torch.isfinite(tensor).all() or (tensor < 0).any():
            raise ValueError(f"class weights must be a non-empty sequence of finite numbers >= 0; got {values!r}.")
        self._values = tensor

    def weights(self) -> torch.Tensor:
        return self._values.clone()


class EffectiveNumberWeights(ClassWeights):
    """Class-balanced weights from the effective number of samples of each class (Cui et al. 2019).

    Args:
        counts: labelled voxels (or samples) of each class.
        beta: the hyper-parameter in ``[0, 1)``; see :func:`effective_number_weights` for its choice with voxel counts.

    Raises:
        ValueError: see :func:`effective_number_weights`.

    Example:
        >>> w = EffectiveNumberWeights.from_datalist("datalist.json", num_classes=3, fold=0)  # doctest: +SKIP
        >>> EffectiveNumberWeights([1000, 10], beta=0.99).weights().round(decimals=4).tolist()
        [0.1746, 1.8254]
    """

    name = "effective_number"

    def __init__(self, counts: Sequence[float] | np.ndarray, beta: float = 0.9999) -> None:
        self.counts = np.asarray(counts, dtype=np.float64).ravel()
        self.beta = float(beta)
        self._values = torch.from_numpy(effective_number_weights(self.counts, self.beta))

    def weights(self) -> torch.Tensor:
        return self._values.clone()

    def state_dict(self) -> dict[str, Any]:
        return {"counts": self.counts.tolist(), "beta": self.beta}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.__init__(state["counts"], state["beta"])  # type: ignore[misc]

    @classmethod
    def from_datalist(
        cls,
        datalist: str | os.PathLike | Sequence[Mapping[str, Any] | str | os.PathLike],
        num_classes: int,
        beta: float = 0.9999,
        fold: int | None = None,
        base_dir: str | os.PathLike | None = None,
        label_key: str = "label",
        cache: bool | str | os.PathLike = True,
    ) -> EffectiveNumberWeights:
        """Count the label voxels of the training cases of a datalist once, cache the counts, and build the weights.

        Args:
            datalist: a datalist JSON of this package (``{"training": [{"label": ..., "fold": ...}]}``), or a list of
                case dicts with a ``label_key`` path, or a list of label files.
            num_classes: the number of classes ``C`` (background included).
            beta: the effective-number hyper-parameter in ``[0, 1)``.
            fold: for a JSON datalist, the validation fold to leave out (the training cases of that fold are counted);
                ``None`` counts every case.
            base_dir: the root relative paths are resolved against (a JSON datalist defaults to its ``dataset_root``).
            label_key: the key of the label path in a case dict.
            cache: ``True``: for a JSON datalist, keep the counts in ``<datalist>.label_counts.json`` beside it
                (reused while the label files, their sizes and modification times are unchanged; an unreadable cache
                or a malformed entry is counted again and rewritten); a path: that cache file; ``False``: no cache.

        Returns:
            the weights.

        Raises:
            monai_mixedfocal.data.errors.DataError: a missing or malformed datalist, a case without ``label_key``, a
                missing or corrupt label file, or label values outside ``[0, C)``.
            ValueError: a class without any voxel, or ``beta`` outside ``[0, 1)``.
        """
        from monai_mixedfocal.data.errors import DataError
        from monai_mixedfocal.data.io import atomic_write_json

        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}.")
        files = _label_files(datalist, fold, base_dir, label_key)
        if not files:
            raise DataError(f"{datalist}: no training cases to count labels from")
        cache_path: Path | None = None
        if cache is True and isinstance(datalist, (str, os.PathLike)):
            cache_path = Path(f"{datalist}{CACHE_SUFFIX}")
        elif cache not in (True, False, None):
            cache_path = Path(cache)  # type: ignore[arg-type]
        key = _cache_key(files, num_classes)
        entries: dict[str, Any] = {}
        if cache_path is not None and cache_path.is_file():
            try:
                entries = json.loads(cache_path.read_text(encoding="utf-8")).get("entries", {})
            except (OSError, ValueError, AttributeError):
                entries = {}  # an unreadable cache is recomputed and rewritten
            if not isinstance(entries, dict):
                entries = {}
        counts = _cached_counts(entries.get(key), num_classes)
        if counts is None:  # not cached, or a malformed entry: counted again, and the entry rewritten
            counts = count_label_voxels(files, num_classes).astype(np.float64)
            if cache_path is not None:
                entries[key] = {"num_classes": num_classes, "num_files": len(files), "counts": counts.tolist()}
                atomic_write_json(cache_path, {"entries": entries})
        return cls(counts, beta)


def _cached_counts(entry: Any, num_classes: int) -> np.ndarray | None:
    """The voxel counts of a label-count cache entry, or ``None`` for a missing or malformed entry.

    Args:
        entry: the entry of the cache file (``{"counts": [...], ...}``), or ``None``.
        num_classes: the number of classes the counts must have.

    Returns:
        The ``num_classes`` counts, or ``None`` when the entry is missing, is not a mapping, has no ``"counts"``, or
        its counts are not ``num_classes`` finite, non-negative numbers (the caller counts the voxels again, as for an
        unreadable cache file).
    """
    if not isinstance(entry, Mapping):
        return None
    try:
        counts = np.asarray(entry["counts"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return None
    if counts.shape != (num_classes,) or not np.isfinite(counts).all() or (counts < 0).any():
        return None
    return counts


def _label_files(
    datalist: str | os.PathLike | Sequence[Mapping[str, Any] | str | os.PathLike],
    fold: int | None,
    base_dir: str | os.PathLike | None,
    label_key: str,
) -> list[str]:
    """The label files of the training cases of a datalist (see :meth:`EffectiveNumberWeights.from_datalist`)."""
    from monai_mixedfocal.data.datalist import split_datalist
    from monai_mixedfocal.data.errors import DataError

    if isinstance(datalist, (str, os.PathLike)):
        train, val = split_datalist(datalist, 0 if fold is None else fold, base_dir)
        cases: list[Any] = train + val if fold is None else train
    else:
        cases = list(datalist)
    files = []
    for index, case in enumerate(cases):
        if isinstance(case, Mapping):
            if label_key not in case:
                raise DataError(f"{datalist}: case {index} ({case.get('case', '?')}) has no {label_key!r} entry")
            case = case[label_key]
        path = Path(case)
        if base_dir is not None and not path.is_absolute() and not isinstance(datalist, (str, os.PathLike)):
            path = Path(base_dir) / path
        files.append(str(path))
    return files


def _cache_key(files: Sequence[str], num_classes: int) -> str:
    """A digest of the class count and of every label file's path, size and modification time."""
    digest = hashlib.sha256(str(num_classes).encode())
    for name in files:
        try:
            stat = os.stat(name)
            digest.update(f"{os.path.abspath(name)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{name}|missing\n".encode())  # counting will raise a clear error
    return digest.hexdigest()


class RunningClassWeights(ClassWeights):
    """Class weights from an exponential moving average of the label frequencies seen in training.

    After each training batch: ``f <- momentum * f + (1 - momentum) * f_batch`` (``f`` is initialised with the first
    batch's frequencies), and ``w_c = (f_c + eps) ** -power`` normalised to sum to ``C``. ``power = 1`` is inverse
    frequency, ``0.5`` its square root (milder), ``0`` equal weights. Before the first update the weights are unknown
    (the losses use 1 for every class).

    Args:
        momentum: the EMA momentum in ``[0, 1)`` (0: the last batch only).
        power: the exponent of the inverse frequency, ``>= 0``.
        eps: added to the frequencies, ``> 0`` (bounds the weight of a class not seen yet).
        num_classes: the number of classes, or ``None`` to take it from the first update.

    Raises:
        ValueError: for an argument out of range.

    Example:
        >>> import torch
        >>> running = RunningClassWeights(momentum=0.9)
        >>> running.update(torch.tensor([[[0, 0, 0, 1]]]), num_classes=2)
        >>> running.weights().round(decimals=4).tolist()  # frequencies 0.75 and 0.25
        [0.5, 1.5]
    """

    name = "running"

    def __init__(
        self, momentum: float = 0.9, power: float = 1.0, eps: float = 1e-6, num_classes: int | None = None
    ) -> None:
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must lie in [0, 1); got {momentum}.")
        if not float(power) >= 0.0:
            raise ValueError(f"power must be >= 0; got {power}.")
        if not float(eps) > 0.0:
            raise ValueError(f"eps must be > 0; got {eps}.")
        self.momentum, self.power, self.eps = float(momentum), float(power), float(eps)
        self.num_classes = num_classes
        self.frequency: torch.Tensor | None = None
        self.num_updates = 0

    def update(self, target: torch.Tensor, num_classes: int) -> None:
        if self.num_classes is None:
            self.num_classes = int(num_classes)
        elif self.num_classes != num_classes:
            raise ValueError(f"RunningClassWeights was set up for {self.num_classes} classes; got {num_classes}.")
        counts = _target_counts(target, self.num_classes)
        total = counts.sum()
        if total <= 0:
            return
        batch = counts / total
        self.frequency = (
            batch if self.frequency is None else self.momentum * self.frequency + (1.0 - self.momentum) * batch
        )
        self.num_updates += 1

    def weights(self) -> torch.Tensor | None:
        if self.frequency is None:
            return None
        raw = (self.frequency + self.eps) ** -self.power
        return raw * (raw.numel() / raw.sum())

    def state_dict(self) -> dict[str, Any]:
        return {
            "frequency": None if self.frequency is None else self.frequency.tolist(),
            "num_updates": self.num_updates,
            "num_classes": self.num_classes,
            "momentum": self.momentum,
            "power": self.power,
            "eps": self.eps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.momentum = float(state.get("momentum", self.momentum))
        self.power = float(state.get("power", self.power))
        self.eps = float(state.get("eps", self.eps))
        freq = state.get("frequency")
        self.frequency = None if freq is None else torch.tensor(freq, dtype=torch.float64)
        self.num_updates = int(state.get("num_updates", 0))
        self.num_classes = state.get("num_classes")


def make_class_weights(
    spec: str | Sequence[float] | ClassWeights | None, options: Mapping[str, Any] | None = None
) -> ClassWeights | None:
    """Build a provider from a loss's ``class_weights`` argument.

    Args:
        spec: ``None``; a sequence of weights; ``"running"`` (options: ``momentum``, ``power``, ``eps``,
            ``num_classes``); ``"effective_number"`` (options: those of :meth:`EffectiveNumberWeights.from_datalist`,
            ``datalist`` and ``num_classes`` required); or a :class:`ClassWeights` instance (used as is).
        options: the keyword arguments of the provider.

    Returns:
        the provider, or ``None``.

    Raises:
        ValueError: for an unknown name, or ``"effective_number"`` without ``datalist``/``num_classes``.
        TypeError: for options the provider does not take.
    """
    options = dict(options or {})
    if spec is None or isinstance(spec, ClassWeights):
        if options:
            raise ValueError(f"class_weight_options {sorted(options)} given without a class_weights name.")
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower().replace("-", "_")
        if key == "running":
            return RunningClassWeights(**options)
        if key == "effective_number":
            missing = [name for name in ("datalist", "num_classes") if name not in options]
            if missing:
                raise ValueError(
                    f'class_weights="effective_number" needs class_weight_options with {missing} (the training '
                    "datalist and the number of classes), or pass EffectiveNumberWeights.from_datalist(...) itself."
                )
            return EffectiveNumberWeights.from_datalist(**options)
        raise ValueError(f'unknown class_weights {spec!r}; expected a sequence, "effective_number" or "running".')
    return FixedClassWeights(spec)


def class_weight_vector(
    provider: ClassWeights | None, num_channels: int, kept: slice, like: torch.Tensor
) -> torch.Tensor | None:
    """The weights of the kept channels as a tensor like ``like``, or ``None`` when there are none (yet).

    Raises:
        ValueError: if the provider has a different number of weights than the network has channels.
    """
    if provider is None:
        return None
    values = provider.weights()
    if values is None:
        return None
    if values.numel() != num_channels:
        raise ValueError(
            f"{provider.name} class weights have {values.numel()} entries but the network output has {num_channels} "
            "channels; give one weight per channel, background included."
        )
    return values[kept].to(dtype=like.dtype, device=like.device)


def _is_training_step(module: torch.nn.Module) -> bool:
    """Update running statistics only in training mode with gradients on (an Ignite evaluator runs in no_grad)."""
    return module.training and torch.is_grad_enabled()


def step_class_weights(
    module: torch.nn.Module,
    provider: ClassWeights | None,
    target: torch.Tensor,
    num_channels: int,
    kept: slice,
    like: torch.Tensor,
) -> torch.Tensor | None:
    """Update ``provider`` from ``target`` in a training step of ``module``, then return the kept channels' weights.

    Args:
        module: the loss (its ``training`` flag and the grad mode decide whether running weights are updated).
        provider: the class-weight provider, or ``None``.
        target: the batch target as given to the loss.
        num_channels: the number of network output channels (classes, background included).
        kept: the channels the loss keeps (``include_background``).
        like: a tensor whose dtype and device the weights take.

    Returns:
        the weights of the kept channels, or ``None`` (no provider, or running weights before the first update).
    """
    if provider is not None and _is_training_step(module):
        provider.update(target, num_channels)
    return class_weight_vector(provider, num_channels, kept, like)


class ClassWeightedLoss(ClassWeightsState, _Loss):
    """Set the per-class ``alpha`` of every :class:`~monai_mixedfocal.losses.CategoricalFocalLoss` inside a loss
    from a class-weight provider, at every step (updating the provider first in training steps).

    The new ``alpha`` is the loss's own ``alpha`` (a scalar scale such as the paper's 0.25, or a per-class vector)
    times the class weights, so ``focal`` and ``mixed_focal`` keep their presets. With ``include_background=False`` the
    background weight is dropped. Running weights are updated only in training mode with gradients enabled
    (validation under ``torch.no_grad`` does not change them).

    With deep supervision wrap the deep-supervision loss, ``ClassWeightedLoss(DeepSupervisionLoss(loss), ...)``:
    the weights are then updated once per step from the full-resolution target. The other order,
    ``DeepSupervisionLoss(ClassWeightedLoss(loss, ...))``, updates running weights once per output level, from the
    down-sampled targets too (with 3 levels a momentum of 0.9 acts like 0.9 ** 3 per step).

    Args:
        loss: a loss containing at least one :class:`~monai_mixedfocal.losses.CategoricalFocalLoss` (itself,
            :class:`~monai_mixedfocal.losses.MixedFocalLoss`, ``DeepSupervisionLoss`` around one, ...).
        class_weights: see :func:`make_class_weights`.
        class_weight_options: the provider's keyword arguments.

    Raises:
        TypeError: if ``loss`` has no ``CategoricalFocalLoss`` inside.

    Example:
        >>> from monai_mixedfocal.losses import get_loss
        >>> loss = ClassWeightedLoss(get_loss("mixed_focal", softmax=True, to_onehot_y=True), "running")
    """

    def __init__(
        self,
        loss: torch.nn.Module,
        class_weights: str | Sequence[float] | ClassWeights,
        class_weight_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from monai_mixedfocal.losses.distribution import CategoricalFocalLoss

        self.loss = loss
        self._targets = [m for m in loss.modules() if isinstance(m, CategoricalFocalLoss)]
        if not self._targets:
            raise TypeError(
                f"ClassWeightedLoss needs a loss with a CategoricalFocalLoss inside; got {type(loss).__name__}. "
                "SigmoidFocalLoss, Poly1Loss and UnifiedFocalLoss take class_weights directly."
            )
        self._base_alpha = [m.alpha for m in self._targets]
        self.class_weights = make_class_weights(class_weights, class_weight_options)

    def forward(self, input: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Update the weights (training), set ``alpha`` on the focal parts, and return ``loss(input, target)``.

        Args:
            input: the network output ``[B, C, *spatial]``, or the list of outputs of a deep-supervision loss (e.g.
                ``ClassWeightedLoss(monai.losses.DeepSupervisionLoss(loss), ...)``); the weights are updated once per
                step, from ``target``.
            target: the target the wrapped loss takes.
        """
        first = input[0] if isinstance(input, (list, tuple)) and input else input
        if not isinstance(first, torch.Tensor):
            raise TypeError(f"ClassWeightedLoss expects a tensor or a list of tensors; got {type(input).__name__}.")
        num_channels = first.shape[1]
        if self.class_weights is not None and _is_training_step(self):
            self.class_weights.update(target, num_channels)
        values = None if self.class_weights is None else self.class_weights.weights()
        for module, base in zip(self._targets, self._base_alpha):
            if values is None:
                module.alpha = base
                continue
            drop = not module.include_background and num_channels > 1
            kept = class_weight_vector(self.class_weights, num_channels, slice(1 if drop else 0, None), values)
            scale = torch.as_tensor(base, dtype=torch.float64)
            module.alpha = tuple((scale * kept).tolist())
        return self.loss(input, target)


class ClassWeightsLogger:
    """Ignite handler: write the current class weights to the training log at the end of every epoch.

    Usable from a bundle config: ``{"_target_": "monai_mixedfocal.losses.class_weights.ClassWeightsLogger",
    "source": "@loss"}`` in ``train_handlers`` (MONAI workflows call :meth:`attach`).

    Args:
        source: a loss with a ``class_weights`` provider (this package's losses, :class:`ClassWeightedLoss`) or a
            provider itself.
        tag: the name in the log and the TensorBoard tag prefix.
        logger: the logger to write to (default: ``engine.logger``).
        summary_writer: an optional ``SummaryWriter``; one scalar ``{tag}/{class}`` per class per epoch.
        class_names: optional names for the classes in the log.

    Raises:
        TypeError: if ``source`` has no class-weight provider.
    """

    def __init__(
        self,
        source: Any,
        tag: str = "class_weights",
        logger: logging.Logger | None = None,
        summary_writer: Any | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        provider = source if isinstance(source, ClassWeights) else getattr(source, "class_weights", None)
        if not isinstance(provider, ClassWeights):
            raise TypeError(
                f"ClassWeightsLogger needs a loss with a class_weights provider or a ClassWeights; got "
                f"{type(source).__name__} (did you pass class_weights to the loss?)."
            )
        self.provider = provider
        self.tag = tag
        self.logger = logger
        self.summary_writer = summary_writer
        self.class_names = list(class_names) if class_names is not None else None
        #: ``(epoch, weights)`` of every logged epoch
        self.history: list[tuple[int, list[float] | None]] = []

    def attach(self, engine: Any) -> None:
        """Log at every ``Events.EPOCH_COMPLETED`` of ``engine``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        epoch = int(engine.state.epoch)
        values = self.provider.weights()
        shown = None if values is None else [float(v) for v in values.tolist()]
        self.history.append((epoch, shown))
        names = self.class_names or [str(c) for c in range(len(shown or []))]
        text = "unknown yet" if shown is None else ", ".join(f"{n}={v:.4g}" for n, v in zip(names, shown))
        (self.logger or engine.logger).info(f"Epoch {epoch} {self.tag} ({self.provider.name}): {text}")
        if self.summary_writer is not None and shown is not None:
            for name, value in zip(names, shown):
                self.summary_writer.add_scalar(f"{self.tag}/{name}", value, epoch)
