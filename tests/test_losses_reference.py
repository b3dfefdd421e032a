# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The package losses against the independent float64 reference of ``tests/loss_reference.py``.

Every class of ``monai_mixedfocal.losses`` and every ``get_loss`` preset is evaluated on small hand-made inputs
(2-D and 3-D, B=2 with an all-background second image, C=1/2/3, softmax / sigmoid logits, probabilities and
``other_act``, index or one-hot labels, include_background, batch, the three reductions, scalar and per-class alpha,
beta None/0.7, lambda None/0.3) and must agree with the reference to 1e-6. Hand-computed scalars check the reference
itself, and the reference is checked against MONAI DiceLoss/TverskyLoss and torch cross entropy.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from loss_reference import (
    COMPOUND,
    PRESETS,
    REFERENCES,
    SPATIAL_SHAPES,
    VARIANTS,
    labels_to_onehot,
    make_labels,
    make_logits,
    reference,
    resolve,
    variant_id,
)
from monai.losses import DiceLoss, TverskyLoss

import monai_mixedfocal.losses as mfl
from monai_mixedfocal.losses._fused import use_fused_mode

TOL = 1e-6
MODES = ("softmax", "sigmoid", "prob", "other_act")


def is_compound(name: str) -> bool:
    return (PRESETS[name][0] if name in PRESETS else name) in COMPOUND


