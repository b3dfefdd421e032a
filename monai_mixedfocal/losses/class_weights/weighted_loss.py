# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Class weights in a loss: :class:`ClassWeightedLoss` sets the per-class ``alpha`` of any loss built on
:class:`~monai_mixedfocal.losses.CategoricalFocalLoss` from a provider at every step, and :func:`step_class_weights`
is the step that every loss with ``class_weights`` takes (update in training mode, then read the weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.nn.modules.loss import _Loss

from monai_mixedfocal.losses.class_weights.providers import (
    ClassWeights,
    ClassWeightsState,
    class_weight_vector,
    make_class_weights,
)

__all__ = ["ClassWeightedLoss", "step_class_weights"]


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
