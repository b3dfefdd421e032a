# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The loss registry: every loss of the paper's study by name, with the paper's hyper-parameters.

>>> from monai_mixedfocal.losses import get_loss
>>> loss = get_loss("mixed_focal", softmax=True, to_onehot_y=True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.nn.modules.loss import _Loss

from monai_mixedfocal.losses.compound import ComboLoss, MixedFocalLoss
from monai_mixedfocal.losses.distribution import CategoricalFocalLoss
from monai_mixedfocal.losses.poly import Poly1Loss
from monai_mixedfocal.losses.region import CosineTverskyLoss, FocalTverskyLoss, ModifiedDiceLoss
from monai_mixedfocal.losses.sigmoid_focal import AsymmetricSigmoidFocalLoss, SigmoidFocalLoss
from monai_mixedfocal.losses.unified import UnifiedFocalLoss

# The Unified Focal loss defaults of its authors' code (mlyg/unified-focal-loss, 2022)
_UNIFIED: dict[str, Any] = {"lambda_focal": 0.5, "delta": 0.6, "gamma": 0.5}

#: name -> (loss class, the paper's hyper-parameters; Yeung et al. 2021, Section II and III.B)
PAPER_PRESETS: dict[str, tuple[Callable[..., _Loss], dict[str, Any]]] = {
    "cross_entropy": (CategoricalFocalLoss, {"alpha": 1.0, "gamma": 0.0}),
    "focal": (CategoricalFocalLoss, {"alpha": 0.25, "gamma": 2.0}),
    "dice": (ModifiedDiceLoss, {"delta": 0.5}),
    "tversky": (ModifiedDiceLoss, {"delta": 0.7}),
    "focal_tversky": (FocalTverskyLoss, {"delta": 0.7, "gamma": 4.0 / 3.0}),
    "cosine_tversky": (CosineTverskyLoss, {"delta": 0.7, "gamma": 1.0}),
    "combo": (ComboLoss, {}),
    "mixed_focal": (MixedFocalLoss, {}),
    # Beyond the paper (docs/losses_beyond.md): Yeung et al. 2022, Lin et al. 2017, Ridnik et al. 2021, Leng et al. 2022
    "unified_focal": (UnifiedFocalLoss, {**_UNIFIED, "asymmetric": False}),
    "asymmetric_unified_focal": (UnifiedFocalLoss, {**_UNIFIED, "asymmetric": True}),
    "sigmoid_focal": (SigmoidFocalLoss, {"alpha": 0.25, "gamma": 2.0}),
    "asymmetric_focal": (AsymmetricSigmoidFocalLoss, {"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05}),
    "poly1_ce": (Poly1Loss, {"epsilon": 1.0, "alpha": 1.0, "gamma": 0.0}),
    "poly1_focal": (Poly1Loss, {"epsilon": 1.0, "alpha": 0.25, "gamma": 2.0}),
}

#: the valid names of :func:`get_loss`
LOSS_NAMES: tuple[str, ...] = tuple(PAPER_PRESETS)


def loss_class(name: str) -> Callable[..., _Loss]:
    """The class of a registry loss, without building it (e.g. to see whether it is a sigmoid loss).

    Args:
        name: one of :data:`LOSS_NAMES` (case-insensitive; ``-`` and spaces are read as ``_``).

    Raises:
        ValueError: for an unknown name (the message lists the valid names).
    """
    return PAPER_PRESETS[_registry_key(name)][0]


def _registry_key(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in PAPER_PRESETS:
        raise ValueError(f"unknown loss name {name!r}; valid names are: {', '.join(LOSS_NAMES)}.")
    return key


def get_loss(name: str, **overrides: Any) -> _Loss:
    """Build a loss of the registry by name, with the paper's hyper-parameters and any overrides.

    Args:
        name: one of :data:`LOSS_NAMES` (case-insensitive; ``-`` and spaces are read as ``_``).
        overrides: constructor arguments that replace the preset's or add to them, e.g. ``softmax=True,
            to_onehot_y=True`` or ``gamma=3.0``.

    Returns:
        the loss module.

    Raises:
        ValueError: for an unknown name (the message lists the valid names).
        TypeError: for an argument the loss does not take (the message names the loss, the closest arguments and all
            the arguments it takes).

    Example:
        >>> from monai_mixedfocal.losses import get_loss
        >>> loss = get_loss("focal_tversky", softmax=True, to_onehot_y=True)
    """
    cls, preset = PAPER_PRESETS[_registry_key(name)]
    return cls(**{**preset, **overrides})
