# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Region-based losses: modified Dice / Tversky, focal Tversky and cosine Tversky (Yeung et al., Sections II.C-F).

All three are a formula on the modified Dice coefficient / Tversky index of one image and class
``mTI(delta) = (TP + smooth_nr) / (TP + delta * FN + (1 - delta) * FP + smooth_dr)``, where ``delta`` weights the false
negatives (:func:`monai_mixedfocal.losses._terms.tversky_index`).
"""

from __future__ import annotations

import math

import torch

from monai_mixedfocal.losses._base import (
    SegmentationLoss,
    check_index_at_most_one,
    check_positive,
    check_unit_interval,
)
from monai_mixedfocal.losses._fused import FusedStatistics
from monai_mixedfocal.losses._terms import Prepared, confusion_sums, safe_pow, tversky_index


class _TverskyIndexLoss(SegmentationLoss):
    """A region loss ``agg_{b,c} f(mTI_bc(delta))``; subclasses define ``f`` in :meth:`_per_class`."""

    clip_probabilities = False

    def __init__(self, delta: float, **kwargs) -> None:
        super().__init__(**kwargs)
        check_unit_interval("delta", delta)
        self.delta = float(delta)

    def tversky_index(self, prep: Prepared | FusedStatistics) -> torch.Tensor:
        """The index of every image and kept class, ``[B, K]`` (``[K]`` with ``batch=True``)."""
        if isinstance(prep, FusedStatistics):
            tp, fn, fp = prep.confusion(self.batch)
        else:
            tp, fn, fp = confusion_sums(prep, batch=self.batch, clip=self.clip_probabilities)
        return tversky_index(tp, fn, fp, self.delta, self.smooth_nr, self.smooth_dr)

    def _per_class(self, index: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def per_class_loss(self, prep: Prepared | FusedStatistics) -> torch.Tensor:
        """The loss of every image and kept class before reduction, ``[B, K]`` (``[K]`` with ``batch=True``)."""
        return self._per_class(self.tversky_index(prep))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: the network output ``[B, C, *spatial]`` (logits with ``sigmoid``/``softmax``, else probabilities).
            target: ``[B, 1, *spatial]`` class indices with ``to_onehot_y=True``, else ``[B, C, *spatial]``.

        Returns:
            the loss: a scalar for ``"mean"``/``"sum"``, ``[B, K, 1, ...]`` (``[K, 1, ...]`` with ``batch=True``) for
            ``"none"``.

        Raises:
            ValueError: for mismatched shapes, class indices out of range or non-finite inputs.
        """
        return self._evaluate(input, target, region=True, region_clip=self.clip_probabilities)

    def _value(self, source: FusedStatistics | Prepared, spatial_dims: int) -> torch.Tensor:
        return self._region_reduce(self.per_class_loss(source), spatial_dims)


class ModifiedDiceLoss(_TverskyIndexLoss):
    """The modified Dice loss of Yeung et al., Eq. 19 (Eq. 11 for ``delta=0.5``, the Tversky loss Eq. 13 for 0.7).

    ``L_mD = agg_c (1 - mTI_c(delta))``, with ``mTI`` the modified Dice coefficient of Eq. 9 (typo corrected:
    ``delta`` weights the false negatives, as the text, Salehi et al. and the authors' code say). The paper prints a
    sum over classes (``reduction="sum"``); the authors' code averages over classes and images (``"mean"``).

    - ``ModifiedDiceLoss(delta=0.7)`` equals ``monai.losses.TverskyLoss(alpha=0.3, beta=0.7)`` with the same smoothing.
    - ``ModifiedDiceLoss(delta=0.5, smooth_nr=s / 2, smooth_dr=s / 2)`` equals ``monai.losses.DiceLoss(smooth_nr=s,
      smooth_dr=s)`` exactly (``(2TP + s) / (2TP + FN + FP + s) = (TP + s/2) / (TP + FN/2 + FP/2 + s/2)``).

    Args:
        delta: weight of the false negatives in ``[0, 1]`` (``1 - delta`` weights the false positives).
        kwargs: the common arguments of :class:`~monai_mixedfocal.losses._base.SegmentationLoss`
            (``include_background``, ``to_onehot_y``, ``sigmoid``, ``softmax``, ``other_act``, ``reduction``, ``batch``,
            ``smooth_nr``, ``smooth_dr``).

    Raises:
        ValueError: if ``delta`` is outside ``[0, 1]``.

    Example:
        >>> import torch
        >>> from monai_mixedfocal.losses import ModifiedDiceLoss
        >>> loss = ModifiedDiceLoss(delta=0.7, softmax=True, to_onehot_y=True)
        >>> value = loss(torch.randn(2, 3, 8, 8, 8), torch.randint(0, 3, (2, 1, 8, 8, 8)))

    Reference:
        Yeung et al., "A Mixed Focal Loss Function for Handling Class Imbalanced Medical Image Segmentation", 2021;
        Salehi et al., "Tversky loss function for image segmentation using 3D fully convolutional deep networks", 2017.
    """

    def __init__(self, delta: float = 0.5, **kwargs) -> None:
        super().__init__(delta, **kwargs)

    def _per_class(self, index: torch.Tensor) -> torch.Tensor:
        return 1.0 - index


