# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Tests of the RetinaNet prior initialisation of the output layer, on monai.networks.nets.UNet."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

from monai_mixedfocal.networks import find_output_layer, init_prior_bias, prior_logits

PI = 0.01


def _unet(out_channels: int, num_res_units: int = 0) -> UNet:
    torch.manual_seed(0)
    return UNet(2, 1, out_channels, channels=(4, 8, 16), strides=(2, 2), num_res_units=num_res_units)


def _probabilities(net: nn.Module, activation: str, x: torch.Tensor) -> torch.Tensor:
    net.eval()
    with torch.no_grad():
        out = net(x)
    return torch.sigmoid(out) if activation == "sigmoid" else torch.softmax(out, dim=1)


def test_prior_logits_are_the_inverse_activation():
    assert float(prior_logits(1, PI)[0]) == pytest.approx(-math.log((1 - PI) / PI))
    soft = prior_logits(3, PI, "softmax")
    assert torch.softmax(soft, 0).tolist() == pytest.approx([1 - 2 * PI, PI, PI])
    custom = prior_logits(2, [0.3, 0.05], "sigmoid")
    assert torch.sigmoid(custom).tolist() == pytest.approx([0.3, 0.05])


@pytest.mark.parametrize("activation, channels", [("sigmoid", 1), ("sigmoid", 2), ("softmax", 3)])
def test_unet_output_has_the_prior_at_init(activation, channels):
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    net = _unet(channels)
    before = _probabilities(net, activation, x)
    layer = init_prior_bias(net, PI, activation)
    assert layer is find_output_layer(net)
    probs = _probabilities(net, activation, x)
    expected = torch.tensor([PI] * channels if activation == "sigmoid" else [1 - 2 * PI, PI, PI])
    # RetinaNet's weight std 0.01 leaves the logits close to the bias everywhere
    assert torch.allclose(probs.mean(dim=(0, 2, 3)), expected, rtol=0.05)
    assert ((probs - expected.view(1, -1, 1, 1)).abs() / expected.view(1, -1, 1, 1)).max() < 0.5
    assert not torch.allclose(before.mean(dim=(0, 2, 3)), expected, rtol=0.05)
    # zero weights: every voxel exactly at the prior
    init_prior_bias(net, PI, activation, weight_std=0.0)
    exact = _probabilities(net, activation, x)
    assert torch.allclose(exact, expected.view(1, -1, 1, 1).expand_as(exact), atol=1e-6)


def test_residual_unet_needs_the_example_input():
    """UNet(num_res_units>0) adds an identity skip after the output convolution: the bias alone is not enough."""
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    net = _unet(1, num_res_units=2)
    init_prior_bias(net, PI, "sigmoid")
    with torch.no_grad():
        uncorrected = net.eval()(x).mean()
    assert abs(float(uncorrected) - float(prior_logits(1, PI)[0])) > 0.1
    init_prior_bias(net, PI, "sigmoid", example_input=x)
    with torch.no_grad():
        corrected = net.eval()(x).mean()
    assert float(corrected) == pytest.approx(float(prior_logits(1, PI)[0]), abs=1e-4)


def test_errors():
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        prior_logits(1, 1.5)
    with pytest.raises(ValueError, match="no probability for the background"):
        prior_logits(3, 0.6, "softmax")
    with pytest.raises(ValueError, match="sum to 1"):
        prior_logits(2, [0.5, 0.6], "softmax")
    with pytest.raises(ValueError, match="2 priors"):
        prior_logits(3, [0.5, 0.5], "softmax")
    with pytest.raises(ValueError, match="activation"):
        prior_logits(1, PI, "tanh")
    with pytest.raises(ValueError, match="no bias"):
        init_prior_bias(nn.Sequential(nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 1, bias=False)), layer="1")
    with pytest.raises(ValueError, match="no convolution"):
        init_prior_bias(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="weight_std"):
        init_prior_bias(_unet(1), weight_std=-1.0)
