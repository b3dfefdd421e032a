# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The losses inside a user's ``torch.compile``: the loss alone, and a training step of a network with its loss.

A user of PyTorch 2 may compile the loss or the whole training step. Inside such a compilation the losses take the
plain autograd path (the fused kernels and their autograd function are not traced; ``_fused.fused_inputs``), which the
user's compilation then compiles; the label-range check is data-dependent and breaks the graph there, which PyTorch
reports in its log and handles. Values and gradients must equal those of the loss called eagerly, which here runs
the fused path (its eager kernels, so that no kernel compilation of ours adds to the test's time). Marked ``slow``:
each loss costs seconds of Inductor compilation.
"""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet

from monai_mixedfocal.losses import LOSS_NAMES, SigmoidFocalLoss, _fused, get_loss, loss_class

pytestmark = pytest.mark.slow

# at least 2**20 elements: the size from which the default mode takes the fused path when called eagerly
SHAPE = (2, 3, 48, 64, 64)


def _options(name: str) -> dict[str, bool]:
    """The sigmoid losses on multi-label sigmoid logits (BraTS-style regions), the others on softmax logits."""
    if issubclass(loss_class(name), SigmoidFocalLoss):
        return {"sigmoid": True, "to_onehot_y": True}
    return {"softmax": True, "to_onehot_y": True}


def _case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(SHAPE, generator=generator)
    labels = torch.randint(0, SHAPE[1], (SHAPE[0], 1, *SHAPE[2:]), generator=generator)
    return logits, labels


def _value_and_grad(loss: torch.nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
    x = logits.clone().requires_grad_()
    value = loss(x, labels)
    value.backward()
    assert x.grad is not None
    return value.item(), x.grad


@pytest.fixture(autouse=True)
def _fresh_compiler() -> None:
    torch._dynamo.reset()


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_compiled_by_the_user_equals_the_loss_called_eagerly(name: str) -> None:
    loss = get_loss(name, **_options(name))
    logits, labels = _case()
    assert logits.numel() >= _fused.AUTO_MIN_ELEMENTS
    with _fused.use_fused_mode("eager"):
        expected, expected_grad = _value_and_grad(loss, logits, labels)
    value, grad = _value_and_grad(torch.compile(loss), logits, labels)
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-7)


def test_training_step_compiled_by_the_user_equals_the_eager_one() -> None:
    """A network and the Mixed Focal loss compiled as one function: the same loss and parameter gradients."""
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,), num_res_units=0)
    loss = get_loss("mixed_focal", softmax=True, to_onehot_y=True)
    image = torch.randn(2, 1, 32, 48, 48)
    _, labels = _case()
    labels = labels[..., :32, :48, :48]

    def step(batch: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss(net(batch), target)

    def gradients(function: object) -> tuple[float, list[torch.Tensor]]:
        net.zero_grad()
        value = function(image, labels)  # type: ignore[operator]
        value.backward()
        return value.item(), [p.grad.clone() for p in net.parameters()]  # type: ignore[union-attr]

    with _fused.use_fused_mode("eager"):
        expected, expected_grads = gradients(step)
    value, grads = gradients(torch.compile(step))
    assert value == pytest.approx(expected, rel=1e-5)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-3, atol=1e-6)
