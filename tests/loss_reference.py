# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Independent float64 reference implementation of the Mixed Focal loss family, for the tests only.

Written from the equations of Yeung et al. (Eqs. 2-24, with the corrections of the project formula sheet) and the
loss API specification, NOT from the package implementation. Everything is plain numpy in float64 with explicit
loops over images ``b`` and classes ``c`` so that each line can be checked against an equation:

- ``TP = sum_i y p``, ``FN = sum_i y (1 - p)``, ``FP = sum_i (1 - y) p`` per image and class (pooled over the batch
  with ``batch=True``);
- ``mTI(delta) = (TP + smooth_nr) / (TP + delta FN + (1 - delta) FP + smooth_dr)``, delta weights false negatives;
- region terms ``1 - mTI`` (modified Dice / Tversky), ``(1 - mTI)^(1/gamma)`` (focal Tversky, Eq. 14),
  ``cos^gamma(pi/2 mTI)`` (cosine Tversky, Eq. 15);
- pixel terms, categorical ``alpha_c w_c (1 - p_c)^gamma (-y_c log p_c)`` and binary
  ``alpha_c [w_pos (1 - p_c)^gamma (-y_c log p_c) + w_neg p_c^gamma (-(1 - y_c) log(1 - p_c))]``;
- Combo (Eqs. 16, 18, 20 corrected) and Mixed Focal (Eqs. 23, 24);
- the region reductions (``none`` -> ``[B, C, 1, ...]``, ``mean``/``sum`` over B and C) and the pixel reductions
  (``mean`` = sum over classes, mean over B and voxels; ``sum`` = per-image mean over voxels, summed over B).

All public functions take the input and target (torch tensors or numpy arrays) and the same keyword arguments as
the corresponding ``monai_mixedfocal.losses`` class, and return a float (``mean``/``sum``) or a numpy array (``none``).

Example:
    >>> import numpy as np
    >>> p = np.array([[[[0.1, 0.5], [0.7, 0.9]], [[0.9, 0.5], [0.3, 0.1]]]])
    >>> y = np.array([[[[1, 1], [0, 0]]]])
    >>> round(modified_dice_loss(p, y, to_onehot_y=True, smooth_nr=0.0, smooth_dr=0.0), 6)
    0.250627
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

CLIP_EPS = 1e-7
"""The authors' probability clip: p is clipped to [CLIP_EPS, 1 - CLIP_EPS] before logs and focal Tversky."""

REGION_DEFAULT_SMOOTH = 1e-6
"""Default smooth_nr / smooth_dr of every loss of the package (the authors' 1e-6)."""


@dataclass
class Prepared:
    """Activated, one-hot, background-filtered tensors of one forward call (float64 numpy).

    Attributes:
        p: probabilities of the kept channels, ``[B, K, *spatial]``, NOT clipped.
        y: one-hot / soft target of the kept channels, ``[B, K, *spatial]``.
        channels: original channel index of each kept channel.
        binary: True for the BINARY cross-entropy form (sigmoid or one channel), False for CATEGORICAL.
        probability_input: True when the input was taken as probabilities (no sigmoid/softmax applied).
        log_p: ``log p`` of the kept channels used by cross-entropy terms.
        log_1mp: ``log(1 - p)`` of the kept channels (binary form only; None for the categorical form).
        p_focal: p used by the focal factors ``(1-p)^gamma`` and ``p^gamma`` (clipped for probability inputs).
        n_spatial: number of spatial dimensions.
    """

    p: np.ndarray
    y: np.ndarray
    channels: list[int]
    binary: bool
    probability_input: bool
    log_p: np.ndarray
    log_1mp: np.ndarray | None
    p_focal: np.ndarray
    n_spatial: int


def to_numpy(x: Any) -> np.ndarray:
    """Convert a torch tensor or array-like to a float64 numpy array (detached, on CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def logistic(x: np.ndarray) -> np.ndarray:
    """Logistic function 1 / (1 + exp(-x)), computed stably in float64."""
    return np.exp(-np.logaddexp(0.0, -x))


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log(sigmoid(x)) = -log(1 + exp(-x)), exact for large |x|."""
    return -np.logaddexp(0.0, -x)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """log softmax over the channel axis 1: x_c - log(sum_k exp(x_k))."""
    m = np.max(x, axis=1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=1, keepdims=True))


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """One-hot encode an index map ``[B, 1, *spatial]`` into ``[B, num_classes, *spatial]`` (explicit loop)."""
    out = np.zeros((labels.shape[0], num_classes, *labels.shape[2:]), dtype=np.float64)
    for c in range(num_classes):
        out[:, c] = labels[:, 0] == c
    return out


