# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Cases shared by the tests of the fused fast path: the losses, the input forms, and value / gradient comparison."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from monai_mixedfocal.losses import (
    CategoricalFocalLoss,
    ComboLoss,
    CosineTverskyLoss,
    FocalTverskyLoss,
    MixedFocalLoss,
    ModifiedDiceLoss,
    _fused,
)

ROOT = Path(__file__).resolve().parents[1]
SHAPE_3D = (2, 3, 5, 4, 6)
SHAPE_2D = (3, 4, 7, 9)

# name -> factory(num_kept) (per-class alphas need the number of kept channels)
LOSSES: dict[str, Callable[[int], Callable[..., _Loss]]] = {
    "dice": lambda k: partial(ModifiedDiceLoss, delta=0.5),
    "tversky": lambda k: partial(ModifiedDiceLoss, delta=0.7),
    "focal_tversky": lambda k: partial(FocalTverskyLoss),
    "focal_tversky_g075": lambda k: partial(FocalTverskyLoss, gamma=0.75),
    "cosine_tversky_g25": lambda k: partial(CosineTverskyLoss, gamma=2.5),
    "focal": lambda k: partial(CategoricalFocalLoss),
    "cross_entropy": lambda k: partial(CategoricalFocalLoss, alpha=1.0, gamma=0.0),
    "focal_beta_g05": lambda k: partial(CategoricalFocalLoss, gamma=0.5, beta=0.7),
    "focal_alpha_g1": lambda k: partial(CategoricalFocalLoss, gamma=1.0, alpha=[0.5 + 0.25 * c for c in range(k)]),
    "focal_alpha_g3": lambda k: partial(CategoricalFocalLoss, gamma=3.0, alpha=[1.0 + c for c in range(k)], beta=0.2),
    "combo": lambda k: partial(ComboLoss),
    "combo_modified": lambda k: partial(ComboLoss, alpha=0.5, beta=0.7, delta=0.7),
    "mixed_focal": lambda k: partial(MixedFocalLoss),
    "mixed_focal_eq23": lambda k: partial(
        MixedFocalLoss, lambda_focal=0.3, beta=0.6, alpha=[0.2 * (c + 1) for c in range(k)], gamma_tversky=0.8
    ),
}


def labels_of(shape: tuple[int, ...], num_classes: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (shape[0], 1, *shape[2:]), generator=generator)
    labels.view(shape[0], -1)[:, 0] = 0  # class 0 present everywhere; one class empty in the first image
    labels[0][labels[0] == num_classes - 1] = 0
    return labels


def make_case(
    mode: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(input, target, loss kwargs)`` of one input form."""
    generator = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(shape, generator=generator, dtype=dtype)
    num_channels = shape[1]
    labels = labels_of(shape, max(num_channels, 2), seed)
    onehot = F.one_hot(labels[:, 0], max(num_channels, 2)).movedim(-1, 1).to(dtype)[:, :num_channels]
    if num_channels == 1:
        onehot = labels.to(dtype)
    soft = torch.softmax(torch.randn(shape, generator=generator, dtype=dtype), 1)
    forms: dict[str, tuple[torch.Tensor, torch.Tensor, dict]] = {
        "softmax-labels": (logits, labels, {"softmax": True, "to_onehot_y": True}),
        "softmax-onehot": (logits, onehot, {"softmax": True}),
        "softmax-soft": (logits, soft, {"softmax": True}),
        "sigmoid-labels": (logits, labels, {"sigmoid": True, "to_onehot_y": True}),
        "sigmoid-onehot": (logits, onehot, {"sigmoid": True}),
        "probabilities-labels": (torch.softmax(logits, 1), labels, {"to_onehot_y": True}),
        "probabilities-onehot": (torch.softmax(logits, 1), onehot, {}),
        "other_act-labels": (logits, labels, {"other_act": partial(torch.softmax, dim=1), "to_onehot_y": True}),
    }
    return forms[mode]


MODES = (
    "softmax-labels",
    "softmax-onehot",
    "softmax-soft",
    "sigmoid-labels",
    "sigmoid-onehot",
    "probabilities-labels",
    "probabilities-onehot",
    "other_act-labels",
)
OPTIONS: tuple[dict[str, Any], ...] = (
    {},
    {"include_background": False},
    {"batch": True, "reduction": "sum"},
    {"include_background": False, "batch": True},
)


def value_and_grad(loss: _Loss, x: torch.Tensor, target: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = x.clone().requires_grad_(True)
    with _fused.use_fused_mode(mode):
        value = loss(leaf, target)
    value.sum().backward()
    assert leaf.grad is not None
    return value.detach(), leaf.grad


def assert_same(fast: torch.Tensor, ref: torch.Tensor, tol: float, what: str) -> None:
    assert torch.isfinite(fast).all(), f"{what}: not finite"
    scale = max(float(ref.abs().max()), 1e-30)
    torch.testing.assert_close(fast, ref, rtol=tol, atol=tol * scale, msg=lambda m: f"{what}: {m}")