class FocalTverskyLoss(_TverskyIndexLoss):
    """The focal Tversky loss (Abraham and Khan 2019), Yeung et al. Eq. 14, and the modified focal Dice loss, Eq. 22.

    ``L_FT = agg_c (1 - mTI_c(delta)) ** (1 / gamma)``. ``gamma`` is the paper's focal parameter: the exponent is
    ``1 / gamma`` (the authors' code argument ``gamma=0.75`` is that exponent, i.e. the paper's ``gamma = 4/3``).
    ``gamma = 1`` gives the Tversky loss; ``gamma > 1`` focuses on poorly segmented (hard) classes.
    With probability inputs (no activation flag) probabilities are clipped to ``[1e-7, 1 - 1e-7]`` first, as in the
    authors' code.

    Args:
        delta: weight of the false negatives in ``[0, 1]``.
        gamma: the focal parameter, ``> 0`` (the exponent is ``1 / gamma``).
        kwargs: the common arguments of :class:`~monai_mixedfocal.losses._base.SegmentationLoss`.

    Raises:
        ValueError: if ``delta`` is outside ``[0, 1]`` or ``gamma <= 0``.

    Example:
        >>> import torch
        >>> from monai_mixedfocal.losses import FocalTverskyLoss
        >>> loss = FocalTverskyLoss(softmax=True, to_onehot_y=True)  # delta=0.7, gamma=4/3: the paper's setting
        >>> value = loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8)))

    Reference:
        Abraham and Khan, "A novel focal Tversky loss function with improved attention U-Net for lesion segmentation",
        ISBI 2019; Yeung et al. 2021, Eqs. 14 and 22.
    """

    clip_probabilities = True

    def __init__(self, delta: float = 0.7, gamma: float = 4.0 / 3.0, **kwargs) -> None:
        super().__init__(delta, **kwargs)
        check_positive("gamma (the exponent is 1 / gamma)", gamma)
        check_index_at_most_one(self)
        self.gamma = float(gamma)

    def _per_class(self, index: torch.Tensor) -> torch.Tensor:
        return safe_pow(1.0 - index, 1.0 / self.gamma)


class CosineTverskyLoss(_TverskyIndexLoss):
    """The cosine Tversky loss, Yeung et al. Eq. 15, as printed.

    ``L_cosT = agg_c cos(pi / 2 * mTI_c(delta)) ** gamma``: 1 for no overlap, 0 for a perfect one. The authors' code
    computes ``1 - cos(pi * TI) ** gamma`` instead, which rewards bad overlap; this class follows the equation.

    Args:
        delta: weight of the false negatives in ``[0, 1]``.
        gamma: the focal exponent, ``> 0``.
        kwargs: the common arguments of :class:`~monai_mixedfocal.losses._base.SegmentationLoss`.

    Raises:
        ValueError: if ``delta`` is outside ``[0, 1]`` or ``gamma <= 0``.

    Example:
        >>> import torch
        >>> from monai_mixedfocal.losses import CosineTverskyLoss
        >>> loss = CosineTverskyLoss(softmax=True, to_onehot_y=True)
        >>> value = loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8)))

    Reference:
        Yeung et al. 2021, Eq. 15 (after Mun et al. 2020 and the cosine Dice loss).
    """

    def __init__(self, delta: float = 0.7, gamma: float = 1.0, **kwargs) -> None:
        super().__init__(delta, **kwargs)
        check_positive("gamma", gamma)
        check_index_at_most_one(self)
        self.gamma = float(gamma)

    def _per_class(self, index: torch.Tensor) -> torch.Tensor:
        # cos(pi/2) is -4.4e-8 in float32: clamp at 0 so that a fractional power stays real
        return safe_pow(torch.cos((math.pi / 2.0) * index).clamp_min(0.0), self.gamma)
