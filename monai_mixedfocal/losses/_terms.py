# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Shared building blocks of the loss family: one place for activations, targets, TP/FN/FP and the pixel terms.

Every loss of the package is a thin formula on top of these functions (see ``docs/losses.md``):

- :func:`prepare` turns ``(input, target)`` into a :class:`Prepared` bundle: probabilities ``p`` of every channel,
  their logarithms (log space when logits are given), and the target either as class indices (the fast path: no
  one-hot volume is built) or as a dense one-hot / soft tensor.
- :func:`confusion_sums` computes the soft ``TP``, ``FN`` and ``FP`` per image and class (or pooled over the batch).
- :func:`tversky_index` is the modified Dice similarity coefficient / Tversky index of Yeung et al., Eq. 9.
- :func:`pixel_focal_term` is the per-voxel (modified) focal / cross-entropy term, Eqs. 2, 7, 17 and 21.

Reference:
    Yeung M, Sala E, Schönlieb C-B, Rundo L. "A Mixed Focal Loss Function for Handling Class Imbalanced Medical Image
    Segmentation". arXiv:2102.04525 (2021).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# The authors' clip of probabilities before every log and before the focal Tversky loss.
PROB_CLIP = 1e-7
#: how far outside [0, 1] an input taken as probabilities may lie (rounding) before :func:`check_probabilities` raises
PROB_TOLERANCE = 1e-3
# Smallest base at which a power ``x ** g`` passes a gradient: below it the value is exact but the gradient is 0, which
# keeps it finite at ``x = 0`` for exponents g < 1 (the true limit of every product it appears in is finite).
POW_EPS = 1e-12


@dataclass
class Prepared:
    """Network output and ground truth in the form every term needs.

    Attributes:
        prob: probabilities ``[B, C, *spatial]`` of all ``C`` channels (float32 or float64).
        prob_clipped: ``prob`` clipped to ``[1e-7, 1 - 1e-7]`` when the input was given as probabilities (the authors'
            clip, used by the focal terms and the focal Tversky loss), else ``prob`` itself.
        log_prob: ``log p`` with the same shape: exact log-softmax / log-sigmoid for logits, the log of the clipped
            probability otherwise.
        log_prob_neg: ``log(1 - p)`` for the binary form, else ``None``.
        labels: class indices ``[B, 1, *spatial]`` (int64) when the target was given as indices and the categorical
            form applies; ``None`` otherwise.
        target: dense target ``[B, C, *spatial]`` (float) when ``labels`` is ``None``.
        kept: channel indices kept by ``include_background`` (all channels, or ``1..C-1``).
        binary: ``True`` for the binary (sigmoid / one channel) form of the cross-entropy terms.
        clip: ``True`` when the input was taken as probabilities (no ``sigmoid`` / ``softmax`` flag).
    """

    prob: torch.Tensor
    prob_clipped: torch.Tensor
    log_prob: torch.Tensor
    log_prob_neg: torch.Tensor | None
    labels: torch.Tensor | None
    target: torch.Tensor | None
    kept: slice
    binary: bool
    clip: bool

    @property
    def num_channels(self) -> int:
        """Number of channels of the network output (before ``include_background``)."""
        return self.prob.shape[1]

    @property
    def num_kept(self) -> int:
        """Number of channels after ``include_background``."""
        return len(range(self.num_channels)[self.kept])

    @property
    def num_voxels(self) -> int:
        """Number of spatial voxels of one image."""
        return self.prob[0, 0].numel()


def check_target_shape(input: torch.Tensor, target: torch.Tensor, to_onehot: bool) -> None:
    """Raise ``ValueError`` for an empty input, or unless ``target`` has the shape of class indices (``to_onehot``) or
    of ``input``."""
    if input.numel() == 0:
        raise ValueError(f"input has no elements (shape {tuple(input.shape)}): a loss needs at least one voxel.")
    if target.ndim != input.ndim:
        raise ValueError(
            f"target must have the same number of dimensions as input [B, C, *spatial]; "
            f"got input shape {tuple(input.shape)} and target shape {tuple(target.shape)}."
        )
    if to_onehot:
        if target.shape[1] != 1 or target.shape[0] != input.shape[0] or target.shape[2:] != input.shape[2:]:
            raise ValueError(
                f"with to_onehot_y=True the target must be class indices of shape [B, 1, *spatial] = "
                f"{(input.shape[0], 1, *input.shape[2:])}; got {tuple(target.shape)}."
            )
    elif target.shape != input.shape:
        raise ValueError(f"ground truth has different shape ({tuple(target.shape)}) from input ({tuple(input.shape)}).")


