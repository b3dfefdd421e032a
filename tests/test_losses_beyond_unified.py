# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Tests of UnifiedFocalLoss: float64 references from the equations and from the authors' binary code, the differences
to MONAI's AsymmetricUnifiedFocalLoss, gradcheck, extreme inputs and validation."""

from __future__ import annotations

import math
import re

import monai
import numpy as np
import pytest
import torch
from monai.losses import AsymmetricUnifiedFocalLoss
from monai.losses.unified_focal_loss import AsymmetricFocalLoss, AsymmetricFocalTverskyLoss
from monai.utils import version_leq

from monai_mixedfocal.losses import UnifiedFocalLoss, get_loss

EPS = 1e-7  # Keras K.epsilon(): the authors' clip and smoothing


def reference_unified(p, y, lam, delta, gamma, asymmetric, rare, reduction="mean", clip=True, smooth=EPS):
    """The multi-class Unified Focal loss from its equations, explicit loops over images and classes (float64)."""
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    pc = np.clip(p, EPS, 1 - EPS) if clip else p
    n_img, n_cls = p.shape[:2]
    focal, tversky = [], []
    for b in range(n_img):
        per_voxel = np.zeros(p[b, 0].shape)
        for c in range(n_cls):
            is_rare = c in rare
            weight = delta if is_rare else 1 - delta
            g = 0.0 if (asymmetric and is_rare) else gamma
            per_voxel += weight * (1 - pc[b, c]) ** g * (-y[b, c] * np.log(pc[b, c]))
            tp = np.sum(y[b, c] * pc[b, c])
            fn = np.sum(y[b, c] * (1 - pc[b, c]))
            fp = np.sum((1 - y[b, c]) * pc[b, c])
            ti = (tp + smooth) / (tp + delta * fn + (1 - delta) * fp + smooth)
            tversky.append((1 - ti) if (asymmetric and not is_rare) else (1 - ti) ** (1 - gamma))
        focal.append(per_voxel.mean())
    agg = np.mean if reduction == "mean" else np.sum
    return lam * agg(focal) + (1 - lam) * agg(tversky)


def authors_unified(y_true, y_pred, weight, delta, gamma, asymmetric):
    """The authors' Keras ``asym_unified_focal_loss`` / ``sym_unified_focal_loss`` in numpy (channels last, 2 classes),
    with the channel taken from the last axis (their ``[:, :, :, c]`` is only right for 2-D images)."""
    p = np.clip(y_pred, EPS, 1 - EPS)
    axis = tuple(range(1, p.ndim - 1))
    tp = np.sum(y_true * p, axis=axis)
    fn = np.sum(y_true * (1 - p), axis=axis)
    fp = np.sum((1 - y_true) * p, axis=axis)
    dice = (tp + EPS) / (tp + delta * fn + (1 - delta) * fp + EPS)
    back_dice = (1 - dice[:, 0]) * ((1 - dice[:, 0]) ** -gamma if not asymmetric else 1.0)
    fore_dice = (1 - dice[:, 1]) * (1 - dice[:, 1]) ** -gamma
    ftl = np.mean(np.stack([back_dice, fore_dice], -1))
    ce = -y_true * np.log(p)
    back_ce = (1 - delta) * (1 - p[..., 0]) ** gamma * ce[..., 0]
    fore_ce = delta * ((1 - p[..., 1]) ** gamma if not asymmetric else 1.0) * ce[..., 1]
    fl = np.mean(back_ce + fore_ce)
    return weight * ftl + (1 - weight) * fl


def _probs(shape, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(shape, generator=gen, dtype=dtype), dim=1)


def _labels(shape, classes, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, classes, shape, generator=gen)


def _onehot(labels, classes):
    return torch.nn.functional.one_hot(labels[:, 0], classes).movedim(-1, 1).double()


