# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Network helpers for MONAI networks: initialise the output layer to a class prior (RetinaNet)."""

from __future__ import annotations

from monai_mixedfocal.networks.bias_init import find_output_layer, init_prior_bias, prior_logits

__all__ = ["find_output_layer", "init_prior_bias", "prior_logits"]
