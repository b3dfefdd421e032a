# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The base class of every loss: MONAI's common arguments, their validation, and the reductions.

Reduction conventions (see ``docs/losses.md``):

- region terms (Dice / Tversky family), one value per image and class ``[B, K]`` (``[K]`` with ``batch=True``):
  ``"none"`` keeps them, shaped ``[B, K, 1, ...]`` like ``monai.losses.DiceLoss``; ``"mean"`` averages over images and
  classes (the authors' code); ``"sum"`` sums them (the class sums printed in the paper, summed over the batch).
- pixel-wise terms, one value per voxel and class: ``"none"`` keeps them ``[B, K, *spatial]``; ``"mean"`` sums over
  classes and averages over voxels and images (the authors' ``K.mean(K.sum(ce, axis=-1))``); ``"sum"`` sums over
  classes, averages over the voxels of each image and sums over images.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_mixedfocal.losses._fused import FusedStatistics, checked_loss
from monai_mixedfocal.losses._fused_loss import fused_loss
from monai_mixedfocal.losses._terms import Prepared, plain_tensor, prepare

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn with the location of the first caller outside this package and ``torch`` (e.g. the user's ``loss(x, y)``).

    ``forward`` is reached through ``nn.Module.__call__``, so a fixed ``stacklevel=2`` would point into torch.
    """
    # the folders with a trailing separator, so that ``torchvision/`` is not taken for ``torch/``
    skipped = (os.path.join(_PACKAGE_DIR, ""), os.path.join(_TORCH_DIR, ""))
    level, frame = 1, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(skipped):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level + 1)


def as_number(name: str, value: object) -> float:
    """``value`` as a float; ``TypeError`` unless it is a real number (a bool, a string such as ``"0.5"`` or a list
    is refused: ``float()`` would take some of them silently, ``delta=False`` as 0, or fail with Python's own words).
    NumPy scalars and 0-d tensors are numbers."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and value.is_floating_point():
        return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number; got {value!r} ({type(value).__name__}).")
    return float(value)


def check_unit_interval(name: str, value: float | None) -> None:
    """Raise ``ValueError`` unless ``value`` is ``None`` or a number in ``[0, 1]`` (``TypeError`` if not a number)."""
    if value is not None and not 0.0 <= as_number(name, value) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1]; got {value}.")


def check_finite(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number (not NaN or infinite; ``TypeError`` if not a number)."""
    if not math.isfinite(as_number(name, value)):
        raise ValueError(f"{name} must be a finite number; got {value}.")


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is finite and ``> 0`` (or ``>= 0`` with ``allow_zero``)."""
    check_finite(name, value)
    if not (value >= 0.0 if allow_zero else value > 0.0):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}; got {value}.")


def check_index_at_most_one(loss: SegmentationLoss) -> None:
    """Raise ``ValueError`` when ``loss.smooth_nr > loss.smooth_dr``: the Tversky index could then exceed 1, and a
    loss that raises ``1 - index`` (or the cosine of the index) to a fractional power has no real value there."""
    if loss.smooth_nr > loss.smooth_dr:
        raise ValueError(
            f"{type(loss).__name__} needs smooth_nr <= smooth_dr (got {loss.smooth_nr} > {loss.smooth_dr}): with a "
            "larger numerator term the Tversky index exceeds 1 where a class is absent, so its power is not real."
        )


def alpha_weights(alpha: float | Sequence[float]) -> float | torch.Tensor:
    """Validate ``alpha``: a non-negative scalar, or a sequence of non-negative per-class weights (as a tensor)."""
    if isinstance(alpha, (numbers.Real, str)) or (isinstance(alpha, torch.Tensor) and alpha.ndim == 0):
        check_positive("alpha", alpha, allow_zero=True)  # also NumPy and 0-d tensor scalars; a bool or text refused
        return float(alpha)
    try:
        values = torch.as_tensor(alpha, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"alpha must be a number or a sequence of numbers (one per class); got {alpha!r}.") from err
    if values.ndim != 1:
        raise ValueError(
            f"alpha must be a number or a flat sequence of per-class weights; got shape {tuple(values.shape)}."
        )
    if values.numel() == 0:
        raise ValueError("alpha must be a number or a non-empty sequence of per-class weights; got an empty sequence.")
    if (values < 0).any() or not torch.isfinite(values).all():
        raise ValueError(f"alpha weights must be finite and >= 0; got {values.tolist()}.")
    return values


def accepted_arguments(cls: type) -> list[str]:
    """The keyword arguments a loss class takes: those of its ``__init__`` and of the base classes it passes
    ``**kwargs`` on to, down to :class:`SegmentationLoss` (whose ``**unexpected`` refuses the rest)."""
    names: list[str] = []
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())
        names += [p.name for p in params if p.kind in keyword_kinds and p.name != "self"]
        if klass is SegmentationLoss or not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    replaced = getattr(cls, "replaced_arguments", {})
    return [name for name in dict.fromkeys(names) if name not in replaced]


#: arguments of MONAI's losses that the losses here do not take, and what to do instead (added to the error)
MONAI_ARGUMENT_HINTS: dict[str, str] = {
    "use_softmax": "MONAI FocalLoss's use_softmax=True is softmax=True here",
    "weight": "MONAI's per-class weight is alpha with one value per kept class here",
    "ignore_index": "MONAI's ignore_index is not offered: every voxel of the target counts",
    "soft_label": "soft labels need no flag here: a dense target in [0, 1] is used as given",
    "squared_pred": "MONAI DiceLoss's squared_pred is not offered (the paper's sums are linear in p)",
    "jaccard": "MONAI DiceLoss's jaccard is not offered",
}
#: MONAI TverskyLoss's weights, for a loss weighted by ``delta`` (the false-negative weight) instead
_TVERSKY_HINTS: dict[str, str] = {
    "alpha": "MONAI TverskyLoss's alpha (the false-positive weight) is 1 - delta here",
    "beta": "MONAI TverskyLoss's beta (the false-negative weight) is delta here",
}


def unknown_argument_error(cls: type, name: str) -> TypeError:
    """``<Loss> takes no argument '<name>' (did you mean '<closest>'?); its arguments are: ...``, and for an argument
    of MONAI's losses what to use instead (:data:`MONAI_ARGUMENT_HINTS`)."""
    known = accepted_arguments(cls)
    close = difflib.get_close_matches(str(name), known, n=3)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    monai_hint = MONAI_ARGUMENT_HINTS.get(name) or (_TVERSKY_HINTS.get(name) if "delta" in known else None)
    if name == "weight" and "alpha" not in known:
        monai_hint = (
            f"MONAI's per-class weight is not offered by {cls.__name__}; the losses that take alpha take one value "
            "per kept class there (e.g. CategoricalFocalLoss, ComboLoss, MixedFocalLoss)"
        )
    monai_hint = f" {monai_hint[0].upper()}{monai_hint[1:]}." if monai_hint else ""
    return TypeError(
        f"{cls.__name__} takes no argument {name!r}{hint}; its arguments are: {', '.join(known)}.{monai_hint}"
    )


class SegmentationLoss(_Loss):
    """Base of the Mixed Focal loss family, with MONAI's common loss arguments.

    Args:
        include_background: if ``False``, channel 0 (background) is excluded from the loss.
        to_onehot_y: the target holds class indices ``[B, 1, *spatial]`` (converted to one-hot internally, without
            building a one-hot volume where a gather does).
        sigmoid: apply a sigmoid to the input (logits); binary / multi-label form of the cross-entropy terms.
        softmax: apply a softmax over channels to the input (logits); categorical form.
        other_act: any other callable activation, e.g. ``torch.tanh``; its output is taken as probabilities.
            With no activation at all the input is taken as probabilities (as in the authors' code).
        reduction: ``"none"``, ``"mean"`` or ``"sum"`` (see the module docstring).
        batch: pool TP/FN/FP over the batch before computing the index (region terms only).
        smooth_nr: added to the numerator of the index.
        smooth_dr: added to the denominator of the index.
        unexpected: what no class of the loss takes: refused with a ``TypeError`` that names the loss, the closest
            arguments and all of them (Python's own error named this base class: ``SegmentationLoss.__init__() got an
            unexpected keyword argument 'gamma'`` for ``MixedFocalLoss(gamma=2)``).

    Raises:
        TypeError: if ``other_act`` is not callable, or for an argument the loss does not take.
        ValueError: if more than one of ``sigmoid``, ``softmax``, ``other_act`` is set, for an unknown reduction, or a
            negative smoothing term.
    """

    #: the loss scores each channel with its own sigmoid and never takes ``softmax=True`` (True for the sigmoid focal
    #: losses: the bundles then read ``softmax=True`` as ``sigmoid=True``)
    sigmoid_only: ClassVar[bool] = False

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
        batch: bool = False,
        smooth_nr: float = 1e-6,
        smooth_dr: float = 1e-6,
        **unexpected: Any,
    ) -> None:
        if unexpected:
            raise unknown_argument_error(type(self), next(iter(unexpected)))
        super().__init__(reduction=LossReduction(reduction).value)
        if other_act is not None and not callable(other_act):
            raise TypeError(f"other_act must be None or callable but is {type(other_act).__name__}.")
        if int(bool(sigmoid)) + int(bool(softmax)) + int(other_act is not None) > 1:
            raise ValueError("Incompatible values: more than 1 of [sigmoid=True, softmax=True, other_act is not None].")
        check_positive("smooth_nr", smooth_nr, allow_zero=True)
        check_positive("smooth_dr", smooth_dr, allow_zero=True)
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.other_act = other_act
        self.batch = batch
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)

    def _warn_ignored_flags(self, input: torch.Tensor) -> None:
        """Warn like MONAI about flags that a single-channel input ignores."""
        if input.ndim >= 2 and input.shape[1] == 1:
            if self.softmax:
                warn_caller("single channel prediction, `softmax=True` ignored.")
            if self.to_onehot_y:
                warn_caller("single channel prediction, `to_onehot_y=True` ignored.")
            if not self.include_background:
                warn_caller("single channel prediction, `include_background=False` ignored.")

    def _prepare(self, input: torch.Tensor, target: torch.Tensor) -> Prepared:
        """Warn like MONAI about flags that a single-channel input ignores, then :func:`prepare` the tensors."""
        self._warn_ignored_flags(input)
        return self._prepare_quietly(input, target)

    @property
    def _input_options(self) -> dict[str, Any]:
        """How the input and the target are read: the activation, one-hot and background options."""
        return {
            "sigmoid": self.sigmoid,
            "softmax": self.softmax,
            "other_act": self.other_act,
            "to_onehot_y": self.to_onehot_y,
            "include_background": self.include_background,
        }

    def _prepare_quietly(self, input: torch.Tensor, target: torch.Tensor) -> Prepared:
        return prepare(input, target, **self._input_options)

    def _evaluate(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        *,
        region: bool,
        region_clip: bool = False,
        focal: tuple[float | Sequence[float], float, float | None] | None = None,
    ) -> torch.Tensor:
        """The checked loss :meth:`_value` of the statistics of ``(input, target)``.

        On the fused fast path (:mod:`~monai_mixedfocal.losses._fused`) the statistics come from the fused kernels,
        and where they are compiled the whole loss is (:mod:`~monai_mixedfocal.losses._fused_loss`: one compiled call
        forward, one backward); elsewhere :meth:`_value` gets the :class:`Prepared` tensors of the plain autograd
        path. Both give the same values up to float rounding.

        Args:
            input: the network output.
            target: the ground truth.
            region: the loss has a region (Dice / Tversky) part.
            region_clip: the region part clips probability inputs (focal Tversky).
            focal: ``(alpha, gamma, beta)`` of the pixel-wise part, or ``None`` for none.
        """
        self._warn_ignored_flags(input)
        input, target = plain_tensor(input), plain_tensor(target)
        spatial_dims = input.ndim - 2
        options = {**self._input_options, "region": region, "region_clip": region_clip, "focal": focal}
        scalar = self.reduction != LossReduction.NONE.value
        loss = fused_loss(input, target, self._value, spatial_dims, scalar, **options)
        if loss is not None:
            return loss
        return self._checked(self._value(self._prepare_quietly(input, target), spatial_dims))

    def _value(self, source: FusedStatistics | Prepared, spatial_dims: int) -> torch.Tensor:
        """The loss from the statistics of :meth:`_evaluate` (a function of tensors only: the fused path traces it).

        Args:
            source: the fused statistics, or the prepared tensors of the plain path.
            spatial_dims: the input's spatial dimensions (the shape of ``reduction="none"``).
        """
        raise NotImplementedError(f"{type(self).__name__} computes its loss in forward()")

    def _reduce_pixel_part(
        self, source: FusedStatistics | Prepared, per_voxel: Callable[[Prepared], torch.Tensor]
    ) -> torch.Tensor:
        """The reduced pixel-wise part of :meth:`_value` (``per_voxel`` computes it on the plain path)."""
        if isinstance(source, Prepared):
            return self._pixel_reduce(per_voxel(source), source)
        total = source.pixel.sum()
        if self.reduction == LossReduction.MEAN.value:
            return total / (source.pixel.shape[0] * source.num_voxels)
        if self.reduction == LossReduction.SUM.value:
            return total / source.num_voxels
        raise ValueError('the fused statistics hold no per-voxel values for reduction="none".')

    def _region_reduce(self, values: torch.Tensor, spatial_dims: int) -> torch.Tensor:
        """Reduce per-image, per-class values ``[B, K]`` (``[K]`` with ``batch=True``)."""
        if self.reduction == LossReduction.MEAN.value:
            return values.mean()
        if self.reduction == LossReduction.SUM.value:
            return values.sum()
        return values.reshape(*values.shape, *([1] * spatial_dims))

    def _pixel_reduce(self, term: torch.Tensor, prep: Prepared) -> torch.Tensor:
        """Reduce a pixel-wise term (see :func:`monai_mixedfocal.losses._terms.pixel_focal_term` for its shapes)."""
        if self.reduction == LossReduction.MEAN.value:
            return term.sum() / (term.shape[0] * prep.num_voxels)
        if self.reduction == LossReduction.SUM.value:
            return term.sum() / prep.num_voxels
        if term.shape[1] == 1 and prep.labels is not None:  # categorical with indices: place on the target channel
            full = torch.zeros_like(prep.prob).scatter(1, prep.labels, term)
            return full[:, prep.kept]
        return term

    @staticmethod
    def _checked(loss: torch.Tensor) -> torch.Tensor:
        """Return ``loss`` from inputs checked before, or raise instead of silently returning NaN / inf.

        Raises:
            FloatingPointError: for a non-finite loss from valid inputs.
        """
        return checked_loss(loss, torch.isfinite(loss).all(), None, None)
