# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""keep_freed_memory: glibc's malloc keeps a freed tensor's memory in the heap (checked in a fresh process)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from monai_mixedfocal.bundle import keep_freed_memory
from monai_mixedfocal.bundle.allocator import DEFAULT_MAX_BLOCK

# glibc's malloc statistics (mallinfo2) in a fresh process, for the probes below
_MALLINFO = """
import ctypes, sys
import torch
from monai_mixedfocal.bundle import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
"""

# allocates, writes and frees a 64 MiB tensor, then prints how much glibc's heap grew (mallinfo2().arena)
_PROBE = (
    _MALLINFO
    + """
applied = keep_freed_memory(sys.argv[1] == "1")
before = libc.mallinfo2().arena
tensor = torch.ones(16 * 1024 * 1024)  # 64 MiB, written
del tensor
print(applied, libc.mallinfo2().arena - before)
"""
)

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")


def _heap_after_free(enabled: bool) -> tuple[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, "1" if enabled else "0"], capture_output=True, text=True, check=True
    )
    applied, growth = result.stdout.split()
    return applied, int(growth)


@glibc_only
def test_freed_tensor_stays_in_the_heap() -> None:
    applied, growth = _heap_after_free(True)
    assert applied == "True" and growth > 60 * 1024 * 1024  # the heap kept the block (less what was free in it)


@glibc_only
def test_default_malloc_returns_the_tensor_to_the_system() -> None:
    applied, growth = _heap_after_free(False)
    assert applied == "False" and growth < 8 * 1024 * 1024  # mapped and unmapped: the heap did not grow


def test_disabled_does_nothing() -> None:
    assert keep_freed_memory(enabled=False) is False


@pytest.mark.parametrize("max_block", [0, -1, 1 << 31, 1.5, True, "1"])
def test_bad_max_block_is_rejected(max_block: object) -> None:
    with pytest.raises(ValueError, match="max_block"):
        keep_freed_memory(max_block=max_block)  # type: ignore[arg-type]


def test_default_max_block_holds_the_largest_kits19_activation() -> None:
    # the bundle's largest tensors: 2 x 32 x 160 x 160 x 80 float32 activations (262 MB) must come from the heap
    assert DEFAULT_MAX_BLOCK > 2 * 32 * 160 * 160 * 80 * 4


# allocates a 64 MiB tensor and prints how much of it glibc mapped (mallinfo2().hblkhd) while it is alive
_MAPPED_PROBE = (
    _MALLINFO
    + """
keep_freed_memory(True, max_block=int(sys.argv[1]))
before = libc.mallinfo2().hblkhd
tensor = torch.ones(16 * 1024 * 1024)  # 64 MiB
print(libc.mallinfo2().hblkhd - before)
"""
)


def _mapped_bytes(max_block: int) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _MAPPED_PROBE, str(max_block)], capture_output=True, text=True, check=True
    )
    return int(result.stdout.split()[-1])


@glibc_only
def test_max_block_is_the_mmap_threshold() -> None:
    """Against the bug (mallopt of another parameter than M_MMAP_THRESHOLD: the existing heap-growth probe still passed,
    as a 1 GiB M_TOP_PAD also grows the heap) and (max_block ignored). Blocks below max_block come from the heap (not
    mapped); a block at or above it is still mapped."""
    assert _mapped_bytes(1 << 30) < 8 * 1024 * 1024  # from the heap
    assert _mapped_bytes(1 << 20) >= 60 * 1024 * 1024  # 64 MiB >= 1 MiB: mapped


def test_max_block_bounds_are_inclusive() -> None:
    """Against the bug (``<= _INT_MAX`` -> ``< _INT_MAX``): the documented range is 1 to 2**31 - 1, both ends
    accepted."""
    assert keep_freed_memory(enabled=False, max_block=(1 << 31) - 1) is False
    assert keep_freed_memory(enabled=False, max_block=1) is False
