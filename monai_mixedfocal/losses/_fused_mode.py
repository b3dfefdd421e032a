# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Which path the losses take: the mode of the fused fast path, and where compiling the kernels is possible.

The mode is chosen with the environment variable ``MONAI_MIXEDFOCAL_FUSED`` or :func:`use_fused_mode` (see
:mod:`~monai_mixedfocal.losses._fused` for what each mode runs): ``"auto"`` (default), ``"compile"``, ``"eager"`` or
``"off"``. PyTorch's own switches (``TORCHDYNAMO_DISABLE=1``, ``TORCH_COMPILE_DISABLE=1``) and ``torch.func``
transforms are detected here too.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

__all__ = [
    "AUTO_MIN_ELEMENTS",
    "ENV_VAR",
    "MODES",
    "compiler_disabled",
    "functorch_active",
    "fused_mode",
    "use_compile",
    "use_fused_mode",
]

#: the environment variable that selects the mode
ENV_VAR = "MONAI_MIXEDFOCAL_FUSED"
#: the valid modes
MODES = ("auto", "compile", "eager", "off")
#: in "auto" mode, the smallest input (number of elements) for which the kernels are compiled
AUTO_MIN_ELEMENTS = 1 << 20

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


def compiler_disabled() -> bool:
    """``torch.compile`` is switched off for the process by PyTorch's own switches (``TORCHDYNAMO_DISABLE=1``,
    ``TORCH_COMPILE_DISABLE=1``): it then returns the function unchanged, which would run the kernels on the whole
    volume at once, uncompiled (slower than the plain path, and several volumes of intermediates)."""
    return os.environ.get("TORCHDYNAMO_DISABLE", "") == "1" or bool(torch._dynamo.config.disable)


def use_compile(mode: str, x: torch.Tensor, compile_failed: bool) -> bool | None:
    """Whether to compile (``True``), run the eager kernels (``False``), or take the plain path (``None``) in ``mode``
    for the input ``x``, given whether ``torch.compile`` has failed in this process (``compile_failed``)."""
    if mode == "eager":
        return False
    supported = x.device.type in ("cpu", "cuda")
    if mode == "compile":
        return supported and not compiler_disabled()  # else the chunked eager kernels
    # "auto": only where a compilation pays off, and only while compiling works (and is allowed) in this process
    if not supported or x.numel() < AUTO_MIN_ELEMENTS or compile_failed:
        return None
    return None if compiler_disabled() else True


def functorch_active() -> bool:
    """A ``torch.func`` transform (``grad``, ``vmap``, ``jvp``, ``jacrev``, ...) is running: the fused path's autograd
    functions do not support them (no ``setup_context``, no batching rule), so the plain path, which does, runs."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active is not None and active())
