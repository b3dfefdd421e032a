# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Initialise the bias of a network's output layer so that its initial prediction is a foreground prior.

RetinaNet (Lin et al. 2017, Section 4.1) sets the bias of the final classification layer to
``b = -log((1 - pi) / pi)`` with ``pi = 0.01`` (and its weights to a Gaussian with standard deviation 0.01), so that at
the start of training every location predicts foreground with probability ``pi``: the loss of the many background
voxels is then small and training does not diverge. For a softmax output the equivalent is ``b_c = log(pi_c)`` with
``pi_0 = 1 - sum_{c >= 1} pi_c`` for the background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["find_output_layer", "init_prior_bias", "prior_logits"]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def prior_logits(num_channels: int, prior: float | Sequence[float] = 0.01, activation: str = "sigmoid") -> torch.Tensor:
    """The output biases whose activation is the prior.

    Args:
        num_channels: number of output channels ``C``.
        prior: the foreground probability ``pi`` (of every channel for ``"sigmoid"``; of every channel ``c >= 1`` for
            ``"softmax"``, the background getting ``1 - (C - 1) pi``), or one probability per channel (summing to 1
            for ``"softmax"``).
        activation: ``"sigmoid"`` (``b_c = log(pi_c / (1 - pi_c))``) or ``"softmax"`` (``b_c = log pi_c``).

    Returns:
        the biases, float64, ``[C]``.

    Raises:
        ValueError: for an unknown activation, a prior outside ``(0, 1)``, a wrong number of priors, or softmax priors
            that do not sum to 1 (or leave no probability for the background).

    Example:
        >>> round(float(prior_logits(1, 0.01)[0]), 4)
        -4.5951
    """
    if activation not in ("sigmoid", "softmax"):
        raise ValueError(f'activation must be "sigmoid" or "softmax"; got {activation!r}.')
    if isinstance(prior, (int, float)):
        if not 0.0 < float(prior) < 1.0:
            raise ValueError(f"prior must lie in (0, 1); got {prior}.")
        if activation == "sigmoid":
            values = [float(prior)] * num_channels
        else:
            background = 1.0 - (num_channels - 1) * float(prior)
            if background <= 0.0:
                raise ValueError(
                    f"a foreground prior of {prior} for each of {num_channels - 1} classes leaves no probability for "
                    "the background; use a smaller prior."
                )
            values = [background] + [float(prior)] * (num_channels - 1)
    else:
        values = [float(v) for v in prior]
        if len(values) != num_channels:
            raise ValueError(f"got {len(values)} priors for an output layer with {num_channels} channels.")
        if not all(0.0 < v < 1.0 for v in values):
            raise ValueError(f"every prior must lie in (0, 1); got {values}.")
        if activation == "softmax" and not math.isclose(sum(values), 1.0, rel_tol=0.0, abs_tol=1e-6):
            raise ValueError(f"softmax priors must sum to 1; got {values} (sum {sum(values)}).")
    pis = torch.tensor(values, dtype=torch.float64)
    return torch.log(pis) - torch.log1p(-pis) if activation == "sigmoid" else torch.log(pis)


def find_output_layer(network: nn.Module, layer: str | nn.Module | None = None) -> nn.Module:
    """The output layer of a network: ``layer`` itself, the sub-module of that name, or the last convolution / linear
    layer with a bias in registration order (the output convolution of ``monai.networks.nets.UNet``, ``BasicUNet``,
    ``SegResNet`` and most encoder-decoders).

    Raises:
        ValueError: if there is no such layer, or it has no bias.
        AttributeError: if ``layer`` names no sub-module.
    """
    if isinstance(layer, nn.Module):
        found = layer
    elif isinstance(layer, str):
        found = network.get_submodule(layer)
    else:
        candidates = [m for m in network.modules() if isinstance(m, _CONV_TYPES) and m.bias is not None]
        if not candidates:
            raise ValueError(f"{type(network).__name__} has no convolution or linear layer with a bias.")
        found = candidates[-1]
    if getattr(found, "bias", None) is None:
        raise ValueError(f"the output layer {found} has no bias to initialise.")
    return found


def init_prior_bias(
    network: nn.Module,
    prior: float | Sequence[float] = 0.01,
    activation: str = "sigmoid",
    layer: str | nn.Module | None = None,
    weight_std: float | None = 0.01,
    example_input: torch.Tensor | None = None,
) -> nn.Module:
    """Initialise a network's output layer so that its initial prediction is the prior (RetinaNet's ``pi = 0.01``).

    The output layer's bias is set to :func:`prior_logits`, and its weights to ``N(0, weight_std^2)`` (RetinaNet; with
    a small ``weight_std`` the logits are close to the bias everywhere). When something is added after the output
    layer (e.g. the identity skip of a ``ResidualUnit`` in ``UNet(num_res_units > 0)``), pass ``example_input``: the
    network is run once (no gradient, in eval mode) and the bias is shifted so that the mean output logit of every
    channel equals the prior logit.

    Args:
        network: the network (modified in place).
        prior: the foreground prior (see :func:`prior_logits`).
        activation: the activation the loss applies, ``"sigmoid"`` or ``"softmax"``.
        layer: the output layer (module or dotted name); ``None``: :func:`find_output_layer`.
        weight_std: standard deviation of the output layer's new weights, or ``None`` to keep them.
        example_input: an optional input batch used to correct the bias for the mean output.

    Returns:
        the output layer.

    Raises:
        ValueError: see :func:`prior_logits` and :func:`find_output_layer`; ``weight_std < 0``.

    Example:
        >>> from monai.networks.nets import UNet
        >>> net = UNet(3, 1, 3, channels=(8, 16, 32), strides=(2, 2))
        >>> _ = init_prior_bias(net, prior=0.01, activation="softmax")
    """
    if weight_std is not None and not weight_std >= 0.0:
        raise ValueError(f"weight_std must be >= 0 or None; got {weight_std}.")
    out = find_output_layer(network, layer)
    bias: torch.Tensor = out.bias  # type: ignore[assignment]
    target = prior_logits(bias.numel(), prior, activation)
    with torch.no_grad():
        if weight_std is not None:
            out.weight.normal_(0.0, weight_std)  # type: ignore[union-attr]  # std 0: all zeros
        bias.copy_(target.to(bias))
        if example_input is not None:
            was_training = network.training
            network.eval()
            try:
                output = network(example_input)
            finally:
                network.train(was_training)
            if output.shape[1] != bias.numel():
                raise ValueError(
                    f"the network output has {output.shape[1]} channels but the layer {out} has {bias.numel()}; "
                    "pass the output layer explicitly (layer=...)."
                )
            mean = output.transpose(0, 1).reshape(output.shape[1], -1).double().mean(1)
            bias.add_((target - mean).to(bias))
    return out