def build_loss(name: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    """The package loss of a class name or preset name."""
    if name in PRESETS:
        return mfl.get_loss(name, **kwargs)
    return getattr(mfl, name)(**kwargs)


def channel_softmax(x: torch.Tensor) -> torch.Tensor:
    """A user activation for ``other_act`` (softmax over the channel axis)."""
    return torch.softmax(x, dim=1)


def make_case(mode: str, n_channels: int, ndim: int, onehot: bool) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Input, target and activation/target keyword arguments of one hand-made case (B=2, image 1 empty)."""
    spatial = SPATIAL_SHAPES[ndim]
    logits = make_logits(2, n_channels, spatial)
    labels = make_labels(2, n_channels, spatial)
    kwargs: dict[str, Any] = {}
    x = logits
    if mode == "softmax":
        kwargs["softmax"] = True
    elif mode == "sigmoid":
        kwargs["sigmoid"] = True
    elif mode == "prob":
        x = torch.softmax(logits, dim=1) if n_channels > 1 else torch.sigmoid(logits)
    elif mode == "other_act":
        kwargs["other_act"] = channel_softmax if n_channels > 1 else torch.sigmoid
    if n_channels > 1 and not onehot:
        kwargs["to_onehot_y"] = True
        target = labels
    else:
        target = labels_to_onehot(labels, n_channels)
    return x, target, kwargs


def as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def evaluate(name: str, kwargs: dict[str, Any], x: torch.Tensor, target: torch.Tensor) -> tuple[Any, Any]:
    """(package value, reference value), with the single-channel MONAI warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = build_loss(name, kwargs)(x, target)
    return got, reference(name, x, target, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# The main agreement matrix
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_agrees_with_reference(variant: tuple[str, dict[str, Any]], mode: str) -> None:
    name, loss_kwargs = variant
    failures = []
    for n_channels, include_background, i_red, batch in itertools.product((1, 2, 3), (True, False), (0, 1, 2), (0, 1)):
        if mode == "softmax" and n_channels == 1:
            continue  # softmax on one channel is ignored (tested in test_single_channel_warnings)
        # ndim and the target kind vary with every other factor (parities), without multiplying the cases by 4
        reduction, batch = ("mean", "sum", "none")[i_red], bool(batch)
        ndim = 2 + (n_channels + include_background + i_red + batch) % 2
        onehot = (n_channels + i_red) % 2 == 0
        x, target, kwargs = make_case(mode, n_channels, ndim, onehot)
        n_kept = n_channels if (include_background or n_channels == 1) else n_channels - 1
        kwargs.update(resolve(loss_kwargs, n_kept))
        kwargs.update(include_background=include_background, reduction=reduction, batch=batch)
        label = (
            f"C={n_channels} ndim={ndim} onehot={onehot} include_background={include_background} {reduction} {batch=}"
        )
        if reduction == "none" and is_compound(name):
            with pytest.raises(ValueError):
                build_loss(name, kwargs)(x, target)
            continue
        got, expected = evaluate(name, kwargs, x, target)
        got_np = as_array(got)
        if got_np.shape != np.shape(expected):
            failures.append(f"{label}: shape {tuple(got_np.shape)} != expected {np.shape(expected)}")
        elif not np.allclose(got_np, expected, rtol=TOL, atol=TOL):
            failures.append(f"{label}: got {got_np.ravel()[:6]} expected {np.ravel(expected)[:6]}")
    assert not failures, f"{variant_id(variant)} [{mode}] disagrees with the reference:\n" + "\n".join(failures)


# ------------------------------------------------------------------------------------------------------------------
# Hand-computed values (check the reference itself, then the package)
# ------------------------------------------------------------------------------------------------------------------
# Example A: B=1, C=2, 2x2 probabilities (no activation), labels [[1, 1], [0, 0]]:
#   p1 (foreground) = [[0.9, 0.5], [0.3, 0.1]], p0 = 1 - p1 = [[0.1, 0.5], [0.7, 0.9]].
#   class 1: y1 = [1, 1, 0, 0]: TP = 0.9 + 0.5 = 1.4, FN = 0.1 + 0.5 = 0.6, FP = 0.3 + 0.1 = 0.4
#   class 0: y0 = [0, 0, 1, 1]: TP = 0.7 + 0.9 = 1.6, FN = 0.3 + 0.1 = 0.4, FP = 0.1 + 0.5 = 0.6
#   mTI(0.5): class 1 = 1.4 / (1.4 + 0.3 + 0.2) = 14/19, class 0 = 1.6 / (1.6 + 0.2 + 0.3) = 16/21
#   mTI(0.7): class 1 = 1.4 / (1.4 + 0.42 + 0.12) = 70/97, class 0 = 1.6 / (1.6 + 0.28 + 0.18) = 80/103
#   target-class probabilities per voxel: 0.9, 0.5 (class 1), 0.7, 0.9 (class 0)
#   CE = (ln(1/0.9) + ln(1/0.5) + ln(1/0.7) + ln(1/0.9)) / 4
#   focal (alpha 0.25, gamma 2) = 0.25 * (0.1^2 ln(1/0.9) + 0.5^2 ln 2 + 0.3^2 ln(1/0.7) + 0.1^2 ln(1/0.9)) / 4
#   CE with beta 0.7 (weight 0.7 on class 1, 0.3 on class 0) = (0.7 ln(1/0.9) + 0.7 ln 2 + 0.3 ln(1/0.7)
#                                                               + 0.3 ln(1/0.9)) / 4
_P1 = [[0.9, 0.5], [0.3, 0.1]]
EX_A_INPUT = torch.tensor([[[[1 - v for v in row] for row in _P1], _P1]], dtype=torch.float64)
EX_A_LABELS = torch.tensor([[[[1, 1], [0, 0]]]])
_CE_A = (2 * math.log(1 / 0.9) + math.log(2) + math.log(1 / 0.7)) / 4
_FOCAL_A = 0.25 * (0.01 * math.log(1 / 0.9) * 2 + 0.25 * math.log(2) + 0.09 * math.log(1 / 0.7)) / 4
_CE_BETA_A = (0.7 * math.log(1 / 0.9) + 0.7 * math.log(2) + 0.3 * math.log(1 / 0.7) + 0.3 * math.log(1 / 0.9)) / 4
_DSC_A = (14 / 19 + 16 / 21) / 2
_FT_A = ((1 - 70 / 97) ** 0.75 + (1 - 80 / 103) ** 0.75) / 2  # (27/97)^(3/4), (23/103)^(3/4)
_COS_A = (math.cos(math.pi / 2 * 70 / 97) + math.cos(math.pi / 2 * 80 / 103)) / 2

# Example B: B=1, C=1, 2x2 sigmoid logits [[0, ln 3], [-ln 3, 0]] -> p = [[0.5, 0.75], [0.25, 0.5]],
#   y = [[1, 1], [0, 0]]
#   BCE per voxel: ln 2, ln(4/3) (positives), ln(4/3), ln 2 (negatives: -ln(1 - p))
#   BCE mean = (ln 2 + ln(4/3)) / 2
#   with beta 0.7: (0.7 (ln 2 + ln 4/3) + 0.3 (ln 4/3 + ln 2)) / 4 = (ln 2 + ln 4/3) / 4
#   binary focal (alpha 0.25, gamma 2): 0.25 * (0.5^2 ln 2 + 0.25^2 ln 4/3 + 0.25^2 ln 4/3 + 0.5^2 ln 2) / 4
#   Dice: TP = 1.25, FN = 0.75, FP = 0.75 -> mTI = 1.25 / 2 = 0.625 -> loss 0.375
EX_B_INPUT = torch.tensor([[[[0.0, math.log(3)], [-math.log(3), 0.0]]]], dtype=torch.float64)
EX_B_TARGET = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]], dtype=torch.float64)
_L2, _L43 = math.log(2), math.log(4 / 3)

