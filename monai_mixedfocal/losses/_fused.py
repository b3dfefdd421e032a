# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The fused fast path of the loss family: runs the fused kernels of :mod:`~monai_mixedfocal.losses._kernels`.

The kernels compute every statistic a loss needs (the region sums and the pixel-wise sum) in one pass over the network
output, and its gradient in one more. This module prepares and validates their inputs (:func:`fused_inputs`), runs
them, compiled or eager, as an autograd function (:func:`fused_statistics`), and checks the loss
(:func:`checked_loss`). Compiled (the "compile" mode), ``torch.compile`` turns each kernel into a single loop over the
voxels. Without compilation (the "eager" mode) the same code runs on chunks of voxels, so that its intermediates stay
small. The values equal those of the plain autograd path of :mod:`~monai_mixedfocal.losses._terms` up to float
rounding.

The mode is chosen with the environment variable ``MONAI_MIXEDFOCAL_FUSED`` or :func:`use_fused_mode`:

- ``"auto"`` (default): compile for inputs of at least :data:`AUTO_MIN_ELEMENTS` elements on CPU or CUDA when
  ``torch.compile`` works on this machine, else the plain autograd path (small inputs gain nothing from a compilation
  of tens of seconds);
- ``"compile"``: always the compiled kernels (the eager kernels where compilation fails);
- ``"eager"``: the fused kernels without compilation (bounded memory, for testing and debugging);
- ``"off"``: always the plain autograd path.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from monai_mixedfocal.losses._kernels import KernelSpec, forward_outputs, forward_sums, fused_backward, fused_forward
from monai_mixedfocal.losses._terms import (
    _check_target,
    check_alpha_count,
    check_input_finite,
    check_target_shape,
    kept_channels,
    upcast,
)

__all__ = [
    "AUTO_MIN_ELEMENTS",
    "ENV_VAR",
    "MODES",
    "SECOND_ORDER_MESSAGE",
    "CompiledKernels",
    "FusedInputs",
    "FusedStatistics",
    "Runner",
    "checked_loss",
    "compiler_disabled",
    "eager_backward",
    "eager_forward",
    "first_order_only",
    "focal_weights",
    "fused_inputs",
    "fused_mode",
    "fused_statistics",
    "use_fused_mode",
]

_LOGGER = logging.getLogger(__name__)

#: the environment variable that selects the mode
ENV_VAR = "MONAI_MIXEDFOCAL_FUSED"
#: the valid modes
MODES = ("auto", "compile", "eager", "off")
#: in "auto" mode, the smallest input (number of elements) for which the kernels are compiled
AUTO_MIN_ELEMENTS = 1 << 20
#: voxels per chunk in "eager" mode (bounds the intermediates to a few times ``B * CHUNK_VOXELS`` elements)
CHUNK_VOXELS = 1 << 16

_mode_override = threading.local()


def fused_mode() -> str:
    """The current mode: the innermost :func:`use_fused_mode`, else ``$MONAI_MIXEDFOCAL_FUSED``, else ``"auto"``.

    Raises:
        ValueError: if the environment variable holds an unknown mode.
    """
    mode = getattr(_mode_override, "mode", None)
    if mode is not None:
        return mode
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(MODES)}; got {mode!r}.")
    return mode