def check_label_range(labels: torch.Tensor, num_classes: int) -> None:
    """Raise ``ValueError`` unless every class index lies in ``[0, num_classes)``."""
    low, high = (int(v) for v in torch.aminmax(labels))
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"target class indices must lie in [0, {num_classes - 1}] for an input with {num_classes} channels; "
            f"got values in [{low}, {high}]."
        )


def check_input_finite(x: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or inf (one cheap reduction; the exact test only when it fails)."""
    with torch.no_grad():
        if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
            raise ValueError(
                "input contains NaN/inf values. The network output (the loss input) is not finite: in training this "
                "usually means it diverged; lower the learning rate (or turn AMP off), or check the input images for "
                "NaN/inf voxels."
            )


def check_probabilities(prob: torch.Tensor) -> None:
    """Raise ``ValueError`` if an input taken as probabilities (no activation at all) lies outside [0, 1].

    Logits passed without ``softmax=True`` / ``sigmoid=True`` (the registry presets set no activation, as MONAI's
    losses) were clipped to ``[1e-7, 1 - 1e-7]`` and gave no gradient at most voxels: a run that silently did not learn.
    One reduction (``aminmax``), after :func:`check_input_finite`; values within :data:`PROB_TOLERANCE` of the interval
    pass (and are clipped as before). The output of an ``other_act`` is the user's choice and is not checked (MONAI
    allows e.g. ``torch.tanh``).
    """
    with torch.no_grad():  # an empty input was refused before, by check_target_shape
        low, high = (float(v) for v in torch.aminmax(prob))
    if low < -PROB_TOLERANCE or high > 1.0 + PROB_TOLERANCE:
        raise ValueError(
            f"the input is taken as probabilities (neither softmax nor sigmoid is set) but holds values in "
            f"[{low:.4g}, {high:.4g}]. Pass logits with softmax=True (sigmoid=True for a binary or multi-label "
            "output), or probabilities in [0, 1]."
        )


def _check_target(input: torch.Tensor, target: torch.Tensor, to_onehot: bool) -> torch.Tensor:
    """Validate the target against the input and return class indices (``to_onehot``) or the dense float target."""
    if target.ndim != input.ndim:
        check_target_shape(input, target, to_onehot)  # raises: a wrong number of dimensions comes first
    if torch.is_floating_point(target) and not torch.isfinite(target).all():
        raise ValueError("target contains NaN or inf values.")
    check_target_shape(input, target, to_onehot)
    num_classes = input.shape[1]
    if to_onehot:
        if torch.is_floating_point(target) and not torch.equal(target, target.round()):
            raise ValueError("with to_onehot_y=True the target must hold integer class indices; got fractional values.")
        labels = target.long()
        check_label_range(labels, num_classes)
        return labels
    target = target.to(torch.float64 if input.dtype == torch.float64 else torch.float32)
    low, high = (float(v) for v in torch.aminmax(target.detach()))
    if low < 0.0 or high > 1.0:
        hint = (
            "The input has one channel, a binary output: its target is 0 / 1 (to_onehot_y does not apply to one "
            "channel); give the network one channel per class for a label map with more values."
            if num_classes == 1
            else "Pass class indices with to_onehot_y=True for a label map."
        )
        raise ValueError(
            f"a one-hot / soft target must hold values in [0, 1]; got values in [{low:g}, {high:g}]. {hint}"
        )
    return target


def plain_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as a plain ``torch.Tensor`` (same storage, still in the autograd graph).

    MONAI's transforms and networks hand over ``MetaTensor`` s; their metadata is irrelevant to a loss, their
    ``__torch_function__`` runs on every operation, and ``torch.compile`` cannot trace the fused kernels through it.
    """
    if type(tensor) is torch.Tensor or not isinstance(tensor, torch.Tensor):
        return tensor
    return tensor.as_subclass(torch.Tensor)


def upcast(input: torch.Tensor) -> torch.Tensor:
    """The input in the dtype the losses compute in: float32, or float64 when given.

    Half-precision inputs (e.g. under ``torch.autocast``) keep a float32 loss. The gradient flowing back into a float16
    input is clamped to float16's finite range: a loss term can legitimately have a gradient above 65504 per voxel
    (e.g. a Dice term of a class absent from the target, ``(1 - delta) / smooth_dr``), which the cast back to float16
    would turn into inf.
    """
    if input.dtype == torch.float64:
        return input
    x = input.float()
    if input.dtype == torch.float16 and x.requires_grad:
        limit = torch.finfo(torch.float16).max
        x.register_hook(lambda grad: grad.clamp(-limit, limit))
    return x


