# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Keep freed memory in the process for reuse: page faults of fresh tensors cost a CPU training step dearly.

PyTorch's CPU allocator takes every tensor from ``malloc`` and gives it back on release. With glibc's default settings,
large blocks are mapped fresh from the system and unmapped on release (and the top of the heap is trimmed), so every
large tensor of every training step (activations, gradients, the loss's gradient) pays one page fault per 4 KiB page on
its first write. :func:`keep_freed_memory` sets glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` (``mallopt``, the
same as the environment variables ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``) so that blocks below
``max_block`` bytes come from the heap and freed memory stays there for the next step. Measured on a 2-core CPU
(``benchmarks/training.py``, ``docs/performance.md``): a training step (the KiTS19 bundle's BasicUNet with features 8 to
128 on 112 x 112 x 56 patches) 1.65 to 1.75 times faster, the backward pass of ``MixedFocalLoss`` at the KiTS19 patch 3
times faster. The cost: the process keeps freed memory instead of returning it to the system, and the heap fragments
(peak resident memory of that benchmark 2.9 GB instead of 2.0 GB).

The bundles' ``train.json`` (and ``evaluate.json``, an overlay on it) call it at start when training on the CPU
(``keep_freed_memory`` in the config: ``true`` / ``false`` to force; on a GPU the network's tensors live in PyTorch's
CUDA caching allocator, which has no such cost). Elsewhere than glibc (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

from monai_mixedfocal.utils import is_integer

__all__ = ["DEFAULT_MAX_BLOCK", "keep_freed_memory"]

_LOGGER = logging.getLogger(__name__)

#: blocks below this size (bytes) come from the heap and are kept for reuse (larger ones are mapped and unmapped)
DEFAULT_MAX_BLOCK = 1 << 30
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_INT_MAX = (1 << 31) - 1


def keep_freed_memory(enabled: bool = True, max_block: int = DEFAULT_MAX_BLOCK) -> bool:
    """Make glibc's ``malloc`` keep freed memory of blocks below ``max_block`` bytes for reuse (process-wide).

    Args:
        enabled: ``False`` does nothing (the bundles' ``keep_freed_memory`` switch).
        max_block: blocks of at least this many bytes are still mapped and unmapped; ``1`` to ``2**31 - 1``.

    Returns:
        Whether the setting took effect (``False`` when disabled or on a C library other than glibc).

    Raises:
        ValueError: for ``max_block`` out of range.

    Example:
        >>> from monai_mixedfocal.bundle import keep_freed_memory
        >>> keep_freed_memory(enabled=False)
        False
    """
    if not is_integer(max_block) or not 1 <= max_block <= _INT_MAX:
        raise ValueError(f"max_block must be an integer in [1, {_INT_MAX}] bytes; got {max_block!r}.")
    if not enabled:
        return False
    libc_name = platform.libc_ver()[0]
    if libc_name != "glibc":
        _LOGGER.info("keep_freed_memory: not glibc (%s); the C library's defaults stay.", libc_name or "?")
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    done = libc.mallopt(_M_MMAP_THRESHOLD, max_block) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1
    _LOGGER.info("keep_freed_memory: glibc keeps freed blocks below %d bytes for reuse: %s", max_block, done)
    return done
