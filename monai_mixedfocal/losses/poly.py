# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Poly-1 losses (Leng et al. 2022): cross entropy or focal loss plus ``epsilon * (1 - p_t) ** (gamma + 1)``.

Leng et al. expand the cross entropy in the polynomial basis ``(1 - p_t) ** j``; perturbing only the first coefficient
by ``epsilon`` gives Poly-1: ``CE + epsilon * (1 - p_t)`` and, for the focal loss, ``FL + epsilon * (1 - p_t) ** (gamma
+ 1)`` (their Eq. 3-4). ``epsilon > 0`` strengthens the gradient of confident predictions, ``epsilon = -1`` removes the
leading term.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from monai_mixedfocal.losses._base import SegmentationLoss, alpha_weights, check_finite, check_positive
from monai_mixedfocal.losses._terms import Prepared, pixel_focal_term, safe_pow
from monai_mixedfocal.losses.class_weights import (
    ClassWeights,
    ClassWeightsState,
    make_class_weights,
    step_class_weights,
)

__all__ = ["Poly1Loss"]


class Poly1Loss(ClassWeightsState, SegmentationLoss):
    """Poly-1 cross entropy (``gamma=0``) or Poly-1 focal loss (``gamma > 0``), Leng et al. 2022.

    Categorical form (``softmax`` or probabilities, ``C >= 2``), per voxel with target class ``t``:
    ``L_i = w_t * [alpha_t * (1 - p_t) ** gamma * (-log p_t) + epsilon * (1 - p_t) ** (gamma + 1)]``
    (soft targets: summed over classes with ``y_c``). Binary form (``sigmoid`` or one channel), per channel:
    ``w_c * [alpha_c * ((1 - p)^gamma y (-log p) + p^gamma (1 - y)(-log(1 - p))) + epsilon * (y (1 - p)^(gamma + 1) +
    (1 - y) p^(gamma + 1))]``.

    ``alpha`` means what it means in :class:`~monai_mixedfocal.losses.CategoricalFocalLoss` (a global scale or one
    weight per kept channel; for RetinaNet's ``alpha_t`` use ``SigmoidFocalLoss(poly_epsilon=...)``); as in the
    paper, it does not scale the Poly-1 term. ``class_weights`` ``w_c`` scale both. Reductions as
    ``CategoricalFocalLoss`` (``"mean"``: summed over classes, averaged over voxels and images).
    ``gamma=0, alpha=1, epsilon=0`` is the cross entropy.

    Args:
        epsilon: the Poly-1 coefficient (the paper's best: 1 for ImageNet classification, -1 for detection focal).
        alpha: scalar or per-kept-channel weights of the cross-entropy / focal term, ``>= 0``.
        gamma: the focusing parameter, ``>= 0`` (0: Poly-1 cross entropy).
        class_weights: a sequence (one per output channel), ``"effective_number"``, ``"running"`` or a
            :class:`~monai_mixedfocal.losses.class_weights.ClassWeights` provider.
        class_weight_options: keyword arguments of the provider.
        kwargs: the common arguments of :class:`~monai_mixedfocal.losses._base.SegmentationLoss`.

    Raises:
        ValueError: for a negative ``alpha`` or ``gamma``.

    Example:
        >>> import torch
        >>> from monai_mixedfocal.losses import Poly1Loss
        >>> loss = Poly1Loss(epsilon=1.0, softmax=True, to_onehot_y=True)
        >>> value = loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8)))

    Reference:
        Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions", ICLR 2022.
    """

    def __init__(
        self,
        epsilon: float = 1.0,
        alpha: float | Sequence[float] = 1.0,
        gamma: float = 0.0,
        class_weights: str | Sequence[float] | ClassWeights | None = None,
        class_weight_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        alpha_value = alpha_weights(alpha)
        check_positive("gamma", gamma, allow_zero=True)
        check_finite("epsilon", epsilon)
        self.epsilon = float(epsilon)
        self.alpha = alpha_value if isinstance(alpha_value, float) else tuple(alpha_value.tolist())
        self.gamma = float(gamma)
        self.class_weights = make_class_weights(class_weights, class_weight_options)

    def _alpha(self, prep: Prepared, weights: torch.Tensor | None) -> float | torch.Tensor:
        """``alpha`` (scalar or ``[K]``) times the class weights."""
        if not isinstance(self.alpha, tuple):
            return self.alpha if weights is None else self.alpha * weights
        if len(self.alpha) != prep.num_kept:
            raise ValueError(
                f"Poly1Loss got {len(self.alpha)} alpha values for {prep.num_kept} channels "
                f"(include_background={self.include_background}); give one per kept channel."
            )
        alpha = prep.prob.new_tensor(self.alpha)
        return alpha if weights is None else alpha * weights

    def poly_term(self, prep: Prepared, weights: torch.Tensor | None) -> torch.Tensor:
        """The unreduced ``epsilon * (1 - p_t) ** (gamma + 1)``, shaped like the output of ``pixel_focal_term``."""
        power = self.gamma + 1.0
        if prep.binary:
            p, y = prep.prob_clipped[:, prep.kept], prep.target[:, prep.kept]  # type: ignore[index]
            term = y * safe_pow(1.0 - p, power) + (1.0 - y) * safe_pow(p, power)
        else:
            full = torch.ones(prep.num_channels, dtype=prep.prob.dtype, device=prep.prob.device)
            full[: prep.num_channels - prep.num_kept] = 0.0  # dropped background channel
            if weights is not None:
                full[prep.kept] = weights
            if prep.labels is not None:
                log_pt = prep.log_prob.gather(1, prep.labels)
                return self.epsilon * safe_pow(-torch.expm1(log_pt), power) * full[prep.labels]
            term = prep.target * safe_pow(1.0 - prep.prob_clipped, power)  # type: ignore[operator]
            term = (term * full.view(1, -1, *([1] * (term.ndim - 2))))[:, prep.kept]
            return self.epsilon * term
        if weights is not None:
            term = term * weights.view(1, -1, *([1] * (term.ndim - 2)))
        return self.epsilon * term

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: the network output ``[B, C, *spatial]`` (logits with ``sigmoid``/``softmax``, else probabilities).
            target: ``[B, 1, *spatial]`` class indices with ``to_onehot_y=True``, else ``[B, C, *spatial]``.

        Returns:
            the loss: a scalar for ``"mean"``/``"sum"``, ``[B, K, *spatial]`` for ``"none"``.

        Raises:
            ValueError: for mismatched shapes, class indices out of range, non-finite inputs or a wrong number of
                weights.
        """
        prep = self._prepare(input, target)
        weights = step_class_weights(self, self.class_weights, target, prep.num_channels, prep.kept, prep.prob)
        term = pixel_focal_term(prep, self._alpha(prep, weights), self.gamma, None)
        if self.epsilon != 0.0:
            term = term + self.poly_term(prep, weights)
        return self._checked(self._pixel_reduce(term, prep))