NO_SMOOTH = {"smooth_nr": 0.0, "smooth_dr": 0.0}
HAND_CASES = [
    ("A-dice", "ModifiedDiceLoss", {"delta": 0.5, **NO_SMOOTH}, 100 / 399),
    ("A-dice-sum", "ModifiedDiceLoss", {"reduction": "sum", **NO_SMOOTH}, 2 * 100 / 399),
    ("A-tversky", "ModifiedDiceLoss", {"delta": 0.7, **NO_SMOOTH}, 2506 / 9991),
    ("A-focal-tversky", "FocalTverskyLoss", NO_SMOOTH, _FT_A),
    ("A-focal-tversky-sum", "FocalTverskyLoss", {"reduction": "sum", **NO_SMOOTH}, 2 * _FT_A),
    ("A-cosine-tversky", "CosineTverskyLoss", NO_SMOOTH, _COS_A),
    ("A-cross-entropy", "CategoricalFocalLoss", {"alpha": 1.0, "gamma": 0.0}, _CE_A),
    ("A-modified-ce", "CategoricalFocalLoss", {"alpha": 1.0, "gamma": 0.0, "beta": 0.7}, _CE_BETA_A),
    ("A-focal", "CategoricalFocalLoss", {}, _FOCAL_A),
    ("A-combo-eq18", "ComboLoss", NO_SMOOTH, _CE_A - _DSC_A),
    ("A-combo-eq16", "ComboLoss", {"alpha": 0.3, **NO_SMOOTH}, 0.3 * _CE_A - 0.7 * _DSC_A),
    ("A-combo-eq20", "ComboLoss", {"alpha": 0.3, "delta": 0.7, **NO_SMOOTH}, 0.3 * _CE_A + 0.7 * 2506 / 9991),
    ("A-mixed-focal-eq24", "MixedFocalLoss", NO_SMOOTH, _FT_A + _FOCAL_A),
    ("A-mixed-focal-eq23", "MixedFocalLoss", {"lambda_focal": 0.3, **NO_SMOOTH}, 0.3 * _FOCAL_A + 0.7 * _FT_A),
]
HAND_CASES_B = [
    ("B-bce", "CategoricalFocalLoss", {"alpha": 1.0, "gamma": 0.0}, (_L2 + _L43) / 2),
    ("B-bce-beta", "CategoricalFocalLoss", {"alpha": 1.0, "gamma": 0.0, "beta": 0.7}, (_L2 + _L43) / 4),
    ("B-binary-focal", "CategoricalFocalLoss", {}, 0.25 * (0.5 * _L2 + 0.125 * _L43) / 4),
    ("B-dice", "ModifiedDiceLoss", NO_SMOOTH, 0.375),
    ("B-combo", "ComboLoss", NO_SMOOTH, (_L2 + _L43) / 2 - 0.625),
]


@pytest.mark.parametrize(("case", "name", "kwargs", "expected"), HAND_CASES, ids=[c[0] for c in HAND_CASES])
def test_hand_computed_categorical(case: str, name: str, kwargs: dict[str, Any], expected: float) -> None:
    for onehot in (False, True):
        target = labels_to_onehot(EX_A_LABELS, 2) if onehot else EX_A_LABELS
        full = {**kwargs, "to_onehot_y": not onehot}
        assert reference(name, EX_A_INPUT, target, **full) == pytest.approx(expected, abs=1e-12), "reference"
        got = build_loss(name, full)(EX_A_INPUT, target)
        assert float(got) == pytest.approx(expected, abs=TOL), f"{case}: got {float(got)}, expected {expected}"


@pytest.mark.parametrize(("case", "name", "kwargs", "expected"), HAND_CASES_B, ids=[c[0] for c in HAND_CASES_B])
def test_hand_computed_binary(case: str, name: str, kwargs: dict[str, Any], expected: float) -> None:
    full = {**kwargs, "sigmoid": True}
    assert reference(name, EX_B_INPUT, EX_B_TARGET, **full) == pytest.approx(expected, abs=1e-12), "reference"
    got = build_loss(name, full)(EX_B_INPUT, EX_B_TARGET)
    assert float(got) == pytest.approx(expected, abs=TOL), f"{case}: got {float(got)}, expected {expected}"


