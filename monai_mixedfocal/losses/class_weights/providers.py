# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The class-weight providers: fixed weights, the effective number of samples (Cui et al. 2019) and running label
frequencies, behind one small interface (:class:`ClassWeights`), and :func:`make_class_weights`, which builds one from
a loss's ``class_weights`` argument.

Reference:
    Cui Y, Jia M, Lin T-Y, Song Y, Belongie S. "Class-Balanced Loss Based on Effective Number of Samples". CVPR 2019.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_mixedfocal.losses.class_weights.label_counts import CACHE_SUFFIX, cached_label_counts, datalist_label_files
from monai_mixedfocal.utils import is_integer

__all__ = [
    "ClassWeights",
    "ClassWeightsState",
    "EffectiveNumberWeights",
    "FixedClassWeights",
    "RunningClassWeights",
    "class_weight_vector",
    "effective_number_weights",
    "make_class_weights",
    "target_counts",
]


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


def target_counts(target: torch.Tensor, num_classes: int) -> torch.Tensor:
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

        if not is_integer(num_classes) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}.")
        files = datalist_label_files(datalist, fold, base_dir, label_key)
        if not files:
            raise DataError(f"{datalist}: no training cases to count labels from")
        cache_path: Path | None = None
        if cache is True and isinstance(datalist, (str, os.PathLike)):
            cache_path = Path(f"{datalist}{CACHE_SUFFIX}")
        elif cache not in (True, False, None):
            cache_path = Path(cache)  # type: ignore[arg-type]
        counts = cached_label_counts(files, num_classes, cache_path)
        return cls(counts, beta)


class RunningClassWeights(ClassWeights):
    """Class weights from an exponential moving average of the label frequencies seen in training.

    After each training batch: ``f <- momentum * f + (1 - momentum) * f_batch`` (``f`` is initialised with the first
    batch's frequencies), and ``w_c = (f_c + eps) ** -power`` normalised to sum to ``C``. ``power = 1`` is inverse
    frequency, ``0.5`` its square root (milder), ``0`` equal weights. Before the first update the weights are unknown
    (the losses use 1 for every class). A class with frequency 0 (not seen yet, e.g. a tumour absent from the first
    patches) weighs as the rarest class seen: with ``eps`` alone it had ``1e6`` times the weight of the others, and
    the classes present got almost no gradient.

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
        if not math.isfinite(float(power)) or not float(power) >= 0.0:
            raise ValueError(f"power must be a finite number >= 0; got {power}.")
        if not math.isfinite(float(eps)) or not float(eps) > 0.0:
            raise ValueError(f"eps must be a finite number > 0; got {eps}.")
        self.momentum, self.power, self.eps = float(momentum), float(power), float(eps)
        self.num_classes = num_classes
        self.frequency: torch.Tensor | None = None
        self.num_updates = 0

    def update(self, target: torch.Tensor, num_classes: int) -> None:
        if self.num_classes is None:
            self.num_classes = int(num_classes)
        elif self.num_classes != num_classes:
            raise ValueError(f"RunningClassWeights was set up for {self.num_classes} classes; got {num_classes}.")
        counts = target_counts(target, self.num_classes)
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
        log_raw = -self.power * torch.log(self.frequency + self.eps)  # in logs: power = 1000 overflowed float64
        seen = self.frequency > 0
        if seen.any():  # a class not seen yet weighs as the rarest class seen (with eps alone: 1e6 times the others)
            log_raw = torch.where(seen, log_raw, log_raw[seen].max())
        raw = torch.exp(log_raw - log_raw.max())
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
