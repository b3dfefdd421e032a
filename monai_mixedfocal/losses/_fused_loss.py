# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The whole loss in two compiled calls: the fused kernels and the loss's arithmetic on their sums in one graph.

The fused kernels (:mod:`~monai_mixedfocal.losses._kernels`) leave each loss a few dozen small operations on the
``[B, C]`` sums: the per-class formula, the reduction, the check, and as many again in the backward pass. On a GPU
each is a kernel launch, and a loss step whose kernels take a fraction of a millisecond is bound by the host
(``docs/performance.md``, "CUDA"). Here both passes are one compiled call each:

- forward: the statistics (:func:`~._kernels.fused_forward`), then the loss's value from them (the "tail", the loss's
  own ``_value`` method, traced by ``torch.compile``) and the check of the input and of the value;
- backward: the gradient of the input (:func:`~._kernels.fused_backward`), from the derivatives of the tail with
  respect to the sums, which the forward graph computes (``torch.func.grad_and_value``) and saves (``[B, C]`` each).

The compiled functions belong to one loss instance (its configuration is part of the traced graph), so that
:data:`MAX_COMPILED_LOSSES` instances per process get them; others, losses with ``reduction="none"``, the "eager"
mode and a failed compilation use the statistics of :func:`~._fused.fused_statistics` and the tail in eager mode: the
same values up to float rounding.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from monai_mixedfocal.losses._fused import FusedInputs, FusedStatistics, checked_loss, fused_inputs
from monai_mixedfocal.losses._fused_runner import (
    CompiledKernels,
    Runner,
    compile_unavailable_reason,
    eager_backward,
    eager_forward,
    first_order_only,
)
from monai_mixedfocal.losses._kernels import KernelSpec, fused_backward, fused_forward

__all__ = ["MAX_COMPILED_LOSSES", "fused_loss", "release_compiled_losses"]

_LOGGER = logging.getLogger(__name__)

#: most loss instances (times their input layouts: kernel spec and number of spatial dimensions) compiled whole in one
#: process; the others run the compiled statistics and their arithmetic on the sums in eager mode
MAX_COMPILED_LOSSES = 8

#: a loss's value from its statistics and the number of spatial dimensions (``SegmentationLoss._value``)
LossValue = Callable[[FusedStatistics, int], torch.Tensor]


