# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Class weights that adapt to the data by themselves: effective number of samples and running label frequencies.

Three providers share one small interface (:class:`ClassWeights`: ``weights()``, ``update(target, num_classes)``,
``state_dict()``/``load_state_dict()``):

- :class:`FixedClassWeights`: a given sequence.
- :class:`EffectiveNumberWeights` (Cui et al. 2019): ``w_c = (1 - beta) / (1 - beta ** n_c)``, normalised to sum to
  ``C``, from the label voxel counts ``n_c`` of the training datalist, counted once with nibabel and cached in a JSON
  file beside the datalist.
- :class:`RunningClassWeights`: ``w_c ∝ (f_c + eps) ** -power``, normalised to sum to ``C``, from an exponential moving
  average ``f_c`` of the label frequencies of the training batches (updated by the loss itself in training mode).

The losses of this package that take ``class_weights`` (:class:`~monai_mixedfocal.losses.SigmoidFocalLoss`,
:class:`~monai_mixedfocal.losses.Poly1Loss`, :class:`~monai_mixedfocal.losses.UnifiedFocalLoss`) accept a sequence,
``"effective_number"``, ``"running"`` or a provider; :class:`ClassWeightedLoss` sets the per-class ``alpha`` of any
loss built on :class:`~monai_mixedfocal.losses.CategoricalFocalLoss` (``focal``, ``mixed_focal``) at every step; and
:class:`ClassWeightsLogger` is an Ignite handler that writes the current weights to the training log every epoch.

Reference:
    Cui Y, Jia M, Lin T-Y, Song Y, Belongie S. "Class-Balanced Loss Based on Effective Number of Samples". CVPR 2019.
"""

from __future__ import annotations

from monai_mixedfocal.losses.class_weights.label_counts import CACHE_SUFFIX, count_label_voxels
from monai_mixedfocal.losses.class_weights.logger import ClassWeightsLogger
from monai_mixedfocal.losses.class_weights.providers import (
    ClassWeights,
    ClassWeightsState,
    EffectiveNumberWeights,
    FixedClassWeights,
    RunningClassWeights,
    class_weight_vector,
    effective_number_weights,
    make_class_weights,
)
from monai_mixedfocal.losses.class_weights.weighted_loss import ClassWeightedLoss, step_class_weights

__all__ = [
    "CACHE_SUFFIX",
    "ClassWeightedLoss",
    "ClassWeights",
    "ClassWeightsLogger",
    "ClassWeightsState",
    "EffectiveNumberWeights",
    "FixedClassWeights",
    "RunningClassWeights",
    "class_weight_vector",
    "count_label_voxels",
    "effective_number_weights",
    "make_class_weights",
    "step_class_weights",
]