def prepare(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    sigmoid: bool,
    softmax: bool,
    other_act: object | None,
    to_onehot_y: bool,
    include_background: bool,
) -> Prepared:
    """Apply the activation, turn the target into indices or a dense tensor, and select the kept channels.

    The order follows ``monai.losses.DiceLoss``: activation on all channels, then one-hot of the target, then the
    background channel is dropped (``include_background=False``). A single-channel output is treated as a binary
    problem whatever the flags say (the callers warn at construction or call time, as MONAI does).

    Args:
        input: network output ``[B, C, *spatial]``: logits with ``sigmoid``/``softmax``, else probabilities (or the
            input of ``other_act``).
        target: ``[B, 1, *spatial]`` class indices (``to_onehot_y=True``) or ``[B, C, *spatial]`` one-hot / soft labels.
        sigmoid: apply a sigmoid (binary / multi-label form of the cross-entropy terms).
        softmax: apply a softmax over channels (categorical form).
        other_act: any other callable activation; its output is taken as probabilities.
        to_onehot_y: the target holds class indices.
        include_background: keep channel 0.

    Returns:
        the :class:`Prepared` tensors.

    Raises:
        ValueError: for a shape mismatch, class indices out of range, fractional indices, NaN / inf values, or a dense
            target outside [0, 1].
    """
    if input.ndim < 3:
        raise ValueError(f"input must have shape [B, C, *spatial] (at least 3 dimensions); got {tuple(input.shape)}.")
    x = upcast(plain_tensor(input))
    target = plain_tensor(target)
    check_input_finite(x)
    num_channels = x.shape[1]
    single = num_channels == 1
    to_onehot = to_onehot_y and not single
    target_t = _check_target(x, target, to_onehot)
    binary = sigmoid or single

    use_softmax = softmax and not single  # MONAI: softmax on one channel is skipped (the caller warns)
    clip = not (sigmoid or use_softmax)
    log_prob_neg = None
    if use_softmax:
        log_prob = F.log_softmax(x, dim=1)
        prob = prob_clipped = log_prob.exp()
    elif sigmoid:
        prob = prob_clipped = torch.sigmoid(x)
        log_prob = F.logsigmoid(x)
        log_prob_neg = F.logsigmoid(-x)
    else:
        prob = other_act(x) if other_act is not None else x  # type: ignore[operator]
        if other_act is None:
            check_probabilities(prob)
        prob_clipped = prob.clamp(PROB_CLIP, 1.0 - PROB_CLIP)
        log_prob = prob_clipped.log()
        if binary:
            log_prob_neg = torch.log1p(-prob_clipped)

    labels = target_t if to_onehot else None
    dense = None
    if labels is not None and binary:  # multi-label sigmoid needs every channel's 0/1 target
        dense = F.one_hot(labels[:, 0], num_channels).movedim(-1, 1).to(prob.dtype)
        labels = None
    elif labels is None:
        dense = target_t.to(prob.dtype)
    kept = kept_channels(num_channels, include_background)
    return Prepared(prob, prob_clipped, log_prob, log_prob_neg, labels, dense, kept, binary, clip)


#: device types without float64 tensors, where :func:`label_sums` takes one masked sum per class
NO_FLOAT64_DEVICES: frozenset[str] = frozenset({"mps"})