@pytest.mark.parametrize("asymmetric", [True, False])
@pytest.mark.parametrize("spatial", [(6, 5), (4, 3, 5)])
def test_binary_equals_authors_code(asymmetric, spatial):
    p = _probs((2, 2, *spatial))
    y = _onehot(_labels((2, 1, *spatial), 2), 2)
    weight = 0.3  # the authors' weight multiplies the focal Tversky part: lambda_focal = 1 - weight
    expected = authors_unified(
        y.movedim(1, -1).numpy(), p.movedim(1, -1).numpy(), weight, delta=0.6, gamma=0.5, asymmetric=asymmetric
    )
    loss = UnifiedFocalLoss(lambda_focal=1 - weight, delta=0.6, gamma=0.5, asymmetric=asymmetric)
    assert float(loss(p, y)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("asymmetric", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("rare", [None, [2], [1, 3]])
def test_multiclass_probabilities_match_reference(asymmetric, reduction, rare):
    p = _probs((2, 4, 5, 4, 3))
    labels = _labels((2, 1, 5, 4, 3), 4)
    loss = UnifiedFocalLoss(
        lambda_focal=0.4, delta=0.7, gamma=0.3, asymmetric=asymmetric, rare_classes=rare, to_onehot_y=True,
        reduction=reduction,
    )  # fmt: skip
    expected = reference_unified(
        p, _onehot(labels, 4), 0.4, 0.7, 0.3, asymmetric, rare or [1, 2, 3], reduction=reduction
    )
    assert float(loss(p, labels)) == pytest.approx(expected, rel=1e-10)
    # the dense one-hot target gives the same value as class indices
    loss.to_onehot_y = False
    assert float(loss(p, _onehot(labels, 4))) == pytest.approx(expected, rel=1e-10)


def test_softmax_logits_match_reference_without_clip():
    logits = 4 * torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    labels = _labels((2, 1, 6, 6), 3)
    loss = UnifiedFocalLoss(softmax=True, to_onehot_y=True, rare_classes=[2])
    expected = reference_unified(torch.softmax(logits, 1), _onehot(labels, 3), 0.5, 0.6, 0.5, True, [2], clip=False)
    assert float(loss(logits, labels)) == pytest.approx(expected, rel=1e-10)


def test_single_channel_sigmoid_is_the_two_class_softmax():
    logits = 3 * torch.randn(2, 1, 7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    mask = _labels((2, 1, 7, 5), 2).double()
    one = UnifiedFocalLoss(sigmoid=True)(logits, mask)
    two = UnifiedFocalLoss(softmax=True, to_onehot_y=True)(torch.cat([torch.zeros_like(logits), logits], 1), mask)
    p = torch.sigmoid(logits)
    expected = reference_unified(torch.cat([1 - p, p], 1), torch.cat([1 - mask, mask], 1), 0.5, 0.6, 0.5, True, [1],
                                 clip=False)  # fmt: skip
    assert float(one) == pytest.approx(expected, rel=1e-10)
    assert float(two) == pytest.approx(expected, rel=1e-10)
    # single-channel probabilities: expanded to [1 - p, p] and clipped as in the authors' code
    probs = UnifiedFocalLoss()(p, mask)
    assert float(probs) == pytest.approx(
        reference_unified(torch.cat([1 - p, p], 1), torch.cat([1 - mask, mask], 1), 0.5, 0.6, 0.5, True, [1]), rel=1e-10
    )


def test_parts_and_lambda():
    p, labels = _probs((2, 3, 6, 6)), _labels((2, 1, 6, 6), 3)
    parts = UnifiedFocalLoss(to_onehot_y=True).parts(p, labels)
    for lam in (0.0, 0.25, 1.0):
        value = UnifiedFocalLoss(lambda_focal=lam, to_onehot_y=True)(p, labels)
        assert float(value) == pytest.approx(lam * float(parts["focal"]) + (1 - lam) * float(parts["focal_tversky"]))
    assert get_loss("asymmetric_unified_focal").asymmetric and not get_loss("unified_focal").asymmetric


def test_where_and_how_much_monai_differs():
    """MONAI 1.6.1 and later: focal part averaged over the 2 classes (half of the authors'; MONAI 1.5 to 1.6.0 sum
    them, as the authors do), otherwise the same for probabilities; no activation (logits get no gradient outside
    [0, 1]); channel 2 is ignored."""
    p, labels = _probs((2, 2, 8, 8)), _labels((2, 1, 8, 8), 2)
    y = _onehot(labels, 2)
    ours = UnifiedFocalLoss(lambda_focal=0.5, delta=0.7, gamma=0.5, to_onehot_y=True)
    parts = ours.parts(p, labels)
    averaged = version_leq("1.6.1", monai.__version__)  # MONAI 1.6.1: loss.mean() instead of mean(sum over classes)
    monai_focal = AsymmetricFocalLoss(delta=0.7, gamma=0.5)(p, y)
    monai_ft = AsymmetricFocalTverskyLoss(delta=0.7, gamma=0.5)(p, y)
    assert float(parts["focal"]) == pytest.approx((2 if averaged else 1) * float(monai_focal), rel=1e-10)
    assert float(parts["focal_tversky"]) == pytest.approx(float(monai_ft), rel=1e-10)
    if not averaged:  # MONAI < 1.6.1's AsymmetricUnifiedFocalLoss also refuses class-index labels with to_onehot_y
        pytest.skip(f"the rest describes MONAI >= 1.6.1's AsymmetricUnifiedFocalLoss; installed: {monai.__version__}")
    monai_total = AsymmetricUnifiedFocalLoss(to_onehot_y=True, weight=0.5, delta=0.7, gamma=0.5)(p, labels)
    difference = float(ours(p, labels)) - float(monai_total)
    assert difference == pytest.approx(0.5 * float(parts["focal"]) / 2, rel=1e-9)
    assert difference > 0

    # logits: MONAI clamps them as probabilities; every logit outside [1e-7, 1 - 1e-7] gets zero gradient
    logits = (3 * torch.randn(2, 2, 8, 8, dtype=torch.float64)).requires_grad_()
    AsymmetricUnifiedFocalLoss(to_onehot_y=True)(logits, labels).backward()
    outside = (logits.detach() < 0) | (logits.detach() > 1)
    assert outside.any() and torch.all(logits.grad[outside] == 0)
    logits.grad = None
    UnifiedFocalLoss(softmax=True, to_onehot_y=True)(logits, labels).backward()
    assert torch.all(logits.grad[outside] != 0) and torch.isfinite(logits.grad).all()

    # three classes: MONAI ignores channel 2, the plugin does not
    p3, labels3 = _probs((1, 3, 8, 8), seed=5), _labels((1, 1, 8, 8), 3, seed=6)
    changed = p3.clone()
    changed[:, 2] = changed[:, 2] * 0.5
    monai3 = AsymmetricUnifiedFocalLoss(to_onehot_y=True, num_classes=3)
    assert float(monai3(p3, labels3)) == pytest.approx(float(monai3(changed, labels3)), rel=1e-12)
    ours3 = UnifiedFocalLoss(to_onehot_y=True)
    assert abs(float(ours3(p3, labels3)) - float(ours3(changed, labels3))) > 1e-3


@pytest.mark.parametrize("asymmetric", [True, False])
def test_gradcheck(asymmetric):
    logits = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    labels = _labels((2, 1, 2, 2), 3)
    loss = UnifiedFocalLoss(softmax=True, to_onehot_y=True, asymmetric=asymmetric, rare_classes=[2])
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (logits,))


@pytest.mark.parametrize("scale", [100.0, -100.0])
def test_perfect_and_extreme_predictions_are_finite(scale):
    labels = _labels((2, 1, 6, 6), 3)
    onehot = _onehot(labels, 3).float()
    for logits in (scale * (2 * onehot - 1), scale * torch.randn(2, 3, 6, 6)):
        logits = logits.clone().requires_grad_()
        for asymmetric in (True, False):
            value = UnifiedFocalLoss(softmax=True, to_onehot_y=True, asymmetric=asymmetric)(logits, labels)
            (grad,) = torch.autograd.grad(value, logits)
            assert math.isfinite(value.item()) and torch.isfinite(grad).all()
    # a perfect prediction: the code's (1 - TI) * (1 - TI)^(-gamma) is 0 * inf = NaN; here the loss is ~0
    perfect_probs = onehot.double().requires_grad_()
    perfect = UnifiedFocalLoss(to_onehot_y=True)(perfect_probs, labels)
    (grad,) = torch.autograd.grad(perfect, perfect_probs)
    expected = reference_unified(onehot, onehot, 0.5, 0.6, 0.5, True, [1, 2])
    assert float(perfect) == pytest.approx(expected, rel=1e-9) and float(perfect) < 1e-3
    assert torch.isfinite(grad).all()


def test_validation_errors():
    with pytest.raises(ValueError, match="lambda_focal"):
        UnifiedFocalLoss(lambda_focal=1.5)
    with pytest.raises(ValueError, match="gamma"):
        UnifiedFocalLoss(gamma=-0.1)
    with pytest.raises(ValueError, match="rare_classes"):
        UnifiedFocalLoss(rare_classes=[0, 1])
    with pytest.raises(ValueError, match="reduction"):
        UnifiedFocalLoss(reduction="none")
    with pytest.raises(ValueError, match="below 3"):
        UnifiedFocalLoss(rare_classes=[3], to_onehot_y=True)(_probs((1, 3, 4, 4)), _labels((1, 1, 4, 4), 3))
    with pytest.raises(ValueError, match="SigmoidFocalLoss"):
        UnifiedFocalLoss(sigmoid=True)(torch.randn(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        UnifiedFocalLoss(softmax=True)(torch.full((1, 2, 4, 4), float("nan")), torch.zeros(1, 2, 4, 4))
    with pytest.warns(UserWarning, match="include_background"):
        UnifiedFocalLoss(sigmoid=True, include_background=False)(torch.randn(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    # a one-channel input is expanded to two classes inside; the errors quote the caller's shapes and values
    binary = UnifiedFocalLoss(sigmoid=True)
    with pytest.raises(ValueError, match=re.escape("got input shape (2, 1, 5, 5) and target shape (2, 5, 5)")):
        binary(torch.randn(2, 1, 5, 5), torch.zeros(2, 5, 5))
    with pytest.raises(ValueError, match=re.escape("got values in [2, 2]")):  # not the pair's [-1, 2]
        binary(torch.randn(2, 1, 5, 5), torch.full((2, 1, 5, 5), 2.0))
