# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Tests of SigmoidFocalLoss, AsymmetricSigmoidFocalLoss and Poly1Loss against float64 references from the equations
(Lin et al. 2017, Ridnik et al. 2021, Leng et al. 2022) and against MONAI's FocalLoss / torch cross entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import FocalLoss

from monai_mixedfocal.losses import AsymmetricSigmoidFocalLoss, Poly1Loss, SigmoidFocalLoss, get_loss


def reference_sigmoid(x, y, alpha, gamma_pos, gamma_neg, clip=0.0, poly=0.0, weights=None):
    """Per element: alpha_t [y (1-p)^g+ (-log p) + (1-y) p_m^g- (-log(1-p_m))] + poly * (1 - p_t)^(g+1), float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    p = 1.0 / (1.0 + np.exp(-x))
    p_m = np.maximum(p - clip, 0.0)
    a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
    pos = a_pos * y * (1 - p) ** gamma_pos * -np.log(p)
    neg = a_neg * (1 - y) * p_m**gamma_neg * -np.log(1 - p_m)
    out = pos + neg + poly * (y * (1 - p) ** (gamma_pos + 1) + (1 - y) * p_m ** (gamma_neg + 1))
    if weights is not None:
        out = out * np.asarray(weights).reshape(1, -1, *([1] * (out.ndim - 2)))
    return out


def reference_poly_softmax(logits, labels, epsilon, alpha, gamma):
    """Mean over voxels and images of alpha (1-p_t)^g (-log p_t) + epsilon (1-p_t)^(g+1), float64."""
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    pt = np.take_along_axis(p, np.asarray(labels), axis=1)
    return float(np.mean(alpha * (1 - pt) ** gamma * -np.log(pt) + epsilon * (1 - pt) ** (gamma + 1)))


def _data(channels=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(2, channels, 5, 4, generator=gen, dtype=torch.float64)
    y = (torch.rand(2, channels, 5, 4, generator=gen) < 0.2).double()
    return x, y


@pytest.mark.parametrize(
    "kwargs, ref",
    [
        ({}, {"alpha": 0.25, "gamma_pos": 2.0, "gamma_neg": 2.0}),
        ({"alpha": None, "gamma": 0.0}, {"alpha": None, "gamma_pos": 0.0, "gamma_neg": 0.0}),
        (
            {"gamma_neg": 4.0, "clip": 0.05, "gamma": 1.0},
            {"alpha": 0.25, "gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05},
        ),
        ({"poly_epsilon": 1.0}, {"alpha": 0.25, "gamma_pos": 2.0, "gamma_neg": 2.0, "poly": 1.0}),
        (  # the Poly-1 term of the negatives takes their own gamma and the clipped probability
            {"poly_epsilon": 1.0, "gamma_neg": 4.0, "clip": 0.05},
            {"alpha": 0.25, "gamma_pos": 2.0, "gamma_neg": 4.0, "clip": 0.05, "poly": 1.0},
        ),
        (  # gamma_neg 0: negatives below the clip margin cost 0, not a negative log
            {"alpha": None, "gamma": 0.0, "gamma_neg": 0.0, "clip": 0.05},
            {"alpha": None, "gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.05},
        ),
        (
            {"class_weights": [0.5, 1.0, 2.0]},
            {"alpha": 0.25, "gamma_pos": 2.0, "gamma_neg": 2.0, "weights": [0.5, 1, 2]},
        ),
    ],
)
def test_sigmoid_focal_matches_reference(kwargs, ref):
    x, y = _data()
    expected = reference_sigmoid(x, y, **ref)
    assert torch.allclose(SigmoidFocalLoss(reduction="none", **kwargs)(x, y), torch.from_numpy(expected), rtol=1e-10)
    # "mean": summed over channels, averaged over images and voxels; "sum": per-image voxel mean summed over images
    mean = SigmoidFocalLoss(**kwargs)(x, y)
    assert float(mean) == pytest.approx(expected.sum(1).mean(), rel=1e-10)
    total = SigmoidFocalLoss(reduction="sum", **kwargs)(x, y)
    assert float(total) == pytest.approx(expected.sum(1).mean(axis=(1, 2)).sum(), rel=1e-10)


def test_normalize_by_positives():
    x, y = _data()
    expected = reference_sigmoid(x, y, 0.25, 2.0, 2.0)
    value = SigmoidFocalLoss(normalize_by_positives=True)(x, y)
    assert float(value) == pytest.approx(expected.sum() / y.sum().item(), rel=1e-10)
    per_image = SigmoidFocalLoss(normalize_by_positives=True, reduction="sum")(x, y)
    npos = y.sum(dim=(1, 2, 3)).numpy()
    assert float(per_image) == pytest.approx((expected.sum(axis=(1, 2, 3)) / npos).sum(), rel=1e-10)
    # no positive at all: divided by 1, not by 0
    empty = SigmoidFocalLoss(normalize_by_positives=True)(x, torch.zeros_like(y))
    assert float(empty) == pytest.approx(reference_sigmoid(x, 0 * y, 0.25, 2.0, 2.0).sum(), rel=1e-10)


def test_equals_monai_sigmoid_focal_up_to_the_channel_sum():
    """MONAI's FocalLoss (sigmoid, scalar alpha; = torchvision's sigmoid_focal_loss) averages over channels too."""
    x, y = _data(channels=3)
    ours = SigmoidFocalLoss(alpha=0.25, gamma=2.0)(x, y)
    monai = FocalLoss(alpha=0.25, gamma=2.0)(x, y)
    assert float(ours) == pytest.approx(3 * float(monai), rel=1e-6)
    ours_none = SigmoidFocalLoss(alpha=0.25, gamma=2.0, reduction="none")(x, y)
    assert torch.allclose(ours_none, FocalLoss(alpha=0.25, gamma=2.0, reduction="none")(x, y).double(), rtol=1e-6)


def test_asymmetric_loss_defaults_and_registry():
    x, y = _data()
    expected = reference_sigmoid(x, y, None, 0.0, 4.0, clip=0.05)
    assert float(AsymmetricSigmoidFocalLoss()(x, y)) == pytest.approx(expected.sum(1).mean(), rel=1e-10)
    assert float(get_loss("asymmetric_focal")(x, y)) == pytest.approx(expected.sum(1).mean(), rel=1e-10)
    assert float(get_loss("sigmoid_focal")(x, y)) == pytest.approx(
        reference_sigmoid(x, y, 0.25, 2.0, 2.0).sum(1).mean(), rel=1e-10
    )


def test_index_target_and_probability_input():
    x, _ = _data()
    labels = torch.randint(0, 3, (2, 1, 5, 4))
    onehot = F.one_hot(labels[:, 0], 3).movedim(-1, 1).double()
    loss = SigmoidFocalLoss(to_onehot_y=True)
    assert float(loss(x, labels)) == pytest.approx(reference_sigmoid(x, onehot, 0.25, 2, 2).sum(1).mean(), rel=1e-10)
    probs = torch.sigmoid(x).clamp(1e-3, 1 - 1e-3)  # away from the clip, probabilities give the same value
    assert float(SigmoidFocalLoss(sigmoid=False, to_onehot_y=True)(probs, labels)) == pytest.approx(
        float(loss(torch.logit(probs), labels)), rel=1e-9
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"epsilon": 1.0, "alpha": 1.0, "gamma": 0.0}, {"epsilon": -0.5, "alpha": 0.25, "gamma": 2.0}],
)
def test_poly1_softmax_matches_reference(kwargs):
    x = 3 * torch.randn(2, 4, 5, 4, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 1, 5, 4))
    expected = reference_poly_softmax(x, labels, **kwargs)
    assert float(Poly1Loss(softmax=True, to_onehot_y=True, **kwargs)(x, labels)) == pytest.approx(expected, rel=1e-10)
    dense = F.one_hot(labels[:, 0], 4).movedim(-1, 1).double()
    assert float(Poly1Loss(softmax=True, **kwargs)(x, dense)) == pytest.approx(expected, rel=1e-10)


def test_poly1_special_cases_and_weights():
    x = 2 * torch.randn(2, 3, 6, 5, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 1, 6, 5))
    ce = Poly1Loss(epsilon=0.0, softmax=True, to_onehot_y=True)(x, labels)
    assert float(ce) == pytest.approx(float(F.cross_entropy(x, labels[:, 0])), rel=1e-10)
    # class weights scale both terms of the target class
    weights = torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64)
    weighted = Poly1Loss(epsilon=1.0, softmax=True, to_onehot_y=True, class_weights=weights.tolist())(x, labels)
    p_t = torch.softmax(x, 1).gather(1, labels)
    expected = (weights[labels] * (-p_t.log() + (1 - p_t))).mean()
    assert float(weighted) == pytest.approx(float(expected), rel=1e-10)
    # a per-class alpha weighs the cross-entropy term only
    alpha_only = Poly1Loss(epsilon=1.0, alpha=weights.tolist(), softmax=True, to_onehot_y=True)(x, labels)
    assert float(alpha_only) == pytest.approx(float((weights[labels] * -p_t.log() + (1 - p_t)).mean()), rel=1e-10)
    # without background: background voxels contribute nothing to either term
    no_bg = Poly1Loss(epsilon=1.0, softmax=True, to_onehot_y=True, include_background=False)(x, labels)
    expected_no_bg = ((labels != 0) * (-p_t.log() + (1 - p_t))).mean()
    assert float(no_bg) == pytest.approx(float(expected_no_bg), rel=1e-10)
    # sigmoid form: equals SigmoidFocalLoss without alpha_t
    xs, ys = _data()
    assert float(Poly1Loss(epsilon=1.0, gamma=2.0, sigmoid=True)(xs, ys)) == pytest.approx(
        float(SigmoidFocalLoss(alpha=None, gamma=2.0, poly_epsilon=1.0)(xs, ys)), rel=1e-10
    )
    assert get_loss("poly1_focal").gamma == 2.0 and get_loss("poly1_ce").gamma == 0.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: SigmoidFocalLoss(poly_epsilon=1.0, normalize_by_positives=True),
        lambda: AsymmetricSigmoidFocalLoss(gamma_pos=1.0),
        lambda: Poly1Loss(gamma=2.0, softmax=True),
    ],
)
def test_gradcheck_and_extreme_logits(make):
    loss = make()
    x, y = _data(seed=3)
    x = x[:1, :, :2, :2].clone().requires_grad_()
    y = y[:1, :, :2, :2]
    if isinstance(loss, Poly1Loss):
        y = F.one_hot(torch.arange(4).reshape(1, 2, 2) % 3, 3).movedim(-1, 1).double()
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (x,))
    for scale in (100.0, -100.0):
        extreme = (scale * torch.sign(torch.randn(2, 3, 4, 4))).requires_grad_()
        target = (torch.rand(2, 3, 4, 4) < 0.3).float()
        value = loss(extreme, target)
        (grad,) = torch.autograd.grad(value, extreme)
        assert torch.isfinite(value).all() and torch.isfinite(grad).all()


def test_validation_errors():
    with pytest.raises(ValueError, match="softmax"):
        SigmoidFocalLoss(softmax=True)
    with pytest.raises(ValueError, match="alpha"):
        SigmoidFocalLoss(alpha=1.5)
    with pytest.raises(ValueError, match="gamma_neg"):
        SigmoidFocalLoss(gamma_neg=-1.0)
    with pytest.raises(ValueError, match="clip"):
        AsymmetricSigmoidFocalLoss(clip=1.0)
    with pytest.raises(ValueError, match="gamma"):
        Poly1Loss(gamma=-1.0)
    with pytest.raises(ValueError, match="2 alpha values for 3 channels"):
        Poly1Loss(alpha=[1.0, 2.0], softmax=True, to_onehot_y=True)(torch.randn(1, 3, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="3 channels"):
        SigmoidFocalLoss(class_weights=[1.0, 2.0])(*_data())
    with pytest.raises(ValueError, match="unknown class_weights"):
        SigmoidFocalLoss(class_weights="inverse")
    with pytest.raises(ValueError, match="datalist"):
        Poly1Loss(class_weights="effective_number")
    with pytest.raises(ValueError, match="different shape"):
        SigmoidFocalLoss()(torch.randn(1, 2, 4, 4), torch.zeros(1, 3, 4, 4))
