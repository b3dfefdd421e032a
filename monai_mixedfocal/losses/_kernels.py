# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The fused kernels: every statistic a loss needs from one read of the network output, and its gradient in one more.

Every loss of the package depends on the volume only through a few sums per image and class and one per-voxel
pixel-wise term (see :mod:`monai_mixedfocal.losses._terms`):

- ``sum_i p`` (prediction sum), ``TP = sum_i y p`` and ``sum_i y`` (reference sum), from which ``FN`` and ``FP``
  follow, for the region (Dice / Tversky) terms;
- ``sum_i P_i`` of the (modified) focal / cross-entropy term of each voxel, for the pixel-wise terms.

:func:`fused_forward` computes all of them in one pass over the input, saving only the input, the target and, for a
softmax with a focal term (``gamma != 0``), the log-sum-exp of every voxel. Its backward pass is one more pass
(:func:`fused_backward`): the gradient of the loss with respect to the input depends on the volume only through the
per-class scalars ``dL/dsum_p`` and ``dL/dTP`` and the per-image ``dL/dsum_P``, so the softmax is recomputed and the
gradient written at once. No one-hot volume is built for class-index targets. What a kernel computes is fixed by its
:class:`KernelSpec`.

The two kernels are written as plain tensor code, one ``[B, N]`` tensor per channel, so that ``torch.compile`` turns
each into a single loop over the voxels; :mod:`~monai_mixedfocal.losses._fused` compiles them, or runs them on chunks
of voxels without compilation, and makes them an autograd function. This module holds the math only. The values
equal those of the plain autograd path of :mod:`~monai_mixedfocal.losses._terms` up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from monai_mixedfocal.losses._terms import POW_EPS, PROB_CLIP

__all__ = [
    "KernelSpec",
    "forward_outputs",
    "forward_sums",
    "fused_backward",
    "fused_forward",
    "stacked_sums",
    "sums_valid",
]


@dataclass(frozen=True)
class KernelSpec:
    """What the kernels compute (static: one compiled kernel per distinct spec).

    Attributes:
        activation: ``"softmax"``, ``"sigmoid"`` or ``"identity"`` (probabilities, clipped before every log).
        index_target: the target holds class indices ``[B, N]`` (else a dense ``[B, C, N]`` float target).
        region: compute the prediction sums and true positives of the region terms.
        region_clip: the region sums use the clipped probabilities (focal Tversky with probability inputs).
        gamma: the focal exponent of the pixel-wise term, or ``None`` for no pixel-wise term.
        binary: the binary (per-channel positive / negative) form of the pixel-wise term.
    """

    activation: str
    index_target: bool
    region: bool
    region_clip: bool
    gamma: float | None
    binary: bool

    @property
    def index_categorical(self) -> bool:
        """Class indices with the categorical form: only the labelled class has a pixel-wise term."""
        return self.index_target and not self.binary

    @property
    def saves_lse(self) -> bool:
        """The forward pass saves the log-sum-exp for the backward pass: a softmax with a focal pixel-wise term
        (``gamma != 0``), whose gradient needs ``log p``. Otherwise the backward pass recomputes the probabilities from
        the logits alone (the gradient of the plain cross-entropy, ``p - y``, has no logarithm), and without a
        pixel-wise term the forward pass takes no logarithm either (on CPU the costliest operation of the pass)."""
        return self.activation == "softmax" and self.gamma not in (None, 0.0)


def _pow(base: torch.Tensor, exponent: float) -> torch.Tensor:
    """``base ** exponent`` with the exact small integer cases spelled out (cheaper, and exact like ``torch.pow``)."""
    if exponent == 1.0:
        return base
    if exponent == 2.0:
        return base * base
    return base**exponent


def _focal_factor(base: torch.Tensor, gamma: float) -> torch.Tensor | None:
    """``safe_pow(base, gamma)`` of :mod:`~monai_mixedfocal.losses._terms` (``None`` for the factor 1 of gamma 0)."""
    if gamma == 0.0:
        return None
    if gamma == 1.0:
        return base
    return _pow(base.clamp_min(0.0), gamma)


def _focal_factor_grad(base: torch.Tensor, gamma: float) -> torch.Tensor | None:
    """The derivative of :func:`_focal_factor` with respect to ``base`` (as autograd differentiates ``safe_pow``)."""
    if gamma == 0.0:
        return None
    if gamma == 1.0:
        return torch.ones_like(base)
    return (gamma * _pow(base.clamp_min(POW_EPS), gamma - 1.0)) * (base >= POW_EPS)


