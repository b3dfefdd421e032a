# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Compound losses: Combo (Eqs. 16, 18, 20) and Mixed Focal (Eqs. 23, 24) of Yeung et al.

A compound loss prepares the input once (one softmax / log-softmax shared by all its parts) and sums a region part and
a pixel-wise part, each reduced with its own convention (see :mod:`monai_mixedfocal.losses._base`). As for
``monai.losses.DiceCELoss``, only ``reduction="mean"`` and ``"sum"`` are supported.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.utils import LossReduction

from monai_mixedfocal.losses._base import SegmentationLoss, check_index_at_most_one, check_positive, check_unit_interval
from monai_mixedfocal.losses._fused import FusedStatistics
from monai_mixedfocal.losses._terms import Prepared
from monai_mixedfocal.losses.distribution import CategoricalFocalLoss
from monai_mixedfocal.losses.region import FocalTverskyLoss, ModifiedDiceLoss


class _CompoundLoss(SegmentationLoss):
    """Checks the reduction and keeps the common arguments for the parts."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.reduction == LossReduction.NONE.value:
            raise ValueError(
                f'{type(self).__name__} supports reduction "mean" or "sum" only (its region and pixel-wise parts '
                'have different shapes); use the part losses for reduction="none".'
            )
        self._common = kwargs


class ComboLoss(_CompoundLoss):
    """The Combo loss (Taghanaki et al. 2019) in the three forms of Yeung et al.

    - ``alpha=None`` (default), Eq. 18, used in the paper's experiments: ``L = CE - DSC``, the (modified, with
      ``beta``) cross entropy minus the soft Dice coefficient ``DSC = agg mTI(delta)``. It returns a loss minus a
      *score*, so it can be negative: that is the paper's definition.
    - ``alpha`` in ``[0, 1]`` and ``delta = 0.5``, Eq. 16: ``L = alpha * mCE - (1 - alpha) * DSC``.
    - ``alpha`` in ``[0, 1]`` and ``delta != 0.5``, the modified Combo loss of Eq. 20 with its sign corrected:
      ``L = alpha * mCE + (1 - alpha) * L_mD``, ``L_mD = agg (1 - mTI(delta))`` (Eq. 19). As printed, Eq. 20 subtracts a
      loss, which would reward a worse overlap.

    ``mCE`` is :class:`~monai_mixedfocal.losses.CategoricalFocalLoss` with ``alpha=1, gamma=0`` and the given ``beta``
    (Eq. 17: ``beta > 0.5`` penalises false negatives more; ``None`` is the plain cross entropy).

    Args:
        alpha: weight of the cross-entropy part in ``[0, 1]``, or ``None`` for Eq. 18.
        beta: the false-negative weight of the cross entropy in ``[0, 1]``, or ``None``.
        delta: the false-negative weight of the Dice part in ``[0, 1]``.
        kwargs: the common arguments of :class:`~monai_mixedfocal.losses._base.SegmentationLoss`.

    Raises:
        ValueError: if ``alpha``, ``beta`` or ``delta`` is outside ``[0, 1]``, or ``reduction="none"``.

    Example:
        >>> import torch
        >>> from monai_mixedfocal.losses import ComboLoss
        >>> loss = ComboLoss(softmax=True, to_onehot_y=True)  # Eq. 18
        >>> value = loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8)))

    Reference:
        Taghanaki et al., "Combo loss: Handling input and output imbalance in multi-organ segmentation", 2019;
        Yeung et al. 2021, Eqs. 16-20.
    """

    def __init__(self, alpha: float | None = None, beta: float | None = None, delta: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        check_unit_interval("alpha", alpha)
        self.alpha = None if alpha is None else float(alpha)
        self.cross_entropy = CategoricalFocalLoss(alpha=1.0, gamma=0.0, beta=beta, **kwargs)
        self.dice = ModifiedDiceLoss(delta=delta, **kwargs)
        self.beta, self.delta = self.cross_entropy.beta, self.dice.delta

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: the network output ``[B, C, *spatial]`` (logits with ``sigmoid``/``softmax``, else probabilities).
            target: ``[B, 1, *spatial]`` class indices with ``to_onehot_y=True``, else ``[B, C, *spatial]``.

        Returns:
            the scalar loss.
        """
        return self._evaluate(input, target, region=True, focal=self.cross_entropy.focal_parameters)

    def _value(self, source: FusedStatistics | Prepared, spatial_dims: int) -> torch.Tensor:
        ce = self._reduce_pixel_part(source, self.cross_entropy.per_voxel_loss)
        index = self.dice.tversky_index(source)
        if self.alpha is None:
            return ce - self._region_reduce(index, 0)
        if self.delta == 0.5:
            return self.alpha * ce - (1.0 - self.alpha) * self._region_reduce(index, 0)
        return self.alpha * ce + (1.0 - self.alpha) * self._region_reduce(1.0 - index, 0)


