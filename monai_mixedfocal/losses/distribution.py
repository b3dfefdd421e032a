# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Distribution-based losses: categorical cross entropy, categorical focal and modified focal (Yeung et al. II.A-B)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.utils import LossReduction

from monai_mixedfocal.losses._base import SegmentationLoss, alpha_weights, check_positive, check_unit_interval
from monai_mixedfocal.losses._fused import FusedStatistics
from monai_mixedfocal.losses._terms import Prepared, alpha_vector, pixel_focal_term


class CategoricalFocalLoss(SegmentationLoss):
    """The categorical focal loss, Yeung et al. Eq. 7, and with ``beta`` the modified focal loss of Eq. 21 (corrected).

    Per voxel, summed over classes (categorical form: ``softmax`` or probability inputs with ``C >= 2``):
    ``L_i = sum_c alpha_c * w_c * (1 - p_c) ** gamma * (-y_c * log p_c)``.
    Binary form (``sigmoid``, or a one-channel output), per channel ``c``:
    ``alpha_c * [w_pos * (1 - p_c) ** gamma * (-y_c log p_c) + w_neg * p_c ** gamma * (-(1 - y_c) log(1 - p_c))]``.

    - ``alpha``: a scalar (a global scale, the paper's 0.25 as in the authors' code and MIScnn) or one weight per kept
      channel. It is not RetinaNet's ``alpha_t``: the false-negative / false-positive balance is ``beta``.
    - ``beta`` (Eq. 17, corrected: ``beta > 0.5`` penalises false negatives more): binary form ``w_pos = beta``,
      ``w_neg = 1 - beta``; categorical form ``w_c = beta`` on every foreground channel and ``1 - beta`` on the
      background channel 0. For a two-class softmax this is Eq. 17 with ``p = p_1`` exactly. ``None``: all weights 1.
    - ``gamma = 0`` and ``alpha = 1`` give the categorical cross entropy (Eq. 2); with ``beta`` the modified cross
      entropy of Eq. 17. With logits (``softmax``/``sigmoid``) the logarithms are computed in log space; with
      probabilities they are clipped to ``[1e-7, 1 - 1e-7]`` first, as in the authors' code.

    Reduction: ``"mean"`` sums over classes and averages over voxels and images (the authors' code: ``C`` times a mean
    over all elements, so with ``softmax`` and ``gamma=0`` it equals ``torch.nn.functional.cross_entropy``);
    ``"sum"`` averages over the voxels of each image and sums over images; ``"none"`` returns ``[B, K, *spatial]``.
    ``batch``, ``smooth_nr`` and ``smooth_dr`` are accepted, so that every loss of the registry takes the same
    arguments, and have no effect.

    Args:
        alpha: scalar or per-class weights (one per channel after ``include_background``), all ``>= 0``.
        gamma: the focusing parameter, ``>= 0``.
        beta: the false-negative weight of Eq. 17 in ``[0, 1]``, or ``None``.
        kwargs: the common arguments of :class:`~monai_mixedfocal.losses._base.SegmentationLoss`.

    Raises:
        ValueError: for a negative ``alpha`` or ``gamma``, or ``beta`` outside ``[0, 1]``.

    Example:
        >>> import torch
        >>> from monai_mixedfocal.losses import CategoricalFocalLoss
        >>> loss = CategoricalFocalLoss(softmax=True, to_onehot_y=True)  # alpha=0.25, gamma=2: the paper's setting
        >>> value = loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8)))

    Reference:
        Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017; Yeung et al. 2021, Eqs. 2, 7, 17 and 21.
    """

    def __init__(
        self, alpha: float | Sequence[float] = 0.25, gamma: float = 2.0, beta: float | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        alpha_value = alpha_weights(alpha)
        check_positive("gamma", gamma, allow_zero=True)
        check_unit_interval("beta", beta)
        self.alpha = alpha_value if isinstance(alpha_value, float) else tuple(alpha_value.tolist())
        self.gamma = float(gamma)
        self.beta = None if beta is None else float(beta)

    def per_voxel_loss(self, prep: Prepared) -> torch.Tensor:
        """The unreduced pixel-wise term (see :func:`~monai_mixedfocal.losses._terms.pixel_focal_term`)."""
        alpha = alpha_vector(self.alpha, prep.num_kept, self.include_background, prep.prob)
        return pixel_focal_term(prep, alpha, self.gamma, self.beta)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: the network output ``[B, C, *spatial]`` (logits with ``sigmoid``/``softmax``, else probabilities).
            target: ``[B, 1, *spatial]`` class indices with ``to_onehot_y=True``, else ``[B, C, *spatial]``.

        Returns:
            the loss: a scalar for ``"mean"``/``"sum"``, ``[B, K, *spatial]`` for ``"none"``.

        Raises:
            ValueError: for mismatched shapes, class indices out of range, non-finite inputs or a wrong alpha length.
        """
        if self.reduction == LossReduction.NONE.value:  # per-voxel values: the plain path
            prep = self._prepare(input, target)
            return self._checked(self._pixel_reduce(self.per_voxel_loss(prep), prep))
        return self._evaluate(input, target, region=False, focal=self.focal_parameters)

    def _value(self, source: FusedStatistics | Prepared, spatial_dims: int) -> torch.Tensor:
        return self._reduce_pixel_part(source, self.per_voxel_loss)

    @property
    def focal_parameters(self) -> tuple[float | tuple[float, ...], float, float | None]:
        """``(alpha, gamma, beta)``, as the fused path of :meth:`SegmentationLoss._evaluate` takes them."""
        return self.alpha, self.gamma, self.beta
