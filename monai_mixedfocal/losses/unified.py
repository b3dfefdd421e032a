# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The symmetric and asymmetric Unified Focal loss of Yeung et al. 2022, for any number of classes.

The classes split into *rare* classes ``R`` (default: every non-background class) and *frequent* ones (background and
every other class). With ``mTI_c = (TP + s) / (TP + delta FN + (1 - delta) FP + s)`` per image and class:

- asymmetric focal loss (per voxel, summed over classes, averaged over voxels):
  ``L_aF = sum_{c not in R} (1 - delta) (1 - p_c)^gamma (-y_c log p_c) + sum_{r in R} delta (-y_r log p_r)``
- asymmetric focal Tversky loss (averaged over classes):
  ``L_aFT = mean_c [ (1 - mTI_c) for c not in R ;  (1 - mTI_r)^(1 - gamma) for r in R ]``
- ``L_aUF = lambda L_aF + (1 - lambda) L_aFT``.

The symmetric versions apply the focal factors to every class: ``(1 - p_c)^gamma`` in the focal part (weights
``1 - delta`` / ``delta`` unchanged) and ``(1 - mTI_c)^(1 - gamma)`` for every class in the focal Tversky part.

Reference:
    Yeung M, Sala E, Schönlieb C-B, Rundo L. "Unified Focal loss: Generalising Dice and cross entropy-based losses to
    handle class imbalanced medical image segmentation". Computerized Medical Imaging and Graphics 95 (2022) 102026.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.utils import LossReduction

from monai_mixedfocal.losses._base import (
    SegmentationLoss,
    check_index_at_most_one,
    check_unit_interval,
    warn_caller,
)
from monai_mixedfocal.losses._terms import (
    Prepared,
    _check_target,
    confusion_sums,
    pixel_focal_term,
    prepare,
    safe_pow,
    tversky_index,
)
from monai_mixedfocal.losses.class_weights import (
    ClassWeights,
    ClassWeightsState,
    make_class_weights,
    step_class_weights,
)

__all__ = ["UnifiedFocalLoss"]