def _times(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    """``a * b`` where ``None`` stands for 1."""
    return b if a is None else a * b


def _sum_optional(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """``a + b`` where ``None`` stands for 0."""
    if a is None:
        return b
    return a if b is None else a + b


def _total(values: Sequence[torch.Tensor]) -> torch.Tensor:
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


def _select(labels: torch.Tensor, values: Sequence[torch.Tensor]) -> torch.Tensor:
    """``values[labels]`` per voxel, for per-channel values (tensors or 0-d / per-image scalars)."""
    out = values[-1]
    for c in range(len(values) - 2, -1, -1):
        out = torch.where(labels == c, values[c], out)
    return out


def _others(labels: torch.Tensor, ps: Sequence[torch.Tensor]) -> torch.Tensor:
    """``1 - p_t`` as the sum of the other classes' probabilities (exact where ``p_t`` is close to 1)."""
    return _total([torch.where(labels == c, 0.0, p) for c, p in enumerate(ps)])


def _softmax(xs: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Probabilities of every channel, the maximum ``m`` and sum ``s = sum_c exp(x_c - m)`` of every voxel, and the
    shifted logits ``x_c - m`` (the log-sum-exp is ``m + log s``).

    The maximum is taken with a comparison, not ``torch.maximum``: it skips a NaN instead of propagating it (cheaper in
    the compiled loop), and a NaN still makes its shifted logit, hence the forward pass's guard, NaN.
    """
    m = xs[0]
    for x in xs[1:]:
        m = torch.where(x > m, x, m)
    shifted = [x - m for x in xs]
    es = [torch.exp(z) for z in shifted]
    se = _total(es)
    inv = torch.reciprocal(se)
    return [e * inv for e in es], m, se, shifted


def _clip(p: torch.Tensor) -> torch.Tensor:
    return p.clamp(PROB_CLIP, 1.0 - PROB_CLIP)


def _clip_mask(p: torch.Tensor) -> torch.Tensor:
    """Where the clip passes the gradient (as autograd differentiates ``clamp``)."""
    return (p >= PROB_CLIP) & (p <= 1.0 - PROB_CLIP)


def _as_compared(spec: KernelSpec, target: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Class indices of any dtype as floats of the input's ``dtype``, once per voxel, for the comparisons with every
    class: wide integer compares (int64 vectors hold half as many lanes) cost more than the conversion. Exact: an
    integer label equals ``c`` exactly when its float does (labels of ``2**24`` and more are invalid anyway)."""
    return target.to(dtype) if spec.index_target else target


def _targets(spec: KernelSpec, target: torch.Tensor, num_channels: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """The per-channel target ``y_c``: a 0/1 float for class indices, the dense value otherwise."""
    if spec.index_target:
        return [(target == c).to(dtype) for c in range(num_channels)]
    return list(target.unbind(1))


def fused_forward(
    spec: KernelSpec, x: torch.Tensor, target: torch.Tensor, wpos: torch.Tensor, wneg: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """:func:`forward_sums`, then :func:`sums_valid` and the per-channel sums stacked (:func:`stacked_sums`).

    Returns:
        ``(pred_sum [B, C], tp [B, C], ref_sum [B, C], pixel [B], valid, lse)``, ``valid`` a 0-d bool tensor.
    """
    return forward_outputs(spec, x, *forward_sums(spec, x, target, wpos, wneg))


def forward_outputs(
    spec: KernelSpec,
    x: torch.Tensor,
    pred_sums: list[torch.Tensor],
    tps: list[torch.Tensor],
    ref_sums: list[torch.Tensor],
    pixel: torch.Tensor,
    lse: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """What :func:`fused_forward` returns, from the results of :func:`forward_sums` over the whole volume."""
    valid = sums_valid(spec, pred_sums, ref_sums, pixel, x.shape[2])
    return (*stacked_sums(x, pred_sums, tps, ref_sums), pixel, valid, lse)


def stacked_sums(
    x: torch.Tensor, pred_sums: list[torch.Tensor], tps: list[torch.Tensor], ref_sums: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-channel ``[B]`` sums of :func:`forward_sums` as ``[B, C]`` tensors (zeros where the spec has none).

    Done after the pass, in the compiled graph: tiny copies there instead of eager operations per loss call.
    """

    def stacked(sums: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(sums, 1) if sums else x.new_zeros(x.shape[0], x.shape[1])

    return stacked(pred_sums), stacked(tps), stacked(ref_sums)


def sums_valid(
    spec: KernelSpec, pred_sums: list[torch.Tensor], ref_sums: list[torch.Tensor], pixel: torch.Tensor, num_voxels: int
) -> torch.Tensor:
    """Whether the input was valid, from the sums of :func:`forward_sums` (a 0-d bool tensor, not read on the host).

    The sums that carry the guard are finite (no NaN / inf in the input; rarely false on an overflow) and, for class
    indices, every voxel matched exactly one class (a NaN, fractional or out-of-range label matches none). Computed in
    the compiled kernels' graph, it costs no extra operation per loss call.
    """
    valid = torch.isfinite(pixel).all()
    if pred_sums:
        valid = valid & torch.isfinite(pred_sums[0]).all()
    if spec.index_target:
        valid = valid & (_total(ref_sums) == num_voxels).all()
    return valid


def forward_sums(
    spec: KernelSpec, x: torch.Tensor, target: torch.Tensor, wpos: torch.Tensor, wneg: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The statistics of every image and channel, in one pass over the input.

    The per-channel sums are returned as lists of ``[B]`` tensors, one reduction each (:func:`stacked_sums` stacks
    them after the pass). The input is validated in the same pass: a guard
    ``sum_c 0 * z_c`` (``z`` the logits less their maximum, or the input itself) is added to the first prediction
    sum, or without region terms to the pixel-wise sum (added to the pixel-wise term next to region sums, it makes
    Inductor buffer the exponentials); it is exactly 0 for finite inputs and NaN for any NaN or infinity. Each term is
    multiplied by 0 before the sum, which a sum of finite values could overflow: logits masked with
    ``torch.finfo(dtype).min`` in two classes are finite and valid, but their sum is ``-inf``.

    Args:
        spec: what to compute.
        x: the activation's input ``[B, C, N]`` (logits, or probabilities for ``"identity"``).
        target: class indices ``[B, N]`` or a dense target ``[B, C, N]``.
        wpos: per-channel weights ``[C]`` of the positive (``y``) part of the pixel-wise term (0 on dropped channels).
        wneg: per-channel weights ``[C]`` of the negative (``1 - y``) part (binary form only).

    Returns:
        ``(pred_sums, tps, ref_sums, pixel, lse)``: per channel, the sums over the voxels of the (clipped with
        ``region_clip``) probabilities, of ``y * p`` and of ``y`` (``[B]`` each; empty lists without ``region``, except
        ``ref_sums`` of class indices, which validate them: int32 counts below ``2**31`` voxels); the per-image sum of
        the pixel-wise term ``[B]`` (zeros without one); and the log-sum-exp ``[B, N]`` of a softmax with a focal term
        for the backward pass (an empty tensor otherwise, see :attr:`KernelSpec.saves_lse`), which recomputes the
        probabilities from it: on CPU the exponentials cost less than writing them to memory.
    """
    xs = x.unbind(1)
    num_channels = len(xs)
    target = _as_compared(spec, target, x.dtype)
    lse = x.new_empty(0)
    if spec.activation == "softmax":
        ps, m, se, shifted = _softmax(xs)
        if spec.gamma is not None:  # log p = x - lse for the pixel-wise term
            lse = m + torch.log(se)
    else:
        ps = [torch.sigmoid(v) for v in xs] if spec.activation == "sigmoid" else list(xs)
        shifted = list(xs)
    guard = _total([0.0 * z for z in shifted])
    pred_sums: list[torch.Tensor] = []
    tps: list[torch.Tensor] = []
    ref_sums: list[torch.Tensor] = []
    if spec.index_target:
        count_dtype = torch.int32 if target.shape[-1] < 2**31 else torch.int64  # int32 sums vectorize better
        ref_sums = [(target == c).sum(-1, dtype=count_dtype) for c in range(num_channels)]
    elif spec.region:
        ref_sums = [t.sum(-1) for t in target.unbind(1)]
    if spec.region:
        pr = [_clip(p) for p in ps] if spec.region_clip else ps
        pred_sums = [(p + guard if c == 0 else p).sum(-1) for c, p in enumerate(pr)]
        if spec.index_target:
            tps = [torch.where(target == c, p, 0.0).sum(-1) for c, p in enumerate(pr)]
        else:
            tps = [(y * p).sum(-1) for y, p in zip(target.unbind(1), pr)]
    if spec.gamma is None:
        return pred_sums, tps, ref_sums, x.new_zeros(x.shape[0]), lse
    saved = lse if spec.saves_lse else x.new_empty(0)
    if spec.index_categorical:
        if spec.activation == "softmax":
            log_t, u_t = _select(target, xs) - lse, _others(target, ps)
        else:  # clipped probabilities
            p_t = _clip(_select(target, ps))
            log_t, u_t = torch.log(p_t), 1.0 - p_t
        w_t = _select(target, [wpos[c] for c in range(num_channels)])
        term = _times(_focal_factor(u_t, spec.gamma), -log_t) * w_t
    else:
        term = _pixel_terms(spec, xs, ps, lse, _targets(spec, target, num_channels, x.dtype), wpos, wneg)
    return pred_sums, tps, ref_sums, (term if spec.region else term + guard).sum(-1), saved


def _logs(
    spec: KernelSpec, xs: Sequence[torch.Tensor], ps: Sequence[torch.Tensor], lse: torch.Tensor | None
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, list[torch.Tensor] | None]:
    """``(p, log p, log(1 - p))`` of every channel in the form the pixel-wise term uses (clipped for "identity"); for a
    softmax ``log p = x - lse`` (``None`` without ``lse``)."""
    if spec.activation == "softmax":
        return list(ps), None if lse is None else [v - lse for v in xs], None
    if spec.activation == "sigmoid":
        logsigmoid = torch.nn.functional.logsigmoid
        return list(ps), [logsigmoid(v) for v in xs], [logsigmoid(-v) for v in xs]
    clipped = [_clip(p) for p in ps]
    return clipped, [torch.log(p) for p in clipped], [torch.log1p(-p) for p in clipped] if spec.binary else None


def _pixel_terms(
    spec: KernelSpec,
    xs: Sequence[torch.Tensor],
    ps: Sequence[torch.Tensor],
    lse: torch.Tensor,
    ys: Sequence[torch.Tensor],
    wpos: torch.Tensor,
    wneg: torch.Tensor,
) -> torch.Tensor:
    """The pixel-wise term of every voxel summed over channels (dense targets, or the binary form)."""
    gamma = float(spec.gamma)  # type: ignore[arg-type]
    pcs, logs, log_negs = _logs(spec, xs, ps, lse)
    terms = []
    for c, (p, y, lg) in enumerate(zip(pcs, ys, logs)):
        term = _times(_focal_factor(1.0 - p, gamma), -(y * lg)) * wpos[c]
        if spec.binary:
            term = term + _times(_focal_factor(p, gamma), -((1.0 - y) * log_negs[c])) * wneg[c]  # type: ignore[index]
        terms.append(term)
    return _total(terms)


def fused_backward(
    spec: KernelSpec,
    x: torch.Tensor,
    target: torch.Tensor,
    wpos: torch.Tensor,
    wneg: torch.Tensor,
    lse: torch.Tensor,
    grad_pred_sum: torch.Tensor,
    grad_tp: torch.Tensor,
    grad_pixel: torch.Tensor,
) -> torch.Tensor:
    """The gradient of the loss with respect to ``x`` from the gradients of the statistics, in one pass.

    With ``G_c = dL/dsum_p_c + y_c dL/dTP_c`` (the gradient with respect to the probability of the region terms), and
    ``gp``, ``gl``, ``gln`` the gradients of the pixel-wise term with respect to ``p``, ``log p`` and ``log(1 - p)``:
    softmax ``dx_c = p_c (gp_c - sum_k gp_k p_k - sum_k gl_k) + gl_c``; sigmoid
    ``dx = gp p (1 - p) + gl (1 - p) - gln p``; probabilities: the clip's mask times ``gp + gl / p - gln / (1 - p)``.

    Args:
        spec, x, target, wpos, wneg: as for :func:`fused_forward`.
        lse: the log-sum-exp saved by :func:`fused_forward` (an empty tensor without :attr:`KernelSpec.saves_lse`).
        grad_pred_sum: ``dL/d pred_sum`` ``[B, C]``.
        grad_tp: ``dL/d tp`` ``[B, C]``.
        grad_pixel: ``dL/d pixel`` ``[B]``.

    Returns:
        ``dL/dx`` ``[B, C, N]``.
    """
    xs = x.unbind(1)
    num_channels = len(xs)
    target = _as_compared(spec, target, x.dtype)
    if spec.saves_lse:
        ps = [torch.exp(v - lse) for v in xs]
    elif spec.activation == "softmax":
        ps = _softmax(xs)[0]
    else:
        ps = [torch.sigmoid(v) for v in xs] if spec.activation == "sigmoid" else list(xs)
    g_sum = [grad_pred_sum[:, c : c + 1] for c in range(num_channels)]
    g_tp = [grad_tp[:, c : c + 1] for c in range(num_channels)]
    scale = grad_pixel[:, None]
    if spec.activation == "softmax" and spec.index_categorical:
        log_t = _select(target, xs) - lse if spec.saves_lse else None
        return _softmax_index_backward(spec, target, ps, log_t, wpos, g_sum, g_tp, scale)
    ys = _targets(spec, target, num_channels, x.dtype)
    # gradients with respect to p (region and pixel), log p and log(1 - p) (pixel), per channel
    gps: list[torch.Tensor] = []
    gls: list[torch.Tensor | None] = []
    glns: list[torch.Tensor | None] = []
    if spec.gamma is not None:
        gamma = float(spec.gamma)
        pcs, logs, log_negs = _logs(spec, xs, ps, lse if spec.saves_lse else None)
    for c in range(num_channels):
        y = ys[c]
        gp = g_sum[c] + y * g_tp[c] if spec.region else torch.zeros_like(ps[c])
        if spec.region and spec.region_clip:
            gp = gp * _clip_mask(ps[c])
        gpc, gl, gln = None, None, None
        if spec.gamma is not None:
            p, w = pcs[c], wpos[c] * scale
            dfac = _focal_factor_grad(1.0 - p, gamma)
            gl = -_times(_focal_factor(1.0 - p, gamma), y * w)
            if dfac is not None:
                gpc = dfac * (y * w) * logs[c]  # type: ignore[index]  # d/dp of (1 - p)^g (-y log p)
            if spec.binary:
                wn = (1.0 - y) * (wneg[c] * scale)
                dneg = _focal_factor_grad(p, gamma)
                gln = -_times(_focal_factor(p, gamma), wn)
                if dneg is not None:
                    gpc = _sum_optional(gpc, -(dneg * wn * log_negs[c]))  # type: ignore[index]
        if spec.activation == "identity":
            local = gpc
            if gl is not None:
                local = _sum_optional(local, gl / pcs[c])
            if gln is not None:
                local = _sum_optional(local, -gln / (1.0 - pcs[c]))
            if local is not None:
                gp = gp + local * _clip_mask(ps[c])
        elif gpc is not None:
            gp = gp + gpc
        gps.append(gp)
        gls.append(gl)
        glns.append(gln)
    if spec.activation == "identity":
        return torch.stack(gps, 1)
    if spec.activation == "sigmoid":
        out = []
        for p, gp, gl, gln in zip(ps, gps, gls, glns):
            d = gp * (p * (1.0 - p))
            if gl is not None:
                d = d + gl * (1.0 - p) - gln * p  # type: ignore[operator]
            out.append(d)
        return torch.stack(out, 1)
    # softmax with a dense target: dx_c = p_c (gp_c - sum_k gp_k p_k - sum_k gl_k) + gl_c
    total = _total([gp * p for gp, p in zip(gps, ps)])
    for gl in gls:
        if gl is not None:
            total = total + gl
    return torch.stack([_sum_optional(p * (gp - total), gl) for p, gp, gl in zip(ps, gps, gls)], 1)  # type: ignore


def _softmax_index_backward(
    spec: KernelSpec,
    labels: torch.Tensor,
    ps: Sequence[torch.Tensor],
    log_t: torch.Tensor | None,
    wpos: torch.Tensor,
    g_sum: Sequence[torch.Tensor],
    g_tp: Sequence[torch.Tensor],
    scale: torch.Tensor,
) -> torch.Tensor:
    """The gradient for a softmax and class indices (the common case): only the labelled class has a pixel term.

    With ``a_c = dL/dsum_p_c``, ``t_c = dL/dTP_c``, ``gp``/``gl`` the pixel gradients at the labelled class ``t``:
    ``dx_c = p_c (a_c - k) + [c = t] v`` with ``v = p_t (t_t + gp) + gl`` and ``k = sum_c a_c p_c + v``
    (``log_t = log p_t`` is needed for ``gp`` where ``gamma != 0`` only).
    """
    num_channels = len(ps)
    p_t = _select(labels, ps)
    v = p_t * _select(labels, g_tp) if spec.region else None
    if spec.gamma is not None:
        u_t = _others(labels, ps)
        w_t = _select(labels, [wpos[c] for c in range(num_channels)]) * scale
        gl = -_times(_focal_factor(u_t, spec.gamma), w_t)  # type: ignore[arg-type]
        dfac = _focal_factor_grad(u_t, spec.gamma)  # type: ignore[arg-type]
        v = _sum_optional(v, gl if dfac is None else gl + p_t * (dfac * w_t * log_t))  # type: ignore[operator]
    assert v is not None
    if spec.region:
        k = _total([p * a for p, a in zip(ps, g_sum)]) + v
        return torch.stack(
            [p * (a - k) + torch.where(labels == c, v, 0.0) for c, (p, a) in enumerate(zip(ps, g_sum))], 1
        )
    return torch.stack([torch.where(labels == c, v, 0.0) - p * v for c, p in enumerate(ps)], 1)
