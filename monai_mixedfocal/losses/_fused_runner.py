# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Running the fused kernels of :mod:`~monai_mixedfocal.losses._kernels`: compiled (one loop over the volume) or
eager (on chunks of voxels), as an autograd function with a first-order backward pass.

Compiled, each spec's kernels are compiled at most twice (static shapes for the first input, dynamic for the others)
and at most :data:`MAX_COMPILED_SPECS` specs per process. A compiled kernel that fails where the eager one runs is a
compiler problem (no C++ compiler, no Triton): the process switches to the eager kernels with one ``RuntimeWarning``
(:func:`compile_unavailable_reason`).
"""

from __future__ import annotations

import functools
import logging
import threading
import types
from collections.abc import Callable
from typing import Any

import torch

from monai_mixedfocal.losses._fused_mode import ENV_VAR
from monai_mixedfocal.losses._kernels import KernelSpec, forward_outputs, forward_sums, fused_backward, fused_forward

__all__ = [
    "CHUNK_VOXELS",
    "MAX_COMPILED_SPECS",
    "SECOND_ORDER_MESSAGE",
    "CompiledKernels",
    "FusedFunction",
    "Runner",
    "compile_unavailable_reason",
    "eager_backward",
    "eager_forward",
    "first_order_only",
]

_LOGGER = logging.getLogger(__name__)

#: voxels per chunk in "eager" mode (bounds the intermediates to a few times ``B * CHUNK_VOXELS`` elements)
CHUNK_VOXELS = 1 << 16

#: most distinct specs compiled in one process (others run the eager kernels)
MAX_COMPILED_SPECS = 16

_compile_lock = threading.Lock()


class CompiledKernels:
    """The compiled kernels of one spec (``forward`` and ``backward``, :func:`~._kernels.fused_forward` and
    :func:`~._kernels.fused_backward` by default): with static shapes for the first input's shapes and dtypes, with
    dynamic shapes for all others (two compilations at most, each at its first call).

    A fixed patch size (training) thus gets static kernels: Inductor's CPU code splits a reduction over all threads
    only when its sizes are known (with symbolic sizes it runs one image per thread, 2 threads for a batch of 2 on a
    machine with 16 cores). Any other size (the last, smaller batch, a validation volume) runs the dynamic kernels.
    """

    def __init__(
        self, tag: int, forward: Callable[..., Any] | None = None, backward: Callable[..., Any] | None = None
    ) -> None:
        forward, backward = forward or fused_forward, backward or fused_backward
        self.static = (
            torch.compile(_own_code(forward, 2 * tag), dynamic=False),
            torch.compile(_own_code(backward, 2 * tag), dynamic=False),
        )
        self.dynamic = (
            torch.compile(_own_code(forward, 2 * tag + 1), dynamic=True),
            torch.compile(_own_code(backward, 2 * tag + 1), dynamic=True),
        )
        self.static_key: tuple | None = None

    def pick(self, x: torch.Tensor, target: torch.Tensor) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """The kernels for these flattened tensors (the first call's layouts and dtypes select the static ones)."""
        key = (x.shape, x.stride(), x.dtype, x.device, target.shape, target.stride(), target.dtype)
        with _compile_lock:
            if self.static_key is None:
                self.static_key = key
        return self.static if key == self.static_key else self.dynamic


_compiled: dict[KernelSpec, CompiledKernels] = {}
_compile_state: dict[str, Any] = {"failed": None}


def compile_unavailable_reason() -> str | None:
    """Why ``torch.compile`` failed in this process (``None`` while it has not)."""
    return _compile_state["failed"]


def _flatten(spec: KernelSpec, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [B, C, *S] -> [B, C, N]``; the target to ``[B, N]`` (class indices) or ``[B, C, N]``.

    Detached, the flattened tensors are not views for ``torch.compile``: it sees one voxel count ``N`` shared by the
    input, the target and the log-sum-exp (else it would know neither the spatial sizes of the input from the target's
    nor their products from each other, and would split the pass in two loops with buffers between them).
    """
    flat_target = target.flatten(1) if spec.index_target else target.flatten(2)
    return x.flatten(2).detach(), flat_target.detach()


def _own_code(function: Callable[..., Any], tag: int) -> Callable[..., Any]:
    """A copy of ``function`` with its own code object: ``torch.compile`` caches (and caps) compilations per code
    object, so that every spec gets its own cache instead of sharing one. The copy keeps the function's defaults,
    keyword-only defaults and closure."""
    code = function.__code__.replace(co_name=f"{function.__name__}_{tag}")  # type: ignore[attr-defined]
    copy = types.FunctionType(
        code,
        function.__globals__,  # type: ignore[attr-defined]
        code.co_name,
        function.__defaults__,  # type: ignore[attr-defined]
        function.__closure__,  # type: ignore[attr-defined]
    )
    copy.__kwdefaults__ = function.__kwdefaults__  # type: ignore[attr-defined]
    return copy


def _compiled_kernels(spec: KernelSpec) -> CompiledKernels | None:
    """The compiled kernels of ``spec`` (compiled lazily, at their first call), or ``None`` past the cap."""
    with _compile_lock:
        if spec not in _compiled:
            if len(_compiled) >= MAX_COMPILED_SPECS:
                return None
            _LOGGER.info("compiling the fused loss kernels of %s (once per configuration: seconds to a minute)", spec)
            _compiled[spec] = CompiledKernels(len(_compiled))
        return _compiled[spec]


def _chunks(num_voxels: int) -> list[slice]:
    return [slice(start, min(start + CHUNK_VOXELS, num_voxels)) for start in range(0, num_voxels, CHUNK_VOXELS)]


def _target_chunk(spec: KernelSpec, target: torch.Tensor, part: slice) -> torch.Tensor:
    return target[:, part] if spec.index_target else target[:, :, part]


def eager_forward(spec: KernelSpec, x: torch.Tensor, target: torch.Tensor, *weights: torch.Tensor) -> tuple:
    """:func:`~._kernels.fused_forward` on chunks of voxels (bounded intermediates): partial sums added up, the
    log-sum-exp gathered, the input's validity found from the totals."""
    parts = _chunks(x.shape[2])
    if len(parts) == 1:
        return fused_forward(spec, x, target, *weights)
    lse = x.new_empty(x.shape[0], x.shape[2]) if spec.saves_lse else x.new_empty(0)
    totals: list | None = None
    for part in parts:
        *sums, lse_part = forward_sums(spec, x[:, :, part], _target_chunk(spec, target, part), *weights)
        totals = sums if totals is None else [_add_sums(t, s) for t, s in zip(totals, sums)]
        if lse.numel():
            lse[:, part] = lse_part
    return forward_outputs(spec, x, *totals, lse)  # type: ignore[misc]


def _add_sums(a: torch.Tensor | list[torch.Tensor], b: torch.Tensor | list[torch.Tensor]) -> Any:
    """``a + b`` of a partial sum, or of a list of per-channel partial sums."""
    if isinstance(a, list):
        return [u + v for u, v in zip(a, b)]
    return a + b


def eager_backward(spec: KernelSpec, x: torch.Tensor, target: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
    """:func:`~._kernels.fused_backward` on chunks of voxels, written into one gradient tensor."""
    wpos, wneg, lse, *grads = args
    parts = _chunks(x.shape[2])
    if len(parts) == 1:
        return fused_backward(spec, x, target, wpos, wneg, lse, *grads)
    out = torch.empty_like(x)
    for part in parts:
        lse_part = lse[:, part] if lse.numel() else lse
        chunk_target = _target_chunk(spec, target, part)
        out[:, :, part] = fused_backward(spec, x[:, :, part], chunk_target, wpos, wneg, lse_part, *grads)
    return out


def _failure_reason(error: BaseException) -> str:
    """``"Type: first line of the message"`` (at most 300 characters of it) of an exception."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__


def _mark_compile_failed(error: Exception, explicit: bool) -> None:
    """Record that ``torch.compile`` failed in this process (the compiled path is not tried again) and report it once,
    with a ``RuntimeWarning`` naming the error (the compiled kernels failed where the eager kernels ran: a missing
    C++ compiler or Triton, an unsupported platform, ...)."""
    reason = _failure_reason(error)
    with _compile_lock:
        if _compile_state["failed"] is not None:  # another thread reported it first
            return
        _compile_state["failed"] = reason
    _LOGGER.debug("torch.compile of the fused loss kernels failed; using the eager kernels.", exc_info=error)
    from monai_mixedfocal.losses._base import warn_caller  # imports this module: loaded by the time a loss runs

    later = "the eager kernels" if explicit else "the plain autograd path (the eager kernels for this call)"
    warn_caller(  # at the user's ``loss(x, y)`` (a fixed stacklevel would point into this package or torch)
        f"{ENV_VAR}={'compile' if explicit else 'auto'}: torch.compile failed for the fused loss kernels ({reason}); "
        f"the losses use {later} for the rest of the process.",
        RuntimeWarning,
    )


class Runner:
    """Runs the kernels of one spec on ``[B, C, *spatial]`` tensors, compiled or eager; falls back to eager (for good)
    when compilation fails and the eager kernels succeed."""

    def __init__(self, spec: KernelSpec, compiled: bool, explicit: bool) -> None:
        self.spec = spec
        self.kernels = _compiled_kernels(spec) if compiled else None
        self.explicit = explicit  # the user asked for "compile" (worded in the warning of a failed compilation)

    def _call(
        self, which: int, eager: Callable[..., Any], head: tuple, x: torch.Tensor, target: torch.Tensor, *args: Any
    ) -> Any:
        """Kernel ``which`` (0 forward, 1 backward) of ``(*head, x, target, *args)`` on the flattened tensors.

        Where the compiled kernel raises (other than out of memory), the same call runs the eager kernel: if that
        succeeds, the failure was the compiler's, and compilation is switched off for the process
        (:func:`compile_unavailable_reason`) with one ``RuntimeWarning``; if the eager kernel raises too, its error
        propagates (a bug in the kernels or their arguments, not a compiler problem) and nothing is switched off.
        """
        flat_x, flat_target = _flatten(self.spec, x, target)
        if self.kernels is None or _compile_state["failed"] is not None:
            return eager(*head, flat_x, flat_target, *args)
        try:
            return self.kernels.pick(flat_x, flat_target)[which](*head, flat_x, flat_target, *args)
        except torch.cuda.OutOfMemoryError:  # = torch.OutOfMemoryError (torch >= 2.5 only)
            raise
        except Exception as error:  # no C++ compiler / Triton, unsupported platform, ... or a bug: the eager call tells
            compile_error = error
        try:
            result = eager(*head, flat_x, flat_target, *args)
        except Exception:
            _LOGGER.debug("the compiled and the eager fused loss kernels both failed", exc_info=compile_error)
            raise
        _mark_compile_failed(compile_error, self.explicit)
        return result

    def forward(self, *args: torch.Tensor) -> tuple:
        """:func:`~._kernels.fused_forward` of ``(x, target, wpos, wneg)``."""
        return self._call(0, eager_forward, (self.spec,), *args)

    def backward(self, x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        """:func:`~._kernels.fused_backward` of ``(x, target, wpos, wneg, lse, *grads)``, shaped like ``x``."""
        return self._call(1, eager_backward, (self.spec,), x, *args).view(x.shape)


SECOND_ORDER_MESSAGE = (
    "the fused fast path of monai_mixedfocal's losses has no second derivative (a backward pass with "
    "create_graph=True, e.g. a gradient penalty, torch.autograd.functional.hessian or a second-order meta-gradient); "
    "take the plain autograd path for this: MONAI_MIXEDFOCAL_FUSED=off, or "
    'monai_mixedfocal.losses._fused.use_fused_mode("off") around the loss.'
)


def first_order_only(backward: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate the ``backward`` of a ``torch.autograd.Function`` whose gradient is not differentiable again.

    A backward pass that must build a graph of the gradient (``create_graph=True``, which runs the backward functions
    with gradient mode on) raises a ``RuntimeError`` naming the way out. PyTorch's ``once_differentiable`` does not do
    this: it marks the gradient as not differentiable only where an incoming gradient requires grad, so that a loss
    whose derivative with respect to the kernels' sums is constant (cross entropy; any loss called with the constant
    gradient of ``loss.backward(create_graph=True)``) silently returned a gradient without history, and a gradient
    penalty or a Hessian of it silently lost its second-order terms.
    """

    @functools.wraps(backward)
    def wrapper(ctx: Any, *grads: Any) -> Any:
        if torch.is_grad_enabled():
            raise RuntimeError(SECOND_ORDER_MESSAGE)
        return backward(ctx, *grads)

    return wrapper


class FusedFunction(torch.autograd.Function):
    """Autograd of the statistics: saves the input, the target and, where :attr:`~._kernels.KernelSpec.saves_lse`, the
    log-sum-exp; backward in one pass.

    Returns ``(pred_sum [B, C], tp [B, C], ref_sum [B, C], pixel [B], valid [])`` (zeros for what the spec does not
    compute; ``valid`` as :func:`~._kernels.sums_valid`).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, target: torch.Tensor, wpos: torch.Tensor, wneg: torch.Tensor, runner: Runner
    ) -> tuple[torch.Tensor, ...]:
        pred_sum, tp, ref_sum, pixel, valid, lse = runner.forward(x, target, wpos, wneg)
        ctx.save_for_backward(x, target, wpos, wneg, lse)
        ctx.runner = runner
        ctx.mark_non_differentiable(ref_sum, valid)
        return pred_sum, tp, ref_sum, pixel, valid

    @staticmethod
    @first_order_only
    def backward(ctx: Any, grad_pred_sum, grad_tp, _grad_ref, grad_pixel, _grad_valid):  # type: ignore[override]
        x, target, wpos, wneg, lse = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        num_images, num_channels = x.shape[:2]
        grad_pred_sum = x.new_zeros(num_images, num_channels) if grad_pred_sum is None else grad_pred_sum
        grad_tp = x.new_zeros(num_images, num_channels) if grad_tp is None else grad_tp
        grad_pixel = x.new_zeros(num_images) if grad_pixel is None else grad_pixel
        grad = ctx.runner.backward(x, target, wpos, wneg, lse, grad_pred_sum, grad_tp, grad_pixel)
        return grad, None, None, None, None