class UnifiedFocalLoss(ClassWeightsState, SegmentationLoss):
    """The (asymmetric) Unified Focal loss, Yeung et al. 2022, multi-class, from logits or probabilities.

    ``L = lambda_focal * L_F + (1 - lambda_focal) * L_FT`` where, for the asymmetric version (see the module docstring
    for the equations), the focal part ``L_F`` suppresses only the frequent classes (background) with
    ``(1 - p)^gamma`` and weights them ``1 - delta``, weights the rare classes ``delta`` without suppression, and the
    focal Tversky part ``L_FT`` enhances only the rare classes with ``(1 - mTI)^(1 - gamma)``. ``asymmetric=False``
    gives the symmetric Unified Focal loss (focal factors on every class).

    For two classes this is the authors' definition (mlyg/unified-focal-loss, ``asym_unified_focal_loss`` /
    ``sym_unified_focal_loss``): focal part summed over classes and averaged over voxels, focal Tversky part averaged
    over classes, ``smooth_nr = smooth_dr = 1e-7`` (Keras ``epsilon``), probabilities clipped to ``[1e-7, 1 - 1e-7]``
    when given as probabilities. Where the sources differ:

    - ``lambda_focal`` weights the focal (cross-entropy) part, as in the paper (Eq. 19/21); the authors' code
      ``weight`` weights the focal Tversky part, i.e. ``weight = 1 - lambda_focal`` (equal at the default 0.5).
    - ``(1 - mTI)^(1 - gamma)`` is computed directly (finite value and gradient at ``mTI = 1``); the code writes
      ``(1 - mTI) * (1 - mTI)^(-gamma)``, which is ``0 * inf = NaN`` for a perfect prediction.
    - The code indexes channels as ``y_pred[:, :, :, c]``, i.e. a spatial axis for 3-D volumes; here channels are
      always dim 1. The code is binary (channels beyond 1 ignored); here every class counts.
    - ``monai.losses.AsymmetricUnifiedFocalLoss`` (1.6.1) averages its focal part over classes (half of the authors'
      value for two classes), applies no activation (logits must not be passed) and ignores channels beyond 1.

    A single-channel input is a binary problem: it is expanded to the two classes ``[1 - p, p]`` (with ``sigmoid``:
    logits ``[0, x]`` under a softmax, which is exact in log space) and a one-channel target to ``[1 - y, y]``, as the
    authors and MONAI do. A multi-channel ``sigmoid`` (multi-label) input is not supported: the loss is defined on a
    distribution over classes.

    Args:
        lambda_focal: weight of the focal part in ``[0, 1]`` (``1 - lambda_focal`` weights the focal Tversky part).
        delta: weight of the rare classes in the focal part (``1 - delta`` for the frequent ones) and of the false
            negatives in the Tversky index, in ``[0, 1]``.
        gamma: the focal parameter in ``[0, 1]``: background suppression ``(1 - p)^gamma`` and rare-class enhancement
            ``(1 - mTI)^(1 - gamma)``.
        asymmetric: ``True`` for the asymmetric Unified Focal loss, ``False`` for the symmetric one.
        rare_classes: the channel indices of the rare classes (``>= 1``), or ``None`` for every non-background class.
        class_weights: optional per-class weights of the focal part (one per output channel): a sequence,
            ``"effective_number"``, ``"running"`` or a :class:`~monai_mixedfocal.losses.class_weights.ClassWeights`.
        class_weight_options: keyword arguments of the class-weight provider.
        smooth_nr: added to the numerator of the Tversky index (the authors' 1e-7).
        smooth_dr: added to the denominator of the Tversky index (the authors' 1e-7).
        kwargs: the other common arguments of :class:`~monai_mixedfocal.losses._base.SegmentationLoss`
            (``include_background``, ``to_onehot_y``, ``sigmoid``, ``softmax``, ``other_act``, ``reduction``,
            ``batch``). ``reduction`` is ``"mean"`` or ``"sum"``.

    Raises:
        ValueError: for ``lambda_focal``, ``delta`` or ``gamma`` outside ``[0, 1]``, a rare class index below 1 or
            repeated, or ``reduction="none"``.

    Example:
        >>> import torch
        >>> from monai_mixedfocal.losses import UnifiedFocalLoss
        >>> loss = UnifiedFocalLoss(softmax=True, to_onehot_y=True, rare_classes=[2])  # KiTS19: tumour is rare
        >>> value = loss(torch.randn(2, 3, 8, 8, 8), torch.randint(0, 3, (2, 1, 8, 8, 8)))
    """

    def __init__(
        self,
        lambda_focal: float = 0.5,
        delta: float = 0.6,
        gamma: float = 0.5,
        asymmetric: bool = True,
        rare_classes: Sequence[int] | None = None,
        class_weights: str | Sequence[float] | ClassWeights | None = None,
        class_weight_options: Mapping[str, Any] | None = None,
        smooth_nr: float = 1e-7,
        smooth_dr: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(smooth_nr=smooth_nr, smooth_dr=smooth_dr, **kwargs)
        if self.reduction == LossReduction.NONE.value:
            raise ValueError(
                'UnifiedFocalLoss supports reduction "mean" or "sum" only (its focal and focal Tversky parts have '
                "different shapes); use parts() for the two terms."
            )
        check_unit_interval("lambda_focal", lambda_focal)
        check_unit_interval("delta", delta)
        check_unit_interval("gamma", gamma)
        check_index_at_most_one(self)
        if rare_classes is not None:
            rare = list(rare_classes)
            if not rare or not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in rare):
                raise ValueError(
                    "rare_classes must be a non-empty sequence of integer channel indices, or None for every "
                    f"non-background class; got {rare_classes!r}."
                )
            rare = [int(c) for c in rare]
            if any(c < 1 for c in rare) or len(set(rare)) != len(rare):
                raise ValueError(
                    f"rare_classes must be distinct channel indices >= 1 (channel 0 is background); got {rare_classes}."
                )
            self.rare_classes: tuple[int, ...] | None = tuple(sorted(rare))
        else:
            self.rare_classes = None
        self.lambda_focal = float(lambda_focal)
        self.delta = float(delta)
        self.gamma = float(gamma)
        self.asymmetric = bool(asymmetric)
        self.class_weights = make_class_weights(class_weights, class_weight_options)

    def _prepare_unified(self, input: torch.Tensor, target: torch.Tensor) -> Prepared:
        """Expand a single channel to ``[1 - p, p]``, refuse multi-label sigmoid, and prepare the tensors."""
        if input.ndim < 3 or input.shape[1] != 1:
            if self.sigmoid:
                raise ValueError(
                    f"UnifiedFocalLoss is defined on a distribution over classes: use softmax=True for a "
                    f"{input.shape[1] if input.ndim > 1 else '?'}-channel output (sigmoid=True is for a single "
                    "channel); for multi-label outputs use SigmoidFocalLoss."
                )
            return self._prepare(input, target)
        for flag, text in ((self.softmax, "softmax=True"), (self.to_onehot_y, "to_onehot_y=True")):
            if flag:
                warn_caller(f"single channel prediction, `{text}` ignored.")
        if not self.include_background:
            warn_caller("single channel prediction, `include_background=False` ignored.")
        x = input if input.dtype == torch.float64 else input.float()
        if self.sigmoid:
            pair = torch.cat([torch.zeros_like(x), x], dim=1)  # softmax([0, x]) = [1 - sigmoid(x), sigmoid(x)]
        else:
            p = self.other_act(x) if self.other_act is not None else x
            pair = torch.cat([1.0 - p, p], dim=1)
        y = _check_target(input, target, to_onehot=False)  # errors quote the user's shapes and values, not the pair's
        target = torch.cat([1.0 - y, y], dim=1).to(pair.dtype)
        return prepare(
            pair,
            target,
            sigmoid=False,
            softmax=self.sigmoid,
            other_act=None,
            to_onehot_y=False,
            include_background=True,
        )

    def rare_mask(self, prep: Prepared) -> torch.Tensor:
        """Boolean ``[K]``: which kept channels are rare classes.

        Raises:
            ValueError: if a rare class index is not a channel of the output.
        """
        channels = torch.arange(prep.num_channels)[prep.kept]
        if self.rare_classes is None:
            return channels >= 1
        if max(self.rare_classes) >= prep.num_channels:
            raise ValueError(
                f"rare_classes {list(self.rare_classes)} must be channel indices below {prep.num_channels} "
                f"(the number of classes of the output)."
            )
        return torch.isin(channels, torch.tensor(self.rare_classes))

    def focal_term(self, prep: Prepared, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The unreduced focal part (shape of :func:`~monai_mixedfocal.losses._terms.pixel_focal_term`).

        Args:
            prep: the prepared input.
            weights: optional class weights of the kept channels ``[K]``.
        """
        rare = self.rare_mask(prep).to(prep.prob.device)
        delta = torch.tensor(self.delta, dtype=prep.prob.dtype, device=prep.prob.device)
        base = torch.where(rare, delta, 1.0 - delta)
        if weights is not None:
            base = base * weights
        if not self.asymmetric or self.gamma == 0.0:
            return pixel_focal_term(prep, base, self.gamma, None)
        suppressed = pixel_focal_term(prep, base * (~rare).to(base), self.gamma, None)
        return suppressed + pixel_focal_term(prep, base * rare.to(base), 0.0, None)

    def focal_tversky_term(self, prep: Prepared) -> torch.Tensor:
        """The unreduced focal Tversky part, one value per image and kept class ``[B, K]`` (``[K]`` with ``batch``)."""
        tp, fn, fp = confusion_sums(prep, batch=self.batch, clip=True)
        loss = 1.0 - tversky_index(tp, fn, fp, self.delta, self.smooth_nr, self.smooth_dr)
        enhanced = safe_pow(loss, 1.0 - self.gamma)
        if not self.asymmetric:
            return enhanced
        return torch.where(self.rare_mask(prep).to(loss.device), enhanced, loss)

    def parts(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The two reduced parts, ``{"focal": L_F, "focal_tversky": L_FT}`` (same arguments as :meth:`forward`)."""
        prep = self._prepare_unified(input, target)
        num_channels = input.shape[1] if input.ndim > 1 and input.shape[1] > 1 else 2
        weights = step_class_weights(self, self.class_weights, target, num_channels, prep.kept, prep.prob)
        return {
            "focal": self._pixel_reduce(self.focal_term(prep, weights), prep),
            "focal_tversky": self._region_reduce(self.focal_tversky_term(prep), 0),
        }

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: the network output ``[B, C, *spatial]`` (logits with ``softmax``, or one channel with ``sigmoid``;
                else probabilities).
            target: ``[B, 1, *spatial]`` class indices with ``to_onehot_y=True``, else ``[B, C, *spatial]`` (a
                one-channel binary target for a one-channel output).

        Returns:
            the scalar loss.

        Raises:
            ValueError: for mismatched shapes, class indices out of range, non-finite inputs, rare classes that are not
                channels of the output, or a multi-channel ``sigmoid`` input.
        """
        parts = self.parts(input, target)
        loss = self.lambda_focal * parts["focal"] + (1.0 - self.lambda_focal) * parts["focal_tversky"]
        return self._checked(loss)
