# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Timing and memory measurements shared by the benchmarks.

- Time: the median of repeated runs after warm-up; on CUDA with CUDA events (and a synchronisation per run).
- Peak extra memory of a step: on CUDA ``torch.cuda.max_memory_allocated`` above the memory allocated before it; on
  CPU the peak of the bytes PyTorch's CPU allocator handed out minus those it took back during the step, from the
  allocation events the profiler records (``profile_memory=True``); time is measured without the profiler.
- The memory-bandwidth floor: one read of the logits and one write of a tensor of the same size (``copy_``), the
  least a loss's forward and backward pass must move; and the allocation floor: the same into a fresh tensor
  (``clone``), which on CPU adds the page faults of new memory that every gradient pays (:func:`floor_steps`).
- ``--keep-freed-memory`` (:func:`add_allocator_option`): time with glibc keeping freed memory, as the bundles run.
- Steps are timed round robin (:func:`interleaved_times`): on a shared machine whose load changes during the run,
  every loss sees the same conditions.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import torch

from monai_mixedfocal.bundle.allocator import keep_freed_memory


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``step`` takes (CUDA events on a GPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        synchronize(device)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    begin = time.perf_counter()
    step()
    return time.perf_counter() - begin


def interleaved_times(
    steps: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int
) -> dict[str, tuple[float, float]]:
    """``{key: (median seconds, seconds of the first call)}`` of every step, timed in turn.

    The steps run round robin, ``warmup`` rounds untimed then ``repeats`` timed rounds, so that a change of the
    machine's load during the run (other processes on a shared machine) affects every step alike.
    """
    first = {key: timed(step, device) for key, step in steps.items()}
    for _ in range(max(warmup - 1, 0)):
        for step in steps.values():
            timed(step, device)
    times: dict[str, list[float]] = {key: [] for key in steps}
    for _ in range(repeats):
        for key, step in steps.items():
            times[key].append(timed(step, device))
    return {key: (statistics.median(values), first[key]) for key, values in times.items()}


def floor_steps(like: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The two floors as steps for :func:`interleaved_times`.

    ``"bandwidth floor"``: one read of ``like`` and one write of a tensor of its size (``copy_`` into an existing
    tensor), the least a loss's forward and backward pass move. ``"allocation floor"``: the same into a fresh tensor
    (``clone``), what a loss's backward pass pays at least for its gradient where, as on CPU for large tensors, fresh
    memory comes from the system page by page.
    """
    out = torch.empty_like(like)
    return {"bandwidth floor": lambda: out.copy_(like), "allocation floor": like.clone}


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null inside the block (the profiler's C++ side logs every start and stop)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _profiled_peak(step: Callable[[], object]) -> int | None:
    """Peak of the bytes allocated minus freed during ``step``, from the CPU allocator's events in the profiler."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with _native_stderr_silenced(), torch.profiler.profile(activities=activities, profile_memory=True) as profiler:
        step()
    results = getattr(profiler.profiler, "kineto_results", None)
    if results is None:
        return None
    events = sorted((e for e in results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        if event.device_type() == torch.autograd.DeviceType.CPU:
            current += event.nbytes()
            peak = max(peak, current)
    return peak


def peak_extra_bytes(step: Callable[[], object], device: torch.device) -> int | None:
    """Peak memory one call of ``step`` allocates above what was allocated before it (``None`` if unmeasurable).

    CUDA: ``torch.cuda.max_memory_allocated``; CPU: every allocation and release of PyTorch's CPU allocator, as the
    profiler records them (``profile_memory=True``).
    """
    gc.collect()  # garbage of earlier steps (reference cycles) would otherwise be freed during the step
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu":
        return None
    return _profiled_peak(step)


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file in the same directory, then ``os.replace``)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def add_allocator_option(parser: argparse.ArgumentParser) -> None:
    """``--keep-freed-memory``: time as the bundles train (glibc keeps freed memory: no page faults of new tensors)."""
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="call monai_mixedfocal.bundle.keep_freed_memory() first, as the bundles do (default: glibc's defaults)",
    )


def apply_allocator_option(args: argparse.Namespace) -> None:
    """Apply ``--keep-freed-memory`` and say which allocator setting the timings are for."""
    applied = keep_freed_memory(args.keep_freed_memory)
    print(f"allocator: {'keep_freed_memory()' if applied else 'the C library defaults'}")