# ------------------------------------------------------------------------------------------------------------------
# Perfect predictions, the probability clip
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("as_logits", [False, True], ids=["one-hot-probabilities", "logits+-100"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_perfect_prediction(variant: tuple[str, dict[str, Any]], as_logits: bool) -> None:
    name, loss_kwargs = variant
    for n_channels, ndim, include_background in ((2, 2, True), (3, 3, False), (3, 2, True)):
        labels = make_labels(2, n_channels, SPATIAL_SHAPES[ndim])
        onehot = labels_to_onehot(labels, n_channels)
        x = 200.0 * onehot - 100.0 if as_logits else onehot
        n_kept = n_channels if include_background else n_channels - 1
        kwargs = {**resolve(loss_kwargs, n_kept), "include_background": include_background, "to_onehot_y": True}
        if as_logits:
            kwargs["softmax"] = True
        got, expected = evaluate(name, kwargs, x, labels)
        assert np.isfinite(as_array(got)).all()
        np.testing.assert_allclose(as_array(got), expected, rtol=TOL, atol=TOL, err_msg=f"C={n_channels}")


@pytest.mark.parametrize("fused", ["off", "eager"])
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("focal_tversky", {"gamma": 3.0}), ("cosine_tversky", {"gamma": 0.3}), ("mixed_focal", {"gamma_tversky": 3.0})],
    ids=["focal_tversky-exponent-1/3", "cosine_tversky-gamma-0.3", "mixed_focal-exponent-1/3"],
)
def test_near_perfect_prediction_with_a_fractional_power(name: str, kwargs: dict[str, Any], fused: str) -> None:
    """A fractional power of a base near 0 is exact: a floor of 1e-12 on the base once shifted it by 1e-12 ** exponent
    (1e-4 for the exponent 1/3), far above float64 rounding; its gradient stays finite."""
    labels = make_labels(2, 3, SPATIAL_SHAPES[2])
    x = (120.0 * labels_to_onehot(labels, 3) - 60.0).requires_grad_(True)
    kwargs = {**kwargs, "softmax": True, "to_onehot_y": True}
    with use_fused_mode(fused):
        got = build_loss(name, kwargs)(x, labels)
    (grad,) = torch.autograd.grad(got, x)
    expected = reference(name, x.detach(), labels, **kwargs)
    assert abs(float(got) - float(expected)) < 1e-12, (float(got), float(expected))
    assert torch.isfinite(grad).all()


def test_clip_is_applied_to_probabilities() -> None:
    """With probability inputs the authors' clip [1e-7, 1 - 1e-7] is visible: the CE of a voxel whose target class
    has probability 0 is -ln(1e-7), and focal Tversky of a perfect one-hot prediction is not 0."""
    labels = make_labels(2, 2, (3, 4))  # image 1 is all background
    wrong = labels_to_onehot(1 - labels, 2)  # probability 0 on the target class everywhere
    ce = build_loss("cross_entropy", {"to_onehot_y": True})(wrong, labels)
    assert float(ce) == pytest.approx(-math.log(1e-7), rel=1e-5)
    perfect = labels_to_onehot(labels, 2)
    ft = float(build_loss("focal_tversky", {"to_onehot_y": True})(perfect, labels))
    expected = reference("focal_tversky", perfect, labels, to_onehot_y=True)
    # unclipped, the value would be exactly 0; clipped, the empty foreground class of image 1 has FP = 12 * 1e-7,
    # comparable to smooth_dr = 1e-6, so its mTI is far from 1
    assert expected > 0.05
    assert ft == pytest.approx(expected, abs=TOL)