@dataclass(frozen=True)
class _Tail:
    """A loss's arithmetic on the sums of the kernels, as a function of tensors (traced into the compiled graph)."""

    value: LossValue
    kept: slice
    spatial_dims: int

    def __call__(
        self, pred_sum: torch.Tensor, tp: torch.Tensor, ref_sum: torch.Tensor, pixel: torch.Tensor, num_voxels: int
    ) -> torch.Tensor:
        """The loss from the sums (``num_voxels`` voxels per image)."""
        return self.value(FusedStatistics(pred_sum, tp, ref_sum, pixel, self.kept, num_voxels), self.spatial_dims)

    def value_and_gradients(self, x: torch.Tensor, statistics: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """``(loss, ok, valid, finite, dL/dpred_sum, dL/dtp, dL/dpixel, lse)`` from the outputs of the kernels' forward
        pass on ``x [B, C, N]`` (the derivatives are zeros where the loss does not depend on a sum)."""
        pred_sum, tp, ref_sum, pixel, valid, lse = statistics

        def of_sums(p: torch.Tensor, t: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
            return self(p, t, ref_sum, q, x.shape[2])

        grads, loss = torch.func.grad_and_value(of_sums, argnums=(0, 1, 2))(pred_sum, tp, pixel)
        finite = torch.isfinite(loss).all()
        return loss, finite & valid, valid, finite, *grads, lse


def loss_forward(
    spec: KernelSpec, tail: _Tail, x: torch.Tensor, target: torch.Tensor, wpos: torch.Tensor, wneg: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The scalar loss from the flattened input ``[B, C, N]`` and target, its derivatives with respect to the sums,
    and its check.

    The derivatives are computed here, after the pass, and saved: computed in the backward graph, ``torch.compile``
    would fuse them into the loop over the voxels and recompute them for every voxel.

    Returns:
        ``(loss, ok, valid, finite, dL/dpred_sum, dL/dtp, dL/dpixel, lse)``: ``valid`` as
        :func:`~._kernels.sums_valid`, ``finite`` whether the loss is finite, ``ok`` both (0-d bool tensors), ``lse`` as
        :func:`~._kernels.fused_forward`.
    """
    return tail.value_and_gradients(x, fused_forward(spec, x, target, wpos, wneg))


def _scaled(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(wpos, wneg, lse, dL/dpred_sum, dL/dtp, dL/dpixel)`` as saved by :func:`loss_forward`, followed by the gradient
    of the loss, to the arguments of the kernels' backward pass: the derivatives times that gradient."""
    wpos, wneg, lse, *derivatives, grad = args
    return wpos, wneg, lse, *(derivative * grad for derivative in derivatives)


def loss_backward(spec: KernelSpec, x: torch.Tensor, target: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
    """``dL/dx`` ``[B, C, N]`` from ``(wpos, wneg, lse, dL/dpred_sum, dL/dtp, dL/dpixel)`` of :func:`loss_forward`
    and the gradient of the loss."""
    return fused_backward(spec, x, target, *_scaled(*args))


def _eager_loss_forward(spec: KernelSpec, tail: _Tail, x: torch.Tensor, target: torch.Tensor, *weights: Any) -> tuple:
    """:func:`loss_forward` with the eager (chunked) kernels."""
    return tail.value_and_gradients(x, eager_forward(spec, x, target, *weights))


def _eager_loss_backward(spec: KernelSpec, x: torch.Tensor, target: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
    """:func:`loss_backward` with the eager (chunked) kernels."""
    return eager_backward(spec, x, target, *_scaled(*args))


class _LossRunner(Runner):
    """Runs :func:`loss_forward` and :func:`loss_backward` of one loss instance, compiled (the eager kernels once
    compilation has failed)."""

    def __init__(self, spec: KernelSpec, tail: _Tail, kernels: CompiledKernels, explicit: bool) -> None:
        super().__init__(spec, compiled=False, explicit=explicit)
        self.kernels = kernels
        self.tail = tail

    def forward(self, *args: torch.Tensor) -> tuple:
        """:func:`loss_forward` of ``(x, target, wpos, wneg)``."""
        return self._call(0, _eager_loss_forward, (self.spec, self.tail), *args)

    def backward(self, x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        """:func:`loss_backward` of ``(x, target, wpos, wneg, lse, dL/dpred_sum, dL/dtp, dL/dpixel, grad)``."""
        return self._call(1, _eager_loss_backward, (self.spec,), x, *args).view(x.shape)


class _FusedLossFunction(torch.autograd.Function):
    """Autograd of a scalar loss: saves the input, the target, the log-sum-exp where the kernels keep it, and the
    derivatives of the loss with respect to the ``[B, C]`` sums; returns ``(loss, ok, valid, finite)`` (the checks
    of :func:`loss_forward`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, target: torch.Tensor, wpos: torch.Tensor, wneg: torch.Tensor, runner: _LossRunner
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss, ok, valid, finite, *grads, lse = runner.forward(x, target, wpos, wneg)
        ctx.save_for_backward(x, target, wpos, wneg, lse, *grads)
        ctx.runner = runner
        ctx.mark_non_differentiable(ok, valid, finite)
        ctx.set_materialize_grads(False)  # no zero tensors (kernel launches on a GPU) for the checks' gradients
        return loss, ok, valid, finite

    @staticmethod
    @first_order_only
    def backward(ctx: Any, grad: torch.Tensor | None, *_grad_checks: Any):  # type: ignore[override]
        if grad is None or not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        x, *args = ctx.saved_tensors
        return ctx.runner.backward(x, *args, grad), None, None, None, None


_compiled_losses: dict[tuple, tuple[_Tail, CompiledKernels]] = {}
_lock = threading.Lock()


def release_compiled_losses() -> int:
    """Forget every loss instance compiled whole (they may then be garbage-collected), so that the next
    :data:`MAX_COMPILED_LOSSES` instances get the whole-loss path again. For benchmarks and long-lived processes that
    go through many losses (e.g. every loss on one patch size, then every loss on another); returns how many were held.
    """
    with _lock:
        count = len(_compiled_losses)
        _compiled_losses.clear()
    return count


def _compiled_loss(value: LossValue, spec: KernelSpec, kept: slice, spatial_dims: int) -> tuple | None:
    """The tail and compiled kernels of this loss instance (``value`` is its bound method) and input layout, made at
    the first call; ``None`` past :data:`MAX_COMPILED_LOSSES`.

    The registry keeps the instance alive (its tail is part of the compiled code), at most
    :data:`MAX_COMPILED_LOSSES` of them.
    """
    key = (value, spec, kept.start, spatial_dims)  # a bound method compares and hashes by its instance and function
    with _lock:
        if key not in _compiled_losses:
            if len(_compiled_losses) >= MAX_COMPILED_LOSSES:
                return None
            _LOGGER.info(
                "compiling the fused loss kernels of %s with its arithmetic on the sums, for %s (once per loss "
                "instance: seconds to a minute)",
                type(getattr(value, "__self__", value)).__name__,
                spec,
            )
            kernels = CompiledKernels(len(_compiled_losses), loss_forward, loss_backward)
            _compiled_losses[key] = (_Tail(value, kept, spatial_dims), kernels)
        return _compiled_losses[key]


def _loss_of(inputs: FusedInputs, value: LossValue, spatial_dims: int, scalar: bool) -> torch.Tensor:
    """The checked loss from the fused inputs: compiled whole where it may be, else the statistics and ``value``."""
    whole = inputs.compiled and scalar
    compiled = _compiled_loss(value, inputs.spec, inputs.kept, spatial_dims) if whole else None
    if compiled is None or compile_unavailable_reason() is not None:
        stats = inputs.statistics()
        loss = value(stats, spatial_dims)
        return checked_loss(loss, torch.isfinite(loss).all(), stats.valid, stats.explain)
    tail, kernels = compiled
    runner = _LossRunner(inputs.spec, tail, kernels, inputs.explicit)
    with inputs.autocast_off():
        loss, ok, valid, finite = _FusedLossFunction.apply(inputs.x, inputs.target, inputs.wpos, inputs.wneg, runner)
    return checked_loss(loss, finite, valid, inputs.explain, ok)


def fused_loss(
    input: torch.Tensor, target: torch.Tensor, value: LossValue, spatial_dims: int, scalar: bool, **options: Any
) -> torch.Tensor | None:
    """The loss ``value(statistics, spatial_dims)`` on the fused path, checked, or ``None`` for the plain path.

    Args:
        input: ``[B, C, *spatial]`` network output.
        target: ``[B, 1, *spatial]`` class indices (``to_onehot_y``) or ``[B, C, *spatial]``.
        value: the loss's arithmetic on the statistics (a bound method of the loss: it keys the compiled functions).
        spatial_dims: the input's spatial dimensions (the shape of a loss with ``reduction="none"``).
        scalar: ``value`` is a scalar (``reduction`` ``"mean"`` or ``"sum"``): only then is the loss compiled whole.
        options: the keyword arguments of :func:`~._fused.fused_inputs`.

    Raises:
        ValueError: for NaN / inf inputs, class indices out of range, and whatever :func:`~._terms.prepare` raises.
        FloatingPointError: for a non-finite loss from valid inputs.
    """
    inputs = fused_inputs(input, target, **options)
    return None if inputs is None else _loss_of(inputs, value, spatial_dims, scalar)
