# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The Mixed Focal loss family as MONAI losses (Yeung et al., "A Mixed Focal Loss Function for Handling Class
Imbalanced Medical Image Segmentation", 2021).

Every class is a ``torch.nn.modules.loss._Loss`` with MONAI's argument conventions (``include_background``,
``to_onehot_y``, ``sigmoid``, ``softmax``, ``other_act``, ``reduction``, ``batch``, ``smooth_nr``, ``smooth_dr``), and
none is named like a ``monai.losses`` class, so that short names in bundle configs cannot clash. In bundle configs,
use the full dotted path: ``"_target_": "monai_mixedfocal.losses.MixedFocalLoss"``.
"""

from __future__ import annotations

from monai_mixedfocal.losses._base import SegmentationLoss
from monai_mixedfocal.losses.class_weights import (
    ClassWeightedLoss,
    ClassWeightsLogger,
    EffectiveNumberWeights,
    RunningClassWeights,
)
from monai_mixedfocal.losses.compound import ComboLoss, MixedFocalLoss
from monai_mixedfocal.losses.distribution import CategoricalFocalLoss
from monai_mixedfocal.losses.poly import Poly1Loss
from monai_mixedfocal.losses.region import CosineTverskyLoss, FocalTverskyLoss, ModifiedDiceLoss
from monai_mixedfocal.losses.registry import LOSS_NAMES, PAPER_PRESETS, get_loss, loss_class
from monai_mixedfocal.losses.sigmoid_focal import AsymmetricSigmoidFocalLoss, SigmoidFocalLoss
from monai_mixedfocal.losses.unified import UnifiedFocalLoss

__all__ = [
    "LOSS_NAMES",
    "PAPER_PRESETS",
    "AsymmetricSigmoidFocalLoss",
    "CategoricalFocalLoss",
    "ClassWeightedLoss",
    "ClassWeightsLogger",
    "ComboLoss",
    "CosineTverskyLoss",
    "EffectiveNumberWeights",
    "FocalTverskyLoss",
    "MixedFocalLoss",
    "ModifiedDiceLoss",
    "Poly1Loss",
    "RunningClassWeights",
    "SegmentationLoss",
    "SigmoidFocalLoss",
    "UnifiedFocalLoss",
    "get_loss",
    "loss_class",
]