# ------------------------------------------------------------------------------------------------------------------
# Invariances
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_logits_equal_their_probabilities(variant: tuple[str, dict[str, Any]]) -> None:
    """softmax=True on logits == softmax(logits) as probabilities; sigmoid=True (1 channel) == sigmoid(logits)."""
    name, loss_kwargs = variant
    for n_channels, act in ((3, "softmax"), (2, "softmax"), (1, "sigmoid")):
        logits = make_logits(2, n_channels, (3, 4))
        labels = make_labels(2, n_channels, (3, 4))
        probs = torch.softmax(logits, 1) if act == "softmax" else torch.sigmoid(logits)
        target = labels if n_channels > 1 else labels_to_onehot(labels, 1)
        kwargs = {**resolve(loss_kwargs, n_channels), "to_onehot_y": n_channels > 1}
        from_logits = build_loss(name, {**kwargs, act: True})(logits, target)
        from_probs = build_loss(name, kwargs)(probs, target)
        np.testing.assert_allclose(as_array(from_logits), as_array(from_probs), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_index_labels_equal_onehot(variant: tuple[str, dict[str, Any]]) -> None:
    name, loss_kwargs = variant
    for mode, ndim, include_background in (("softmax", 2, True), ("prob", 3, False), ("sigmoid", 2, False)):
        x, labels, act = make_case(mode, 3, ndim, onehot=False)
        act.pop("to_onehot_y")
        kwargs = {**resolve(loss_kwargs, 3 if include_background else 2), **act}
        kwargs["include_background"] = include_background
        from_index = build_loss(name, {**kwargs, "to_onehot_y": True})(x, labels)
        from_onehot = build_loss(name, kwargs)(x, labels_to_onehot(labels, 3))
        np.testing.assert_allclose(as_array(from_index), as_array(from_onehot), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_soft_labels(variant: tuple[str, dict[str, Any]]) -> None:
    """Soft (non one-hot) targets: every sum of the equations runs over the soft y unchanged."""
    name, loss_kwargs = variant
    logits = make_logits(2, 3, (3, 4))
    soft = torch.softmax(make_logits(2, 3, (3, 4), scale=1.0).flip(-1), dim=1)  # rows sum to 1, all in (0, 1)
    for act, include_background in (({"softmax": True}, True), ({}, False), ({"sigmoid": True}, True)):
        x = logits if act else torch.softmax(logits, dim=1)
        kwargs = {**resolve(loss_kwargs, 3 if include_background else 2), **act}
        kwargs["include_background"] = include_background
        got, expected = evaluate(name, kwargs, x, soft)
        np.testing.assert_allclose(as_array(got), expected, rtol=TOL, atol=TOL, err_msg=str(act))


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_float32_agrees_with_reference(variant: tuple[str, dict[str, Any]]) -> None:
    """float32 in, float32 out, and the float64 reference value to float32 accuracy."""
    name, loss_kwargs = variant
    for mode, n_channels, ndim in (("softmax", 3, 2), ("prob", 2, 3), ("sigmoid", 1, 2)):
        x, target, kwargs = make_case(mode, n_channels, ndim, onehot=False)
        kwargs.update(resolve(loss_kwargs, n_channels))
        x32 = x.to(torch.float32)
        target = target.to(torch.float32) if target.is_floating_point() else target
        got, expected = evaluate(name, kwargs, x32, target)
        assert got.dtype == torch.float32
        np.testing.assert_allclose(as_array(got), expected, rtol=1e-5, atol=1e-5, err_msg=mode)


@pytest.mark.parametrize("fused", ["off", "eager"])
def test_float32_sums_over_a_ct_sized_volume(fused: str) -> None:
    """A class of more than ``2**24`` voxels in one image (a CT volume's background): a float32 sum that adds one
    voxel after the other stops counting there (1 + 2**24 == 2**24 in float32) and a perfect prediction then scored a
    Dice loss of 0.11; sums must keep float32 accuracy at any size, as MONAI's DiceLoss does."""
    labels = torch.zeros(1, 1, 2**12 + 16, 2**12, dtype=torch.long)
    labels[..., :64, :64] = 1
    logits = torch.where(torch.cat([labels == 0, labels == 1], 1), 20.0, -20.0)  # a perfect prediction
    loss = mfl.ModifiedDiceLoss(delta=0.5, softmax=True, to_onehot_y=True, reduction="none")
    with use_fused_mode(fused):
        value = loss(logits, labels)
    assert value.flatten().tolist() == pytest.approx([0.0, 0.0], abs=1e-6)


@pytest.mark.parametrize("float64", [True, False], ids=["float64-scatter", "masked-sums"])
def test_label_sums_keep_float32_accuracy(float64: bool) -> None:
    """Both ways of :func:`~monai_mixedfocal.losses._terms.label_sums` (the second for devices without float64)
    against float64 sums: counts exact beyond ``2**24`` voxels, soft true positives to float32 accuracy."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.zeros(1, 2**24 + 2**20, dtype=torch.long)
    labels[:, : 2**20] = 1
    prob = torch.rand(1, 2, labels.shape[1], generator=generator)
    tp, counts = mfl._terms.label_sums(prob, labels, float64=float64)
    assert counts.tolist() == [[2**24, 2**20]]
    expected = torch.stack([prob[0, 0, 2**20 :].double().sum(), prob[0, 1, : 2**20].double().sum()])
    torch.testing.assert_close(tp[0].double(), expected, rtol=2e-6, atol=0)


# ------------------------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------------------------
def test_registry_names() -> None:
    assert set(PRESETS) <= set(mfl.LOSS_NAMES)


def test_get_loss_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="no_such_loss") as info:
        mfl.get_loss("no_such_loss")
    for name in PRESETS:
        assert name in str(info.value)


@pytest.mark.parametrize("ndim", [2, 3])
def test_cross_entropy_preset_equals_torch(ndim: int) -> None:
    spatial = SPATIAL_SHAPES[ndim]
    logits = make_logits(2, 3, spatial)
    labels = make_labels(2, 3, spatial)
    got = mfl.get_loss("cross_entropy", softmax=True, to_onehot_y=True)(logits, labels)
    expected = F.cross_entropy(logits, labels[:, 0])
    assert float(got) == pytest.approx(float(expected), abs=TOL)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_is_its_class(name: str) -> None:
    cls_name, _ = PRESETS[name]
    assert type(mfl.get_loss(name)).__name__ == cls_name


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_single_channel_warnings(name: str) -> None:
    """Single-channel input: softmax, to_onehot_y and include_background=False warn and are ignored (MONAI)."""
    x = torch.sigmoid(make_logits(2, 1, (3, 4)))
    target = labels_to_onehot(make_labels(2, 1, (3, 4)), 1)
    expected = reference(name, x, target)
    for flag in ({"softmax": True}, {"to_onehot_y": True}, {"include_background": False}):
        with pytest.warns(UserWarning):
            got = mfl.get_loss(name, **flag)(x, target)
        assert float(got) == pytest.approx(expected, abs=TOL), flag


# ------------------------------------------------------------------------------------------------------------------
# The reference itself against MONAI and torch (independent of the package)
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "act", [{"softmax": True}, {"sigmoid": True}, {"include_background": False, "softmax": True, "batch": True}]
)
def test_reference_matches_monai(act: dict[str, Any], reduction: str) -> None:
    x = make_logits(2, 3, (3, 4))
    labels = make_labels(2, 3, (3, 4))
    common = {**act, "to_onehot_y": True, "reduction": reduction}
    dice = DiceLoss(smooth_nr=1e-4, smooth_dr=1e-4, **common)(x, labels)
    ref = reference("ModifiedDiceLoss", x, labels, delta=0.5, smooth_nr=5e-5, smooth_dr=5e-5, **common)
    np.testing.assert_allclose(as_array(dice), ref, rtol=1e-12, atol=1e-12)
    tversky = TverskyLoss(alpha=0.3, beta=0.7, smooth_nr=1e-4, smooth_dr=1e-4, **common)(x, labels)
    ref = reference("ModifiedDiceLoss", x, labels, delta=0.7, smooth_nr=1e-4, smooth_dr=1e-4, **common)
    np.testing.assert_allclose(as_array(tversky).reshape(np.shape(ref)), ref, rtol=1e-12, atol=1e-12)


def test_reference_matches_torch_cross_entropy() -> None:
    x = make_logits(2, 3, (2, 3, 2))
    labels = make_labels(2, 3, (2, 3, 2))
    onehot = labels_to_onehot(labels, 3)
    ce = F.cross_entropy(x, labels[:, 0])
    assert REFERENCES["CategoricalFocalLoss"](x, labels, alpha=1, gamma=0, softmax=True, to_onehot_y=True) == (
        pytest.approx(float(ce), abs=1e-12)
    )
    # binary form, mean = sum over channels of the element-wise mean = C * BCE mean
    bce = F.binary_cross_entropy_with_logits(x, onehot)
    assert REFERENCES["CategoricalFocalLoss"](x, onehot, alpha=1, gamma=0, sigmoid=True) == (
        pytest.approx(3 * float(bce), abs=1e-12)
    )
    # pixel "sum": per-image mean over voxels, summed over the batch
    per_image = [float(F.cross_entropy(x[b : b + 1], labels[b : b + 1, 0])) for b in range(2)]
    assert REFERENCES["CategoricalFocalLoss"](
        x, labels, alpha=1, gamma=0, softmax=True, to_onehot_y=True, reduction="sum"
    ) == pytest.approx(sum(per_image), abs=1e-12)
