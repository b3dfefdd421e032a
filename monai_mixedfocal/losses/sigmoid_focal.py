# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Sigmoid (binary and multi-label) focal losses: RetinaNet's focal loss and the asymmetric loss (ASL).

Each channel ``c`` is an independent binary problem with ``p = sigmoid(x_c)`` and a 0/1 (or soft) target ``y``:

    L = alpha_t * [ y (1 - p)^gamma_pos (-log p) + (1 - y) p_m^gamma_neg (-log(1 - p_m)) ]
        + poly_epsilon * [ y (1 - p)^(gamma_pos + 1) + (1 - y) p_m^(gamma_neg + 1) ]

with ``alpha_t = alpha`` on positives and ``1 - alpha`` on negatives (RetinaNet; ``alpha=None``: 1 on both) and
``p_m = max(p - clip, 0)`` (ASL's probability margin; ``clip=0``: ``p_m = p``). ``gamma_pos = gamma_neg = gamma`` and
``clip = 0`` is the focal loss of Lin et al. 2017, identical to ``torchvision.ops.sigmoid_focal_loss``; the last line is
the Poly-1 term of Leng et al. 2022 (``(1 - p_t)^(gamma + 1)``; ``(1 - p_t)`` for cross entropy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from monai.utils import LossReduction

from monai_mixedfocal.losses._base import SegmentationLoss, check_finite, check_positive, check_unit_interval
from monai_mixedfocal.losses._terms import Prepared, safe_pow
from monai_mixedfocal.losses.class_weights import (
    ClassWeights,
    ClassWeightsState,
    make_class_weights,
    step_class_weights,
)

__all__ = ["AsymmetricSigmoidFocalLoss", "SigmoidFocalLoss"]


def _binary_view(prep: Prepared) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(p, y, log p, log(1 - p))`` of the kept channels, each channel taken as a binary problem."""
    kept = prep.kept
    target = prep.target
    if target is None:  # class indices (multi-channel probabilities with to_onehot_y)
        target = F.one_hot(prep.labels[:, 0], prep.num_channels).movedim(-1, 1).to(prep.prob)  # type: ignore[index]
    log_neg = prep.log_prob_neg if prep.log_prob_neg is not None else torch.log1p(-prep.prob_clipped)
    return prep.prob_clipped[:, kept], target[:, kept], prep.log_prob[:, kept], log_neg[:, kept]


class SigmoidFocalLoss(ClassWeightsState, SegmentationLoss):
    """The sigmoid focal loss of RetinaNet (Lin et al. 2017) for binary and multi-label segmentation.

    Per voxel and channel ``c`` (``p = sigmoid(x_c)``, ``y`` its target, ``p_t = p`` if ``y = 1`` else ``1 - p``):
    ``FL = -alpha_t * (1 - p_t) ** gamma * log(p_t)``, with ``alpha_t = alpha`` for positives and ``1 - alpha`` for
    negatives. Optional: a separate ``gamma_neg`` and probability margin ``clip`` for the negatives (the asymmetric loss
    of Ridnik et al. 2021, see :class:`AsymmetricSigmoidFocalLoss`), the Poly-1 term
    ``poly_epsilon * (1 - p_t) ** (gamma + 1)`` (Leng et al. 2022), per-class weights ``class_weights`` and RetinaNet's
    normalisation by the number of positive voxels. Logarithms are computed from the logits (``logsigmoid``), so
    logits of +/-100 give finite values and gradients.

    Reduction (``normalize_by_positives=False``): ``"mean"`` sums over channels and averages over voxels and images (the
    package convention; for one channel it equals ``torchvision.ops.sigmoid_focal_loss(..., reduction="mean")``, for
    ``C`` channels ``C`` times it); ``"sum"`` averages over the voxels of each image and sums over images; ``"none"``
    returns ``[B, K, *spatial]``. With ``normalize_by_positives=True`` (RetinaNet): ``"mean"`` is the sum over
    everything divided by the number of positive target voxels of the batch (at least 1), ``"sum"`` the per-image sum
    divided by the image's positives (at least 1), summed over images, ``"none"`` the elements divided by the batch's
    positives.

    Args:
        alpha: the weight of the positives in ``[0, 1]`` (``1 - alpha`` weights the negatives), or ``None`` for none.
        gamma: the focusing parameter of the positives (and of the negatives unless ``gamma_neg`` is given), ``>= 0``.
        gamma_neg: the focusing parameter of the negatives, ``>= 0``; ``None``: ``gamma``.
        clip: ASL's probability margin for the negatives in ``[0, 1)`` (``p_m = max(p - clip, 0)``).
        normalize_by_positives: divide by the number of positive voxels instead of averaging over voxels.
        poly_epsilon: the Poly-1 coefficient (``0``: plain focal loss; may be negative, > -1 recommended).
        class_weights: per-channel weights: a sequence (one per output channel), ``"effective_number"``,
            ``"running"`` or a :class:`~monai_mixedfocal.losses.class_weights.ClassWeights` provider.
        class_weight_options: keyword arguments of the provider (see
            :func:`~monai_mixedfocal.losses.class_weights.make_class_weights`).
        sigmoid: apply a sigmoid to the input (default ``True`` unless ``other_act`` is given); ``False``: the input
            holds probabilities (clipped to ``[1e-7, 1 - 1e-7]`` before the logarithms).
        kwargs: the other common arguments of :class:`~monai_mixedfocal.losses._base.SegmentationLoss`
            (``include_background``, ``to_onehot_y``, ``other_act``, ``reduction``); ``softmax`` is not allowed.

    Raises:
        ValueError: for an argument out of range, or ``softmax=True``.

    Example:
        >>> import torch
        >>> from monai_mixedfocal.losses import SigmoidFocalLoss
        >>> loss = SigmoidFocalLoss(alpha=0.25, gamma=2.0, normalize_by_positives=True)
        >>> value = loss(torch.randn(2, 1, 16, 16), torch.randint(0, 2, (2, 1, 16, 16)).float())

    Reference:
        Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017; Ridnik et al., "Asymmetric Loss for
        Multi-Label Classification", ICCV 2021; Leng et al., "PolyLoss", ICLR 2022.
    """

    #: the loss scores each channel with its own sigmoid and never takes ``softmax=True``
    sigmoid_only: ClassVar[bool] = True

    def __init__(
        self,
        alpha: float | None = 0.25,
        gamma: float = 2.0,
        gamma_neg: float | None = None,
        clip: float = 0.0,
        normalize_by_positives: bool = False,
        poly_epsilon: float = 0.0,
        class_weights: str | Sequence[float] | ClassWeights | None = None,
        class_weight_options: Mapping[str, Any] | None = None,
        sigmoid: bool | None = None,
        other_act: Callable | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("softmax"):
            raise ValueError(f"{type(self).__name__} is a sigmoid loss; softmax=True is not supported.")
        if sigmoid is None:
            sigmoid = other_act is None
        super().__init__(sigmoid=sigmoid, other_act=other_act, **kwargs)
        check_unit_interval("alpha", alpha)
        check_positive("gamma", gamma, allow_zero=True)
        if gamma_neg is not None:
            check_positive("gamma_neg", gamma_neg, allow_zero=True)
        if not 0.0 <= float(clip) < 1.0:
            raise ValueError(f"clip must lie in [0, 1); got {clip}.")
        self.alpha = None if alpha is None else float(alpha)
        self.gamma = float(gamma)
        self.gamma_neg = self.gamma if gamma_neg is None else float(gamma_neg)
        self.clip = float(clip)
        self.normalize_by_positives = bool(normalize_by_positives)
        check_finite("poly_epsilon", poly_epsilon)
        self.poly_epsilon = float(poly_epsilon)
        self.class_weights = make_class_weights(class_weights, class_weight_options)

    def per_element_loss(self, prep: Prepared, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The unreduced loss of every image, kept channel and voxel, ``[B, K, *spatial]``.

        Args:
            prep: the prepared input.
            weights: optional per-kept-channel weights ``[K]``.
        """
        p, y, log_p, log_q = _binary_view(prep)
        q = log_q.exp()  # 1 - p, exact for logits (sigmoid(-x))
        p_neg = p if self.clip == 0.0 else (p - self.clip).clamp_min(0.0)
        log_q_neg = log_q if self.clip == 0.0 else torch.log1p(-p_neg)
        pos = -y * log_p
        neg = -(1.0 - y) * log_q_neg
        if self.gamma != 0.0:
            pos = safe_pow(q, self.gamma) * pos
        if self.gamma_neg != 0.0:
            neg = safe_pow(p_neg, self.gamma_neg) * neg
        if self.alpha is not None:
            pos, neg = self.alpha * pos, (1.0 - self.alpha) * neg
        term = pos + neg
        if self.poly_epsilon != 0.0:
            poly = y * safe_pow(q, self.gamma + 1.0) + (1.0 - y) * safe_pow(p_neg, self.gamma_neg + 1.0)
            term = term + self.poly_epsilon * poly
        if weights is not None:
            term = term * weights.view(1, -1, *([1] * (term.ndim - 2)))
        return term

    def _reduce(self, term: torch.Tensor, prep: Prepared, positives: torch.Tensor) -> torch.Tensor:
        if self.normalize_by_positives:
            if self.reduction == LossReduction.SUM.value:
                per_image = term.reshape(term.shape[0], -1).sum(1)
                return (per_image / positives.reshape(positives.shape[0], -1).sum(1).clamp_min(1.0)).sum()
            total = positives.sum().clamp_min(1.0)
            return term.sum() / total if self.reduction == LossReduction.MEAN.value else term / total
        if self.reduction == LossReduction.NONE.value:
            return term
        return self._pixel_reduce(term, prep)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: the network output ``[B, C, *spatial]`` (logits with ``sigmoid``, else probabilities).
            target: ``[B, C, *spatial]`` 0/1 (or soft) targets per channel, or ``[B, 1, *spatial]`` class indices
                with ``to_onehot_y=True`` (one-hot over the ``C`` channels).

        Returns:
            the loss: a scalar for ``"mean"``/``"sum"``, ``[B, K, *spatial]`` for ``"none"``.

        Raises:
            ValueError: for mismatched shapes, out-of-range targets, non-finite inputs or a wrong number of class
                weights.
        """
        prep = self._prepare(input, target)
        weights = step_class_weights(self, self.class_weights, target, prep.num_channels, prep.kept, prep.prob)
        term = self.per_element_loss(prep, weights)
        positives = _binary_view(prep)[1] if self.normalize_by_positives else term
        return self._checked(self._reduce(term, prep, positives))


class AsymmetricSigmoidFocalLoss(SigmoidFocalLoss):
    """The asymmetric loss (ASL) of Ridnik et al. 2021: separate focusing of positives and negatives.

    ``L = y (1 - p)^gamma_pos (-log p) + (1 - y) p_m^gamma_neg (-log(1 - p_m))``, ``p_m = max(p - clip, 0)``.
    A large ``gamma_neg`` suppresses the many easy negatives (background voxels) while ``gamma_pos`` keeps the
    gradient of the rare positives; the margin ``clip`` discards negatives with ``p < clip`` altogether. It is
    :class:`SigmoidFocalLoss` with ``gamma=gamma_pos`` and no ``alpha`` by default.
    Not to be confused with the asymmetric focal loss of Yeung et al. (the focal part of
    :class:`~monai_mixedfocal.losses.UnifiedFocalLoss`), which is a softmax loss.

    Args:
        gamma_pos: focusing parameter of the positives, ``>= 0`` (ASL default 0).
        gamma_neg: focusing parameter of the negatives, ``>= 0`` (ASL default 4).
        clip: the probability margin of the negatives in ``[0, 1)`` (ASL default 0.05).
        alpha: RetinaNet's ``alpha_t`` (default ``None``: none).
        kwargs: the other arguments of :class:`SigmoidFocalLoss`.

    Example:
        >>> import torch
        >>> from monai_mixedfocal.losses import AsymmetricSigmoidFocalLoss
        >>> loss = AsymmetricSigmoidFocalLoss(gamma_pos=0.0, gamma_neg=4.0, clip=0.05)
        >>> value = loss(torch.randn(2, 3, 8, 8), torch.randint(0, 2, (2, 3, 8, 8)).float())

    Reference:
        Ridnik et al., "Asymmetric Loss for Multi-Label Classification", ICCV 2021.
    """

    #: arguments of :class:`SigmoidFocalLoss` that this loss replaces (refused, and left out of its argument list)
    replaced_arguments: ClassVar[dict[str, str]] = {"gamma": "gamma_pos and gamma_neg"}

    def __init__(
        self,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        alpha: float | None = None,
        **kwargs: Any,
    ) -> None:
        for name, instead in self.replaced_arguments.items():
            if name in kwargs:
                raise TypeError(f"{type(self).__name__} takes {instead}, not {name} (got {name}={kwargs[name]!r}).")
        check_positive("gamma_pos", gamma_pos, allow_zero=True)
        super().__init__(alpha=alpha, gamma=gamma_pos, gamma_neg=gamma_neg, clip=clip, **kwargs)
        self.gamma_pos = self.gamma