def label_sums(flat: torch.Tensor, labels: torch.Tensor, float64: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``TP_k = sum_i [label_i = k] p_ik`` and the voxel count of each class ``k``, without a one-hot volume.

    A float32 sum that adds one voxel after the other (``scatter_add``) stops counting at ``2**24`` voxels of a class
    (``1 + 2**24 == 2**24``; a CT volume's background has more) and drifts well before. With ``float64`` the scatter
    adds in float64 (counts exact, sums to float32 accuracy, at the scatter's speed); without it (devices without
    float64), one masked sum per class, which ``sum`` adds pairwise.

    Args:
        flat: probabilities ``[B, C, N]``.
        labels: class indices ``[B, N]`` (int64).
        float64: accumulate in float64.

    Returns:
        ``(tp, counts)``, both ``[B, C]`` in the dtype of ``flat``.
    """
    b, c = flat.shape[:2]
    if float64:
        picked = flat.gather(1, labels[:, None])[:, 0].to(torch.float64)
        tp = torch.zeros(b, c, dtype=torch.float64, device=flat.device).scatter_add(1, labels, picked)
        ones = torch.ones_like(labels)
        counts = torch.zeros(b, c, dtype=torch.int64, device=flat.device).scatter_add(1, labels, ones)
        return tp.to(flat.dtype), counts.to(flat.dtype)
    masks = [labels == k for k in range(c)]
    tp = torch.stack([torch.where(mask, flat[:, k], 0.0).sum(-1) for k, mask in enumerate(masks)], 1)
    return tp, torch.stack([mask.sum(-1) for mask in masks], 1).to(flat.dtype)


def confusion_sums(
    prep: Prepared, batch: bool = False, clip: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft true positives, false negatives and false positives of the kept channels.

    ``TP = sum_i y p``, ``FN = sum_i y (1 - p)``, ``FP = sum_i (1 - y) p``, summed over the voxels of each image
    (and over the batch when ``batch=True``).

    Args:
        prep: the prepared input.
        batch: pool the sums over the batch (nnU-Net's "batch Dice").
        clip: clip probabilities to ``[1e-7, 1 - 1e-7]`` first when the input was given as probabilities (the authors'
            focal Tversky code).

    Returns:
        ``(tp, fn, fp)``, each ``[B, K]`` (or ``[K]`` with ``batch=True``), ``K`` the number of kept channels.
    """
    prob = prep.prob_clipped if clip else prep.prob
    b, c = prob.shape[:2]
    flat = prob.reshape(b, c, -1)
    pred_sum = flat.sum(-1)
    if prep.labels is not None:
        tp, ref_sum = label_sums(flat, prep.labels.reshape(b, -1), float64=flat.device.type not in NO_FLOAT64_DEVICES)
    else:
        y = prep.target.reshape(b, c, -1)  # type: ignore[union-attr]
        tp = (y * flat).sum(-1)
        ref_sum = y.sum(-1)
    tp, pred_sum, ref_sum = tp[:, prep.kept], pred_sum[:, prep.kept], ref_sum[:, prep.kept]
    if batch:
        tp, pred_sum, ref_sum = tp.sum(0), pred_sum.sum(0), ref_sum.sum(0)
    return tp, ref_sum - tp, pred_sum - tp


def tversky_index(
    tp: torch.Tensor, fn: torch.Tensor, fp: torch.Tensor, delta: float, smooth_nr: float, smooth_dr: float
) -> torch.Tensor:
    """The modified Dice similarity coefficient / Tversky index, Yeung et al. Eq. 9 (with the typo corrected).

    ``mTI = (TP + smooth_nr) / (TP + delta * FN + (1 - delta) * FP + smooth_dr)``: ``delta`` weights the false
    negatives; ``delta = 0.5`` is the soft Dice coefficient (Eq. 10), ``delta = 0.7`` the Tversky index (Eq. 12).
    """
    return (tp + smooth_nr) / (tp + delta * fn + (1.0 - delta) * fp + smooth_dr)


def safe_pow(base: torch.Tensor, exponent: float) -> torch.Tensor:
    """``base ** exponent`` for a base in ``[0, 1]``, exact in value and with a finite gradient at 0 for any exponent
    > 0: for ``exponent < 1``, whose derivative is infinite at 0, the gradient is 0 below :data:`POW_EPS`. A base
    rounded below 0 counts as 0."""
    if exponent == 1.0:
        return base
    base = base.clamp_min(0.0)
    if exponent > 1.0:  # the derivative exponent * base ** (exponent - 1) is finite at 0
        return base**exponent
    # where() passes no gradient to the detached bases, so the infinite derivative of 0 ** exponent is dropped, not
    # multiplied by 0
    return torch.where(base >= POW_EPS, base, base.detach()) ** exponent


def kept_channels(num_channels: int, include_background: bool) -> slice:
    """The channels a loss keeps: all, or ``1..C-1`` without the background (a single channel is always kept)."""
    return slice(1, None) if (not include_background and num_channels > 1) else slice(None)


def alpha_vector(
    alpha: float | Sequence[float], num_kept: int, include_background: bool, like: torch.Tensor
) -> float | torch.Tensor:
    """``alpha`` as a number, or as a tensor of per-class weights (dtype and device of ``like``) of the kept channels.

    Raises:
        ValueError: if a per-class ``alpha`` does not have one weight per kept channel.
    """
    if isinstance(alpha, (int, float)):
        return float(alpha)
    check_alpha_count(alpha, num_kept, include_background)
    return torch.tensor(alpha, dtype=like.dtype, device=like.device)


def check_alpha_count(alpha: float | Sequence[float], num_kept: int, include_background: bool) -> None:
    """Raise ``ValueError`` if a per-class ``alpha`` does not have one weight per kept channel."""
    if not isinstance(alpha, (int, float)) and len(alpha) != num_kept:
        raise ValueError(
            f"alpha has {len(alpha)} per-class weights but the loss sees {num_kept} channels "
            f"(after include_background={include_background})."
        )


def _class_vector(values: torch.Tensor | None, prep: Prepared, like: torch.Tensor) -> torch.Tensor | None:
    """A per-class weight vector over ALL channels (zeros on the dropped channels)."""
    if values is None:
        return None
    full = torch.zeros(prep.num_channels, dtype=like.dtype, device=like.device)
    full[prep.kept] = values.to(like)
    return full


def pixel_focal_term(
    prep: Prepared,
    alpha: torch.Tensor | float,
    gamma: float,
    beta: float | None,
) -> torch.Tensor:
    """The per-voxel (modified) focal / cross-entropy loss, summed over the kept classes.

    Categorical form (softmax or probabilities):
    ``P_i = sum_c alpha_c * w_c * (1 - p_c)^gamma * (-y_c log p_c)`` with ``w_c = beta`` on foreground channels and
    ``1 - beta`` on the background channel 0 (all 1 when ``beta`` is None).
    Binary form (sigmoid or one channel), per kept channel ``c``:
    ``alpha_c * [beta (1 - p_c)^gamma (-y_c log p_c) + (1 - beta) p_c^gamma (-(1 - y_c) log(1 - p_c))]``.

    With ``gamma = 0`` and ``alpha = 1`` this is the (weighted) cross entropy of Eq. 2 / Eq. 17; with ``beta`` given it
    is the modified focal loss of Eq. 21 (corrected to be non-negative).

    Args:
        prep: the prepared input.
        alpha: a scalar, or a tensor with one weight per kept channel.
        gamma: the focal exponent (``>= 0``).
        beta: the false-negative weight of Eq. 17, or ``None``.

    Returns:
        the per-voxel loss ``[B, 1, *spatial]`` when the categorical form has class indices, else the per-voxel,
        per-class loss ``[B, K, *spatial]`` of the kept channels (sum it over dim 1 for the per-voxel loss).
    """
    alpha_t = alpha if isinstance(alpha, torch.Tensor) else None
    scale = float(alpha) if alpha_t is None else 1.0
    if prep.binary:
        p = prep.prob_clipped[:, prep.kept]
        y = prep.target[:, prep.kept]  # type: ignore[index]
        pos = -y * prep.log_prob[:, prep.kept]
        neg = -(1.0 - y) * prep.log_prob_neg[:, prep.kept]  # type: ignore[index]
        if gamma != 0.0:
            pos = safe_pow(1.0 - p, gamma) * pos
            neg = safe_pow(p, gamma) * neg
        if beta is not None:
            pos, neg = beta * pos, (1.0 - beta) * neg
        term = pos + neg
        if alpha_t is not None:
            term = term * alpha_t.to(term).view(1, -1, *([1] * (term.ndim - 2)))
        return term * scale if scale != 1.0 else term

    weights = _class_vector(alpha_t, prep, prep.prob)
    if beta is not None:
        class_w = torch.full((prep.num_channels,), beta, dtype=prep.prob.dtype, device=prep.prob.device)
        class_w[0] = 1.0 - beta
        weights = class_w if weights is None else weights * class_w
    if prep.kept.start == 1:  # background dropped: zero weight on channel 0
        weights = weights if weights is not None else torch.ones(prep.num_channels).to(prep.prob)
        weights = weights.clone()
        weights[0] = 0.0
    if prep.labels is not None:
        log_pt = prep.log_prob.gather(1, prep.labels)
        term = -log_pt
        if gamma != 0.0:
            term = safe_pow(-torch.expm1(log_pt), gamma) * term
        if weights is not None:
            term = term * weights[prep.labels]
        return term * scale if scale != 1.0 else term
    term = -prep.target * prep.log_prob  # type: ignore[operator]
    if gamma != 0.0:
        term = safe_pow(1.0 - prep.prob_clipped, gamma) * term
    if weights is not None:
        term = term * weights.view(1, -1, *([1] * (term.ndim - 2)))
    term = term[:, prep.kept]
    return term * scale if scale != 1.0 else term