def prepare(
    input: Any,
    target: Any,
    include_background: bool = True,
    to_onehot_y: bool = False,
    sigmoid: bool = False,
    softmax: bool = False,
    other_act: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Prepared:
    """Apply the MONAI order: activation on all channels -> one-hot target -> drop channel 0.

    Single-channel input: softmax, to_onehot_y and include_background=False are ignored (MONAI behaviour).

    Args:
        input: ``[B, C, *spatial]`` logits or probabilities.
        target: ``[B, 1, *spatial]`` indices (with to_onehot_y) or ``[B, C, *spatial]`` one-hot / soft labels.
        include_background: keep channel 0.
        to_onehot_y: one-hot encode an index target.
        sigmoid: apply a sigmoid (binary cross-entropy form).
        softmax: apply a softmax over channels (categorical form, log_softmax for the logs).
        other_act: any other activation; its output is taken as probabilities.

    Returns:
        The prepared tensors.
    """
    x = to_numpy(input)
    t = to_numpy(target)
    n_channels = x.shape[1]
    use_softmax = softmax and n_channels > 1
    if sigmoid:
        p = logistic(x)
    elif use_softmax:
        p = np.exp(log_softmax(x))
    elif other_act is not None:
        p = to_numpy(other_act(torch.as_tensor(x)))
    else:
        p = x.copy()
    y = one_hot(t, n_channels) if (to_onehot_y and n_channels > 1) else t
    channels = list(range(n_channels)) if (include_background or n_channels == 1) else list(range(1, n_channels))
    binary = sigmoid or n_channels == 1
    probability_input = not sigmoid and not use_softmax
    if sigmoid:
        log_p, log_1mp, p_focal = log_sigmoid(x), log_sigmoid(-x), p
    elif use_softmax:
        log_p, log_1mp, p_focal = log_softmax(x), None, p
    else:
        p_focal = np.clip(p, CLIP_EPS, 1.0 - CLIP_EPS)
        log_p, log_1mp = np.log(p_focal), np.log(1.0 - p_focal)
    return Prepared(
        p=p[:, channels],
        y=y[:, channels],
        channels=channels,
        binary=binary,
        probability_input=probability_input,
        log_p=log_p[:, channels],
        log_1mp=None if (log_1mp is None or not binary) else log_1mp[:, channels],
        p_focal=p_focal[:, channels],
        n_spatial=x.ndim - 2,
    )


# ----------------------------------------------------------------------------------------------------------------
# Region (overlap) terms
# ----------------------------------------------------------------------------------------------------------------
def confusion(p: np.ndarray, y: np.ndarray, batch: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft TP, FN, FP per image and class (``[B, K]``), or per class pooled over the batch (``[K]``).

    Args:
        p: probabilities ``[B, K, *spatial]``.
        y: target ``[B, K, *spatial]``.
        batch: pool the sums over the batch.

    Returns:
        ``(TP, FN, FP)``.
    """
    n_b, n_k = p.shape[:2]
    tp = np.zeros((n_b, n_k))
    fn = np.zeros((n_b, n_k))
    fp = np.zeros((n_b, n_k))
    for b in range(n_b):
        for k in range(n_k):
            tp[b, k] = np.sum(y[b, k] * p[b, k])
            fn[b, k] = np.sum(y[b, k] * (1.0 - p[b, k]))
            fp[b, k] = np.sum((1.0 - y[b, k]) * p[b, k])
    if batch:
        return tp.sum(0), fn.sum(0), fp.sum(0)
    return tp, fn, fp


def mti(
    p: np.ndarray,
    y: np.ndarray,
    delta: float,
    smooth_nr: float = REGION_DEFAULT_SMOOTH,
    smooth_dr: float = REGION_DEFAULT_SMOOTH,
    batch: bool = False,
) -> np.ndarray:
    """Modified Tversky index ``(TP + s_nr) / (TP + delta FN + (1 - delta) FP + s_dr)``, delta weights FN."""
    tp, fn, fp = confusion(p, y, batch)
    return (tp + smooth_nr) / (tp + delta * fn + (1.0 - delta) * fp + smooth_dr)


def reduce_region(values: np.ndarray, reduction: str, n_spatial: int) -> np.ndarray | float:
    """Region reduction: ``none`` -> ``[B, K, 1, ...]`` (``[K, 1, ...]`` for batch), ``mean`` / ``sum`` over all."""
    if reduction == "none":
        return values.reshape(values.shape + (1,) * n_spatial)
    if reduction == "mean":
        return float(np.mean(values))
    if reduction == "sum":
        return float(np.sum(values))
    raise ValueError(f"unknown reduction {reduction!r}")


def reduce_pixel(values: np.ndarray, reduction: str) -> np.ndarray | float:
    """Pixel reduction of ``[B, K, *spatial]``: ``mean`` = sum over K, mean over B and voxels; ``sum`` = per image
    sum over K and mean over voxels, summed over B; ``none`` -> unchanged."""
    if reduction == "none":
        return values
    per_voxel = values.sum(axis=1)  # [B, *spatial]
    if reduction == "mean":
        return float(per_voxel.mean())
    if reduction == "sum":
        total = 0.0
        for b in range(per_voxel.shape[0]):
            total += float(per_voxel[b].mean())
        return total
    raise ValueError(f"unknown reduction {reduction!r}")


# ----------------------------------------------------------------------------------------------------------------
# Pixel (distribution) terms
# ----------------------------------------------------------------------------------------------------------------
def pixel_term(prep: Prepared, alpha: float | Sequence[float], gamma: float, beta: float | None) -> np.ndarray:
    """Per-voxel, per-kept-class focal cross-entropy ``[B, K, *spatial]`` (categorical or binary form).

    Args:
        prep: the prepared tensors.
        alpha: scalar scale or one value per kept channel.
        gamma: focal exponent (0 -> cross entropy).
        beta: FN/FP weight of Eq. 17 (None -> all weights 1).

    Returns:
        The per-voxel terms.
    """
    n_k = len(prep.channels)
    alphas = [float(alpha)] * n_k if np.isscalar(alpha) else [float(a) for a in alpha]
    if len(alphas) != n_k:
        raise ValueError(f"alpha has {len(alphas)} values for {n_k} channels")
    out = np.zeros_like(prep.p)
    for k, c in enumerate(prep.channels):
        y = prep.y[:, k]
        q = prep.p_focal[:, k]
        if prep.binary:
            w_pos, w_neg = (1.0, 1.0) if beta is None else (beta, 1.0 - beta)
            positive = w_pos * (1.0 - q) ** gamma * (-y * prep.log_p[:, k])
            negative = w_neg * q**gamma * (-(1.0 - y) * prep.log_1mp[:, k])
            out[:, k] = alphas[k] * (positive + negative)
        else:
            w = 1.0 if beta is None else (beta if c >= 1 else 1.0 - beta)
            out[:, k] = alphas[k] * w * (1.0 - q) ** gamma * (-y * prep.log_p[:, k])
    return out


# ----------------------------------------------------------------------------------------------------------------
# Public reference losses (same keyword arguments as the package classes)
# ----------------------------------------------------------------------------------------------------------------
_PREP_KEYS = ("include_background", "to_onehot_y", "sigmoid", "softmax", "other_act")


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], str, bool, float, float]:
    prep_kwargs = {k: kwargs.pop(k) for k in _PREP_KEYS if k in kwargs}
    reduction = kwargs.pop("reduction", "mean")
    batch = kwargs.pop("batch", False)
    smooth_nr = kwargs.pop("smooth_nr", REGION_DEFAULT_SMOOTH)
    smooth_dr = kwargs.pop("smooth_dr", REGION_DEFAULT_SMOOTH)
    return prep_kwargs, reduction, batch, smooth_nr, smooth_dr


def _check_empty(kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise TypeError(f"unexpected reference arguments {sorted(kwargs)}")


def modified_dice_loss(input: Any, target: Any, delta: float = 0.5, **kwargs: Any) -> np.ndarray | float:
    """ModifiedDiceLoss: ``R_bc = 1 - mTI_bc(delta)`` (Eq. 11 at delta 0.5, Eq. 13 at 0.7), no clip."""
    prep_kwargs, reduction, batch, s_nr, s_dr = _split(kwargs)
    _check_empty(kwargs)
    prep = prepare(input, target, **prep_kwargs)
    values = 1.0 - mti(prep.p, prep.y, delta, s_nr, s_dr, batch)
    return reduce_region(values, reduction, prep.n_spatial)


def _focal_tversky_values(prep: Prepared, delta: float, gamma: float, s_nr: float, s_dr: float, batch: bool):
    p = np.clip(prep.p, CLIP_EPS, 1.0 - CLIP_EPS) if prep.probability_input else prep.p
    return (1.0 - mti(p, prep.y, delta, s_nr, s_dr, batch)) ** (1.0 / gamma)


def focal_tversky_loss(
    input: Any, target: Any, delta: float = 0.7, gamma: float = 4.0 / 3.0, **kwargs: Any
) -> np.ndarray | float:
    """FocalTverskyLoss: ``R_bc = (1 - mTI_bc(delta))^(1/gamma)`` (Eq. 14); probabilities clipped when no
    sigmoid/softmax is applied."""
    prep_kwargs, reduction, batch, s_nr, s_dr = _split(kwargs)
    _check_empty(kwargs)
    prep = prepare(input, target, **prep_kwargs)
    return reduce_region(_focal_tversky_values(prep, delta, gamma, s_nr, s_dr, batch), reduction, prep.n_spatial)


def cosine_tversky_loss(
    input: Any, target: Any, delta: float = 0.7, gamma: float = 1.0, **kwargs: Any
) -> np.ndarray | float:
    """CosineTverskyLoss: ``R_bc = cos(pi/2 mTI_bc(delta))^gamma`` (Eq. 15 as printed), no clip."""
    prep_kwargs, reduction, batch, s_nr, s_dr = _split(kwargs)
    _check_empty(kwargs)
    prep = prepare(input, target, **prep_kwargs)
    values = np.cos(math.pi / 2.0 * mti(prep.p, prep.y, delta, s_nr, s_dr, batch)) ** gamma
    return reduce_region(values, reduction, prep.n_spatial)


def categorical_focal_loss(
    input: Any,
    target: Any,
    alpha: float | Sequence[float] = 0.25,
    gamma: float = 2.0,
    beta: float | None = None,
    **kwargs: Any,
) -> np.ndarray | float:
    """CategoricalFocalLoss: pixel term (Eq. 7; Eq. 2 at alpha=1, gamma=0; Eq. 17 with beta)."""
    prep_kwargs, reduction, _batch, _s_nr, _s_dr = _split(kwargs)
    _check_empty(kwargs)
    prep = prepare(input, target, **prep_kwargs)
    return reduce_pixel(pixel_term(prep, alpha, gamma, beta), reduction)


def combo_loss(
    input: Any,
    target: Any,
    alpha: float | None = None,
    beta: float | None = None,
    delta: float = 0.5,
    **kwargs: Any,
) -> float:
    """ComboLoss: Eq. 18 (alpha None: CE - DSC), Eq. 16 (alpha*mCE - (1-alpha)*DSC, delta 0.5) or corrected Eq. 20
    (alpha*mCE + (1-alpha)*(1 - mTI(delta)), delta != 0.5)."""
    prep_kwargs, reduction, batch, s_nr, s_dr = _split(kwargs)
    _check_empty(kwargs)
    if reduction not in ("mean", "sum"):
        raise ValueError("compound losses support mean and sum only")
    prep = prepare(input, target, **prep_kwargs)
    ce = reduce_pixel(pixel_term(prep, 1.0, 0.0, beta), reduction)
    score = mti(prep.p, prep.y, delta, s_nr, s_dr, batch)
    if alpha is None:
        return ce - reduce_region(score, reduction, prep.n_spatial)
    if delta == 0.5:
        return alpha * ce - (1.0 - alpha) * reduce_region(score, reduction, prep.n_spatial)
    return alpha * ce + (1.0 - alpha) * reduce_region(1.0 - score, reduction, prep.n_spatial)


def mixed_focal_loss(
    input: Any,
    target: Any,
    lambda_focal: float | None = None,
    alpha: float | Sequence[float] = 0.25,
    beta: float | None = None,
    delta: float = 0.7,
    gamma_focal: float = 2.0,
    gamma_tversky: float = 4.0 / 3.0,
    **kwargs: Any,
) -> float:
    """MixedFocalLoss: Eq. 24 (FT + CF) for lambda None, Eq. 23 (lambda CF + (1 - lambda) FT) otherwise."""
    prep_kwargs, reduction, batch, s_nr, s_dr = _split(kwargs)
    _check_empty(kwargs)
    if reduction not in ("mean", "sum"):
        raise ValueError("compound losses support mean and sum only")
    prep = prepare(input, target, **prep_kwargs)
    ft = reduce_region(_focal_tversky_values(prep, delta, gamma_tversky, s_nr, s_dr, batch), reduction, 0)
    cf = reduce_pixel(pixel_term(prep, alpha, gamma_focal, beta), reduction)
    if lambda_focal is None:
        return ft + cf
    return lambda_focal * cf + (1.0 - lambda_focal) * ft


REFERENCES: dict[str, Callable[..., Any]] = {
    "ModifiedDiceLoss": modified_dice_loss,
    "FocalTverskyLoss": focal_tversky_loss,
    "CosineTverskyLoss": cosine_tversky_loss,
    "CategoricalFocalLoss": categorical_focal_loss,
    "ComboLoss": combo_loss,
    "MixedFocalLoss": mixed_focal_loss,
}
"""Reference function of each package class, by class name."""

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "cross_entropy": ("CategoricalFocalLoss", {"alpha": 1.0, "gamma": 0.0}),
    "focal": ("CategoricalFocalLoss", {"alpha": 0.25, "gamma": 2.0}),
    "dice": ("ModifiedDiceLoss", {"delta": 0.5}),
    "tversky": ("ModifiedDiceLoss", {"delta": 0.7}),
    "focal_tversky": ("FocalTverskyLoss", {"delta": 0.7, "gamma": 4.0 / 3.0}),
    "cosine_tversky": ("CosineTverskyLoss", {"delta": 0.7, "gamma": 1.0}),
    "combo": ("ComboLoss", {}),
    "mixed_focal": ("MixedFocalLoss", {}),
}
"""The registry of the specification: name -> (class name, constructor arguments)."""

COMPOUND = ("ComboLoss", "MixedFocalLoss")
"""Classes whose reduction must be mean or sum."""


def reference(name: str, input: Any, target: Any, **kwargs: Any) -> np.ndarray | float:
    """Evaluate the reference of a class name or a preset name with extra keyword arguments.

    Args:
        name: a key of ``REFERENCES`` (class name) or ``PRESETS`` (registry name).
        input: the network output.
        target: the target.
        **kwargs: constructor arguments (override the preset's).

    Returns:
        The reference loss value.
    """
    if name in PRESETS:
        cls_name, preset = PRESETS[name]
        return REFERENCES[cls_name](input, target, **{**preset, **kwargs})
    return REFERENCES[name](input, target, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Hand-made test inputs shared by the test modules
# ----------------------------------------------------------------------------------------------------------------
SPATIAL_SHAPES: dict[int, tuple[int, ...]] = {2: (3, 4), 3: (2, 3, 2)}
"""Spatial shape of the 2-D and 3-D test inputs (12 voxels each)."""


def make_logits(n_batch: int, n_channels: int, spatial: Sequence[int], scale: float = 3.0) -> torch.Tensor:
    """Deterministic float64 logits in [-scale, scale]: ``scale * sin(1.7 i + 0.5)`` over the flat index i."""
    shape = (n_batch, n_channels, *spatial)
    flat = torch.arange(math.prod(shape), dtype=torch.float64)
    return (scale * torch.sin(1.7 * flat + 0.5)).reshape(shape)


def make_labels(n_batch: int, n_channels: int, spatial: Sequence[int]) -> torch.Tensor:
    """Index labels ``[B, 1, *spatial]`` (int64): image 0 holds every class (0/1 for one channel) in a scrambled
    order; every other image is all background (no foreground at all)."""
    n_vox = math.prod(spatial)
    n_labels = max(n_channels, 2)
    idx = torch.arange(n_vox)
    first = ((idx * 5) % n_vox) % n_labels  # 5 is coprime with the 12 voxels: a permutation of 0..11
    labels = torch.zeros((n_batch, 1, n_vox), dtype=torch.int64)
    labels[0, 0] = first
    return labels.reshape(n_batch, 1, *spatial)


def labels_to_onehot(labels: torch.Tensor, n_channels: int) -> torch.Tensor:
    """One-hot float64 target ``[B, C, *spatial]`` of an index map (the binary map itself for one channel)."""
    if n_channels == 1:
        return labels.to(torch.float64)
    return torch.from_numpy(one_hot(to_numpy(labels), n_channels))


# ----------------------------------------------------------------------------------------------------------------
# The loss configurations exercised by the tests
# ----------------------------------------------------------------------------------------------------------------
# "per_class" is replaced by one alpha per kept channel (see ``resolve``).
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("ModifiedDiceLoss", {}),
    ("ModifiedDiceLoss", {"delta": 0.7}),
    ("ModifiedDiceLoss", {"delta": 0.3, "smooth_nr": 1e-2, "smooth_dr": 2e-2}),
    ("FocalTverskyLoss", {}),
    ("FocalTverskyLoss", {"delta": 0.6, "gamma": 2.0}),
    ("FocalTverskyLoss", {"gamma": 0.8, "smooth_nr": 1e-3, "smooth_dr": 1e-3}),
    ("CosineTverskyLoss", {}),
    ("CosineTverskyLoss", {"delta": 0.5, "gamma": 2.0}),
    ("CosineTverskyLoss", {"gamma": 0.5, "smooth_nr": 1e-2, "smooth_dr": 1e-2}),
    ("CategoricalFocalLoss", {}),
    ("CategoricalFocalLoss", {"alpha": 1.0, "gamma": 0.0}),
    ("CategoricalFocalLoss", {"beta": 0.7}),
    ("CategoricalFocalLoss", {"alpha": 1.0, "gamma": 0.0, "beta": 0.7}),
    ("CategoricalFocalLoss", {"alpha": "per_class", "gamma": 1.5, "beta": 0.3}),
    ("ComboLoss", {}),
    ("ComboLoss", {"beta": 0.7}),
    ("ComboLoss", {"alpha": 0.3}),
    ("ComboLoss", {"alpha": 0.6, "beta": 0.7}),
    ("ComboLoss", {"alpha": 0.4, "delta": 0.7}),
    ("ComboLoss", {"delta": 0.7}),
    ("ComboLoss", {"alpha": 0.5, "beta": 0.3, "delta": 0.6, "smooth_nr": 1e-3, "smooth_dr": 1e-3}),
    ("MixedFocalLoss", {}),
    ("MixedFocalLoss", {"lambda_focal": 0.3}),
    ("MixedFocalLoss", {"beta": 0.7}),
    ("MixedFocalLoss", {"lambda_focal": 0.3, "beta": 0.7, "alpha": "per_class"}),
    ("MixedFocalLoss", {"lambda_focal": 0.8, "delta": 0.6, "gamma_focal": 1.0, "gamma_tversky": 2.0}),
    *[(name, {}) for name in PRESETS],
]
"""(name, constructor kwargs) pairs; the name is a class name of the package or a get_loss preset name."""


def variant_id(variant: tuple[str, dict[str, Any]]) -> str:
    """A readable pytest id of a VARIANTS entry."""
    name, kwargs = variant
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


def resolve(kwargs: dict[str, Any], n_kept: int) -> dict[str, Any]:
    """Replace the ``"per_class"`` alpha token by one value per kept channel (0.2, 0.5, 0.8)."""
    if kwargs.get("alpha") == "per_class":
        return {**kwargs, "alpha": tuple(0.2 + 0.3 * k for k in range(n_kept))}
    return dict(kwargs)