@contextlib.contextmanager
def use_fused_mode(mode: str) -> Iterator[None]:
    """Run the losses in ``mode`` (one of :data:`MODES`) inside the ``with`` block (this thread only).

    Example:
        >>> from monai_mixedfocal.losses._fused import use_fused_mode
        >>> with use_fused_mode("off"):  # the plain autograd path, e.g. as a reference
        ...     pass

    Raises:
        ValueError: for an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
    previous = getattr(_mode_override, "mode", None)
    _mode_override.mode = mode
    try:
        yield
    finally:
        _mode_override.mode = previous


# ----------------------------------------------------------------------------------------------------------------------
# Running the kernels: compiled (one loop over the volume) or eager (on chunks of voxels)
# ----------------------------------------------------------------------------------------------------------------------

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


class _FusedFunction(torch.autograd.Function):
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


# ----------------------------------------------------------------------------------------------------------------------
# Entry point for the losses
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class FusedStatistics:
    """The statistics of the fused path (all channels; the kept ones are selected by :meth:`confusion`).

    Attributes:
        pred_sum: ``sum_i p`` per image and channel ``[B, C]`` (clipped probabilities with ``region_clip``).
        tp: ``sum_i y p`` ``[B, C]``.
        ref_sum: ``sum_i y`` ``[B, C]`` (no gradient).
        pixel: the pixel-wise term summed over the voxels and kept channels of every image ``[B]``.
        kept: the kept channels.
        num_voxels: voxels per image.
        valid: a 0-d bool tensor from the kernels (:func:`~._kernels.sums_valid`): the input was finite and every
            class index valid (inputs checked before the kernels ran pass it). Reading it is a host-device
            synchronisation: :meth:`check` (or a loss's final check, which reads it together with the loss's own
            finiteness) does it once. ``None`` where the caller checks the input itself (the compiled loss of
            :mod:`~monai_mixedfocal.losses._fused_loss`, whose arithmetic on the sums sees these statistics).
        explain: raises the error that makes ``valid`` false (NaN / inf input, invalid class indices), as the plain
            path raises it (``None`` with ``valid``).
    """

    pred_sum: torch.Tensor
    tp: torch.Tensor
    ref_sum: torch.Tensor
    pixel: torch.Tensor
    kept: slice
    num_voxels: int
    valid: torch.Tensor | None = None
    explain: Callable[[], None] | None = None

    def check(self) -> None:
        """Raise the input's error if :attr:`valid` is false (one host-device synchronisation)."""
        if self.valid is not None and not bool(self.valid) and self.explain is not None:
            self.explain()

    def confusion(self, batch: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(TP, FN, FP)`` of the kept channels, ``[B, K]`` (``[K]`` pooled over the batch with ``batch=True``).

        The same values as :func:`~monai_mixedfocal.losses._terms.confusion_sums`.
        """
        tp, pred_sum = self.tp[:, self.kept], self.pred_sum[:, self.kept]
        ref_sum = self.ref_sum[:, self.kept].to(tp.dtype)
        if batch:
            tp, pred_sum, ref_sum = tp.sum(0), pred_sum.sum(0), ref_sum.sum(0)
        return tp, ref_sum - tp, pred_sum - tp


def focal_weights(
    num_channels: int,
    kept: slice,
    alpha: float | Sequence[float],
    beta: float | None,
    binary: bool,
    like: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel weights ``(w_pos, w_neg)`` of the pixel-wise term, as :func:`~._terms.pixel_focal_term` weights it.

    Categorical form: ``w_pos = alpha_c * w_c`` (``w_c = beta`` on foreground channels, ``1 - beta`` on channel 0,
    1 without ``beta``), ``w_neg = 0``. Binary form: ``w_pos = alpha_c * beta``, ``w_neg = alpha_c * (1 - beta)``.
    Dropped channels weigh 0.

    Args:
        num_channels: the input's channels.
        kept: the kept channels.
        alpha: one weight for all kept channels, or one per kept channel.
        beta: the false-negative weight, or ``None``.
        binary: the binary form.
        like: the tensors get its dtype and device.

    Returns:
        ``(w_pos, w_neg)``, ``[C]`` each: made once per configuration, dtype and device, then reused (read only),
        so that a loss call copies nothing from the host to a GPU.
    """
    alphas = (float(alpha),) if isinstance(alpha, (int, float)) else tuple(float(a) for a in alpha)
    indices = range(num_channels)[kept]
    beta = None if beta is None else float(beta)
    return _weight_tensors(num_channels, (indices.start, indices.stop), alphas, beta, binary, like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _weight_tensors(
    num_channels: int,
    kept: tuple[int, int],
    alphas: tuple[float, ...],
    beta: float | None,
    binary: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`focal_weights` from hashable arguments (in float64 arithmetic, then cast to ``dtype``)."""
    indices = range(*kept)
    positive = [0.0] * num_channels
    for c, a in zip(indices, alphas * len(indices) if len(alphas) == 1 else alphas):
        positive[c] = a
    negative = [0.0] * num_channels
    if binary:  # the positive and the negative part each weighed by alpha, times beta and 1 - beta
        positive_share, negative_share = (1.0, 1.0) if beta is None else (beta, 1.0 - beta)
        negative = [w * negative_share for w in positive]
        positive = [w * positive_share for w in positive]
    elif beta is not None:
        positive = [w * (1.0 - beta if c == 0 else beta) for c, w in enumerate(positive)]
    with torch.inference_mode(False):  # usable for autograd even if first made under inference_mode
        return torch.tensor(positive, dtype=dtype, device=device), torch.tensor(negative, dtype=dtype, device=device)


def compiler_disabled() -> bool:
    """``torch.compile`` is switched off for the process by PyTorch's own switches (``TORCHDYNAMO_DISABLE=1``,
    ``TORCH_COMPILE_DISABLE=1``): it then returns the function unchanged, which would run the kernels on the whole
    volume at once, uncompiled (slower than the plain path, and several volumes of intermediates)."""
    return os.environ.get("TORCHDYNAMO_DISABLE", "") == "1" or bool(torch._dynamo.config.disable)


def _use_compile(mode: str, x: torch.Tensor) -> bool | None:
    """Whether to compile (``True``), run the eager kernels (``False``), or take the plain path (``None``)."""
    if mode == "eager":
        return False
    supported = x.device.type in ("cpu", "cuda")
    if mode == "compile":
        return supported and not compiler_disabled()  # else the chunked eager kernels
    # "auto": only where a compilation pays off, and only while compiling works (and is allowed) in this process
    if not supported or x.numel() < AUTO_MIN_ELEMENTS or _compile_state["failed"] is not None:
        return None
    return None if compiler_disabled() else True


def _functorch_active() -> bool:
    """A ``torch.func`` transform (``grad``, ``vmap``, ``jvp``, ``jacrev``, ...) is running: the fused path's autograd
    functions do not support them (no ``setup_context``, no batching rule), so the plain path, which does, runs."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active is not None and active())


@dataclass
class FusedInputs:
    """The input and target of the fused kernels, validated and converted, with what the kernels compute.

    Attributes:
        x: the activation's input ``[B, C, *spatial]`` (float32 or float64; ``other_act`` already applied).
        target: class indices (any real dtype, validated by the kernels) or the dense target in ``x``'s dtype.
        spec: what the kernels compute.
        wpos, wneg: the per-channel weights of the pixel-wise term (:func:`focal_weights`).
        kept: the kept channels.
        compiled: run the compiled kernels (else the eager ones).
        explicit: the user asked for the "compile" mode (a failed compilation is reported).
        explain: raises the error of an invalid input (NaN / inf, invalid class indices), as the plain path raises it.
    """

    x: torch.Tensor
    target: torch.Tensor
    spec: KernelSpec
    wpos: torch.Tensor
    wneg: torch.Tensor
    kept: slice
    compiled: bool
    explicit: bool
    explain: Callable[[], None]

    @property
    def num_voxels(self) -> int:
        """Voxels per image."""
        return math.prod(self.x.shape[2:])

    def autocast_off(self) -> contextlib.AbstractContextManager:
        """A context without ``torch.autocast`` on the input's device: the kernels compute in the input's dtype."""
        device = self.x.device.type
        return (
            torch.autocast(device_type=device, enabled=False)
            if torch.is_autocast_enabled(device)
            else contextlib.nullcontext()
        )

    def statistics(self) -> FusedStatistics:
        """The statistics from the kernels (:class:`_FusedFunction`), their check left to the caller."""
        runner = Runner(self.spec, self.compiled, self.explicit)
        with self.autocast_off():
            pred_sum, tp, ref_sum, pixel, valid = _FusedFunction.apply(
                self.x, self.target, self.wpos, self.wneg, runner
            )
        return FusedStatistics(pred_sum, tp, ref_sum, pixel, self.kept, self.num_voxels, valid, self.explain)


def fused_inputs(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    sigmoid: bool,
    softmax: bool,
    other_act: Callable[[torch.Tensor], torch.Tensor] | None,
    to_onehot_y: bool,
    include_background: bool,
    region: bool,
    region_clip: bool = False,
    focal: tuple[float | Sequence[float], float, float | None] | None = None,
) -> FusedInputs | None:
    """The inputs of the fused kernels, or ``None`` where the plain autograd path must be used.

    Same conventions, validation and error messages as :func:`~monai_mixedfocal.losses._terms.prepare` (whose
    argument names it takes). Returns ``None`` for the mode ``"off"``, inside ``torch.compile`` tracing and
    ``torch.func`` transforms, for shapes that :func:`~._terms.prepare` rejects (so that it raises its errors), for a
    target that requires a gradient, and in mode ``"auto"`` for small inputs and where ``torch.compile`` is switched
    off (:func:`compiler_disabled`).

    Args:
        input: ``[B, C, *spatial]`` network output.
        target: ``[B, 1, *spatial]`` class indices (``to_onehot_y``) or ``[B, C, *spatial]``.
        sigmoid, softmax, other_act, to_onehot_y, include_background: as for :func:`~._terms.prepare`.
        region: compute the sums of the region terms.
        region_clip: clip probability inputs to ``[1e-7, 1 - 1e-7]`` before the region sums (focal Tversky).
        focal: ``(alpha, gamma, beta)`` of the pixel-wise term (``alpha`` a number or one weight per kept channel), or
            ``None``.

    Raises:
        ValueError: for a dense target or an input checked up front (``other_act``) that :func:`~._terms.prepare`
            rejects. Class indices are checked by the kernels themselves (see :attr:`FusedInputs.explain`).
    """
    mode = fused_mode()
    if mode == "off" or input.ndim < 3 or target.ndim != input.ndim or target.requires_grad:
        return None
    if torch.compiler.is_compiling() or not torch.is_floating_point(input) or _functorch_active():
        return None
    compiled = _use_compile(mode, input)
    if compiled is None:
        return None
    num_channels = input.shape[1]
    single = num_channels == 1
    index_target = to_onehot_y and not single
    kept = kept_channels(num_channels, include_background)
    try:
        check_target_shape(input, target, index_target)
        if focal is not None:  # the plain path raises a wrong number of per-class weights after its other checks
            check_alpha_count(focal[0], len(range(num_channels)[kept]), include_background)
    except ValueError:
        return None  # the plain path raises it, in its order of checks
    x = upcast(input)
    # class indices (integer or float, as MONAI's transforms give them) are validated by the kernels' own sums: every
    # voxel of a valid label map matches exactly one class, a NaN, fractional or out-of-range label none
    fast_labels = index_target and not target.is_complex()
    checked = not fast_labels or other_act is not None
    if checked:  # dense targets, other_act: validate up front, in the order of prepare()
        check_input_finite(x)
    if not fast_labels:
        target = _check_target(x, target, index_target)
    if other_act is not None and not (sigmoid or (softmax and not single)):
        x = other_act(x)
        activation = "identity"
    else:
        activation = "sigmoid" if sigmoid else ("softmax" if softmax and not single else "identity")
    binary = sigmoid or single
    spec = KernelSpec(
        activation=activation,
        index_target=index_target,
        region=region,
        region_clip=region_clip and activation == "identity",
        gamma=None if focal is None else float(focal[1]),
        binary=binary,
    )
    alpha, beta = (0.0, None) if focal is None else (focal[0], focal[2])  # no pixel-wise term: zero weights
    wpos, wneg = focal_weights(num_channels, kept, alpha, beta, binary, x)
    if not index_target:  # class indices of any real dtype go in as they are (see _as_compared)
        target = target.to(x.dtype)

    def explain() -> None:
        if not checked:
            check_input_finite(x)
        if fast_labels:
            _check_target(x, target, index_target)  # raises why (NaN, fraction, range found)

    return FusedInputs(x, target, spec, wpos, wneg, kept, compiled, mode == "compile", explain)


def fused_statistics(
    input: torch.Tensor, target: torch.Tensor, *, defer_check: bool = False, **options: Any
) -> FusedStatistics | None:
    """The statistics of a loss from the fused kernels, or ``None`` where the plain autograd path must be used.

    Args:
        input: ``[B, C, *spatial]`` network output.
        target: ``[B, 1, *spatial]`` class indices (``to_onehot_y``) or ``[B, C, *spatial]``.
        defer_check: leave the check of the input's finiteness and class indices to the caller
            (:meth:`FusedStatistics.check`, or :attr:`FusedStatistics.valid` read together with the caller's own
            checks): on a GPU every check read on the host waits for the device.
        options: the keyword arguments of :func:`fused_inputs` (``sigmoid``, ``softmax``, ``other_act``,
            ``to_onehot_y``, ``include_background``, ``region``, ``region_clip``, ``focal``).

    Returns:
        the statistics, or ``None`` (see :func:`fused_inputs`).

    Raises:
        ValueError: for NaN / inf inputs, class indices out of range, and whatever :func:`~._terms.prepare` raises.
    """
    inputs = fused_inputs(input, target, **options)
    if inputs is None:
        return None
    stats = inputs.statistics()
    if not defer_check:
        stats.check()
    return stats


def checked_loss(
    loss: torch.Tensor,
    finite: torch.Tensor,
    valid: torch.Tensor | None,
    explain: Callable[[], None] | None,
    ok: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return ``loss``, or raise instead of silently returning NaN / inf.

    ``finite`` (the loss is finite) and ``valid`` (the fused kernels found a valid input, ``None`` for an input checked
    before) are 0-d bool tensors, read together (``ok``, both, where the caller has it): one host-device
    synchronisation per loss.

    Raises:
        ValueError: for a NaN / inf input or invalid class indices found by the fused kernels (``explain`` says which).
        FloatingPointError: for a non-finite loss from valid inputs.
    """
    if ok is None:
        ok = finite if valid is None else finite & valid
    if bool(ok):
        return loss
    if valid is not None and not bool(valid) and explain is not None:
        explain()  # raises the input's error, where that is what went wrong
    if not bool(finite):
        raise FloatingPointError(
            "the loss is not finite although the input is. Known causes: smooth_dr=0, where a class with neither "
            "target nor predicted voxels makes a Dice / Tversky index 0/0 (use smooth_dr > 0, the default is 1e-6); "
            "logits so far apart that their differences overflow the input's dtype (above 3e38 in float32). "
            "Otherwise please report this with the input that triggers it."
        )
    return loss