class MixedFocalLoss(_CompoundLoss):
    """The Mixed Focal loss of Yeung et al., Eq. 23, and its categorical form, Eq. 24 (the paper's experiments).

    - ``lambda_focal=None`` (default), Eq. 24: ``L = L_FT + L_CF``, the focal Tversky loss (``delta``,
      ``gamma_tversky``; :class:`~monai_mixedfocal.losses.FocalTverskyLoss`) plus the categorical focal loss
      (``alpha``, ``gamma_focal``, ``beta``; :class:`~monai_mixedfocal.losses.CategoricalFocalLoss`), unit weights.
    - ``lambda_focal`` in ``[0, 1]``, Eq. 23: ``L = lambda * L_mF + (1 - lambda) * L_mFD``. Lambda weights the
      *focal* (cross-entropy) part; the authors' code ``mixed_focal_loss(weight=w)`` puts ``w`` on the focal Dice part,
      so their ``weight`` is ``1 - lambda_focal``.

    With ``reduction="mean"`` (the authors' code) Eq. 24 is ``mean_c FT + 0.25 * mean_i sum_c (1 - p)^2 (-y log p)``;
    the paper prints class sums, i.e. ``reduction="sum"`` per image (a factor ``C`` on the region part).

    Args:
        lambda_focal: weight of the focal part in ``[0, 1]``, or ``None`` for Eq. 24.
        alpha: scalar or per-class weights of the focal part (``>= 0``).
        beta: the false-negative weight of the focal part in ``[0, 1]``, or ``None``.
        delta: the false-negative weight of the focal Tversky part in ``[0, 1]``.
        gamma_focal: the focusing parameter of the focal part, ``>= 0``.
        gamma_tversky: the focal parameter of the focal Tversky part, ``> 0`` (exponent ``1 / gamma_tversky``).
        kwargs: the common arguments of :class:`~monai_mixedfocal.losses._base.SegmentationLoss`.

    Raises:
        ValueError: for parameters out of range (see the part losses) or ``reduction="none"``.

    Example:
        >>> import torch
        >>> from monai_mixedfocal.losses import MixedFocalLoss
        >>> loss = MixedFocalLoss(softmax=True, to_onehot_y=True)  # Eq. 24, the paper's setting
        >>> value = loss(torch.randn(2, 3, 8, 8, 8), torch.randint(0, 3, (2, 1, 8, 8, 8)))

    Reference:
        Yeung et al. 2021, Eqs. 21-24.
    """

    def __init__(
        self,
        lambda_focal: float | None = None,
        alpha: float | Sequence[float] = 0.25,
        beta: float | None = None,
        delta: float = 0.7,
        gamma_focal: float = 2.0,
        gamma_tversky: float = 4.0 / 3.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_unit_interval("lambda_focal", lambda_focal)
        check_positive("gamma_focal", gamma_focal, allow_zero=True)
        check_positive("gamma_tversky (the exponent is 1 / gamma_tversky)", gamma_tversky)
        check_index_at_most_one(self)
        self.lambda_focal = None if lambda_focal is None else float(lambda_focal)
        self.focal = CategoricalFocalLoss(alpha=alpha, gamma=gamma_focal, beta=beta, **kwargs)
        self.focal_tversky = FocalTverskyLoss(delta=delta, gamma=gamma_tversky, **kwargs)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: the network output ``[B, C, *spatial]`` (logits with ``sigmoid``/``softmax``, else probabilities).
            target: ``[B, 1, *spatial]`` class indices with ``to_onehot_y=True``, else ``[B, C, *spatial]``.

        Returns:
            the scalar loss.
        """
        return self._evaluate(input, target, region=True, region_clip=True, focal=self.focal.focal_parameters)

    def _value(self, source: FusedStatistics | Prepared, spatial_dims: int) -> torch.Tensor:
        focal = self._reduce_pixel_part(source, self.focal.per_voxel_loss)
        focal_tversky = self._region_reduce(self.focal_tversky.per_class_loss(source), 0)
        if self.lambda_focal is None:
            return focal + focal_tversky
        return self.lambda_focal * focal + (1.0 - self.lambda_focal) * focal_tversky
