# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""ModifiedDiceLoss against MONAI's DiceLoss and TverskyLoss, computed live, on MONAI's own test cases.

Identities (the loss specification):

- ``ModifiedDiceLoss(delta=d) == monai.losses.TverskyLoss(alpha=1 - d, beta=d)`` with the same smoothing
  (MONAI's alpha weights false positives, beta false negatives; our delta weights false negatives);
- ``ModifiedDiceLoss(delta=0.5, smooth_nr=s_nr / 2, smooth_dr=s_dr / 2) == monai.losses.DiceLoss(smooth_nr=s_nr,
  smooth_dr=s_dr)`` because ``(2 TP + s_nr) / (2 TP + FN + FP + s_dr) = (TP + s_nr/2) / (TP + FN/2 + FP/2 + s_dr/2)``.

The cases are transcribed from MONAI's ``tests/losses/test_dice_loss.py`` and ``tests/losses/test_tversky_loss.py``
(Project-MONAI/MONAI), keeping the cases that use only include_background, to_onehot_y, sigmoid, softmax, other_act,
batch, reduction, smooth_nr, smooth_dr (and alpha/beta for Tversky). Cases with squared_pred, jaccard, weight,
soft_label=True or ignore_index are dropped; the one case with ``soft_label=False`` (MONAI's default) is kept with
that argument removed. MONAI's expected numbers are not used: both losses are evaluated here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from monai.losses import DiceLoss, TverskyLoss

from monai_mixedfocal.losses import ModifiedDiceLoss

MONAI_DEFAULT_SMOOTH = 1e-5

# Inputs shared by several MONAI cases.
_X_1x1 = [[[[1.0, -1.0], [-1.0, 1.0]]]]
_Y_1x1 = [[[[1.0, 0.0], [1.0, 1.0]]]]
_X_2x1 = [[[[1.0, -1.0], [-1.0, 1.0]]], [[[1.0, -1.0], [-1.0, 1.0]]]]
_Y_2x1 = [[[[1.0, 1.0], [1.0, 1.0]]], [[[1.0, 0.0], [1.0, 0.0]]]]
_X_2x1_ZERO = [[[[1.0, -0.0], [-1.0, 1.0]]], [[[1.0, -1.0], [-1.0, 1.0]]]]
_SOFT = [[[[0.3, 0.4], [0.7, 0.9]]], [[[1.0, 0.1], [0.5, 0.3]]]]
_X_PERFECT = [[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]]
_Y_PERFECT = [[[0.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]]]
_X_2x2 = [[[-1.0, 0.0, 1.0], [1.0, 0.0, -1.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]
_Y_2x2 = [[[1.0, 0.0, 0.0]], [[1.0, 1.0, 0.0]]]


def _log_softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(x, dim=1)


# Abbreviations for the MONAI case arguments.
_S4 = {"smooth_nr": 1e-4, "smooth_dr": 1e-4}
_S6 = {"smooth_nr": 1e-6, "smooth_dr": 1e-6}
_BG = {"include_background": True}
_OH = {"include_background": True, "to_onehot_y": True}
_NO_BG = {"include_background": False, "to_onehot_y": True}
_TANH = {"include_background": True, "other_act": torch.tanh}

# (MONAI constructor arguments, input, target), in the order of MONAI's test files.
DICE_CASES: list[tuple[dict[str, Any], list, list]] = [
    ({**_BG, "sigmoid": True, **_S6}, _X_1x1, _Y_1x1),
    ({**_BG, "sigmoid": True, **_S4}, _X_2x1, _Y_2x1),
    ({**_BG, **_S4}, _SOFT, _SOFT),  # MONAI passes soft_label=False (its default): argument removed
    ({**_NO_BG, "smooth_nr": 0, "smooth_dr": 0}, _X_PERFECT, _Y_PERFECT),
    ({**_OH, "sigmoid": True, **_S4}, _X_2x2, _Y_2x2),
    ({**_OH, "sigmoid": True, "reduction": "none", **_S4}, _X_2x2, _Y_2x2),
    ({**_OH, "softmax": True, **_S4}, _X_2x2, _Y_2x2),
    ({**_OH, "softmax": True, "reduction": "sum", **_S4}, _X_2x2, _Y_2x2),
    ({**_TANH, **_S4}, _X_2x1, _Y_2x1),
    ({**_OH, "other_act": _log_softmax, **_S4}, _X_2x2, _Y_2x2),
    ({**_TANH, **_S4, "batch": True}, _X_2x1_ZERO, _Y_2x1),
    ({**_TANH, "smooth_nr": 0, "smooth_dr": 1e-4, "batch": True}, _X_2x1_ZERO, _Y_2x1),
    ({**_TANH, "smooth_nr": 0, "smooth_dr": 1e-4, "batch": False}, _X_2x1_ZERO, _Y_2x1),
]

TVERSKY_CASES: list[tuple[dict[str, Any], list, list]] = [
    ({**_BG, "sigmoid": True, **_S6}, _X_1x1, _Y_1x1),
    ({**_BG, "sigmoid": True, **_S4}, _X_2x1, _Y_2x1),
    ({**_BG, **_S4}, _SOFT, _SOFT),  # MONAI passes soft_label=False (its default): argument removed
    ({**_NO_BG, "smooth_nr": 0, "smooth_dr": 0}, _X_PERFECT, _Y_PERFECT),
    ({**_NO_BG, "smooth_nr": 0, "smooth_dr": 1e-3}, _X_PERFECT, _Y_PERFECT),
    ({**_OH, "sigmoid": True, **_S4}, _X_2x2, _Y_2x2),
    ({**_OH, "sigmoid": True, "batch": True}, _X_2x2, _Y_2x2),
    ({**_OH, "sigmoid": True, "reduction": "sum", **_S4}, _X_2x2, _Y_2x2),
    ({**_OH, "softmax": True, **_S4}, _X_2x2, _Y_2x2),
    ({**_OH, "softmax": True, "reduction": "none", **_S4}, _X_2x2, _Y_2x2),
    ({**_BG, "sigmoid": True, "alpha": 0.3, "beta": 0.7, **_S6}, _X_1x1, _Y_1x1),
    ({**_BG, "sigmoid": True, "alpha": 0.7, "beta": 0.3, **_S6}, _X_1x1, _Y_1x1),
    ({**_TANH, **_S4}, _X_2x1, _Y_2x1),
    ({**_TANH, "smooth_nr": 0, "smooth_dr": 1e-3, "batch": True}, _X_2x1, _Y_2x1),
    ({**_OH, "other_act": _log_softmax, **_S4}, _X_2x2, _Y_2x2),
]

DTYPES = {"float32": (torch.float32, 1e-5, 1e-6), "float64": (torch.float64, 1e-10, 1e-12)}
"""dtype -> (torch dtype, rtol, atol). Both losses are evaluated in the input dtype."""


def _smoothing(kwargs: dict[str, Any]) -> tuple[float, float]:
    return kwargs.get("smooth_nr", MONAI_DEFAULT_SMOOTH), kwargs.get("smooth_dr", MONAI_DEFAULT_SMOOTH)


def _common(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments ModifiedDiceLoss shares with MONAI (everything but smoothing and the Tversky weights)."""
    return {k: v for k, v in kwargs.items() if k not in ("smooth_nr", "smooth_dr", "alpha", "beta")}


def _case_id(kwargs: dict[str, Any]) -> str:
    return "-".join(f"{k}={getattr(v, '__name__', v)}" for k, v in kwargs.items())


def _compare(ours: torch.Tensor, monai_value: torch.Tensor, dtype_name: str) -> None:
    _, rtol, atol = DTYPES[dtype_name]
    ours_np = ours.detach().to(torch.float64).numpy()
    monai_np = monai_value.detach().to(torch.float64).numpy()
    # MONAI TverskyLoss "none" is [B, C]; ours (like DiceLoss) is [B, C, 1, ...]: same number of elements.
    assert ours_np.size == monai_np.size, f"shape {ours_np.shape} vs MONAI {monai_np.shape}"
    np.testing.assert_allclose(ours_np.reshape(monai_np.shape), monai_np, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype_name", sorted(DTYPES))
@pytest.mark.parametrize(("kwargs", "x", "y"), DICE_CASES, ids=[_case_id(c[0]) for c in DICE_CASES])
def test_equals_monai_dice(kwargs: dict[str, Any], x: list, y: list, dtype_name: str) -> None:
    dtype = DTYPES[dtype_name][0]
    x_t, y_t = torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)
    expected = DiceLoss(**kwargs)(x_t, y_t)
    s_nr, s_dr = _smoothing(kwargs)
    ours = ModifiedDiceLoss(delta=0.5, smooth_nr=s_nr / 2, smooth_dr=s_dr / 2, **_common(kwargs))(x_t, y_t)
    assert ours.shape == expected.shape  # DiceLoss and ours share the "none" shape
    _compare(ours, expected, dtype_name)


@pytest.mark.parametrize("dtype_name", sorted(DTYPES))
@pytest.mark.parametrize(("kwargs", "x", "y"), TVERSKY_CASES, ids=[_case_id(c[0]) for c in TVERSKY_CASES])
def test_equals_monai_tversky(kwargs: dict[str, Any], x: list, y: list, dtype_name: str) -> None:
    dtype = DTYPES[dtype_name][0]
    x_t, y_t = torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)
    s_nr, s_dr = _smoothing(kwargs)
    # the paper's Tversky (delta 0.7), plus the case's own weights (MONAI default 0.5/0.5 or the given alpha/beta)
    weights = {(0.3, 0.7), (kwargs.get("alpha", 0.5), kwargs.get("beta", 0.5))}
    for alpha, beta in sorted(weights):
        assert alpha + beta == pytest.approx(1.0)
        expected = TverskyLoss(alpha=alpha, beta=beta, smooth_nr=s_nr, smooth_dr=s_dr, **_common(kwargs))(x_t, y_t)
        ours = ModifiedDiceLoss(delta=beta, smooth_nr=s_nr, smooth_dr=s_dr, **_common(kwargs))(x_t, y_t)
        _compare(ours, expected, dtype_name)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_default_arguments_match_monai_dice(reduction: str) -> None:
    """With default arguments the two differ only in smoothing (ours 1e-6 on mTI, MONAI 1e-5 on Dice): ~1e-5."""
    x = 2.0 * torch.sin(torch.arange(2 * 2 * 4 * 4 * 3, dtype=torch.float32)).reshape(2, 2, 4, 4, 3)
    y = (torch.cos(torch.arange(2 * 2 * 4 * 4 * 3, dtype=torch.float32)) > 0).float().reshape(2, 2, 4, 4, 3)
    ours = ModifiedDiceLoss(sigmoid=True, reduction=reduction)(x, y)
    expected = DiceLoss(sigmoid=True, reduction=reduction)(x, y)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours.detach().numpy(), expected.detach().numpy(), rtol=0, atol=1e-5)
