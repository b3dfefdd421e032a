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

The mode is read in :mod:`~monai_mixedfocal.losses._fused_mode`; the kernels are run, compiled or eager, by
:mod:`~monai_mixedfocal.losses._fused_runner`. This module prepares their inputs and hands the losses the statistics.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from monai_mixedfocal.losses._fused_mode import (
    AUTO_MIN_ELEMENTS,
    ENV_VAR,
    MODES,
    compiler_disabled,
    functorch_active,
    fused_mode,
    use_compile,
    use_fused_mode,
)
from monai_mixedfocal.losses._fused_runner import (
    CHUNK_VOXELS,
    SECOND_ORDER_MESSAGE,
    CompiledKernels,
    FusedFunction,
    Runner,
    compile_unavailable_reason,
    eager_backward,
    eager_forward,
    first_order_only,
)
from monai_mixedfocal.losses._kernels import KernelSpec
from monai_mixedfocal.losses._terms import (
    _check_target,
    check_alpha_count,
    check_input_finite,
    check_probabilities,
    check_target_shape,
    kept_channels,
    upcast,
)

# the mode and the runner are re-exported: ``from monai_mixedfocal.losses._fused import use_fused_mode`` is documented
__all__ = [
    "AUTO_MIN_ELEMENTS",
    "CHUNK_VOXELS",
    "ENV_VAR",
    "MODES",
    "SECOND_ORDER_MESSAGE",
    "CompiledKernels",
    "FusedInputs",
    "FusedStatistics",
    "Runner",
    "checked_loss",
    "compile_unavailable_reason",
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
        """The statistics from the kernels (:class:`~._fused_runner.FusedFunction`), their check left to the caller."""
        runner = Runner(self.spec, self.compiled, self.explicit)
        with self.autocast_off():
            pred_sum, tp, ref_sum, pixel, valid = FusedFunction.apply(self.x, self.target, self.wpos, self.wneg, runner)
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
    if torch.compiler.is_compiling() or not torch.is_floating_point(input) or functorch_active():
        return None
    compiled = use_compile(mode, input, compile_unavailable_reason() is not None)
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
    if activation == "identity" and other_act is None:  # probabilities: their range up front, after prepare()'s checks
        if not checked:
            check_input_finite(x)
            _check_target(x, target, index_target)
        check_probabilities(x)
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
