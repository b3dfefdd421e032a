# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Where the time of one loss step goes: ``torch.profiler`` tables of forward + backward passes of our loss (default
mode and plain path) and of its MONAI counterpart, on CPU or CUDA, with the number of host-device synchronisations.

Run from the repository root::

    python -m benchmarks.profile_step --device cuda --losses mixed_focal dice
    python -m benchmarks.profile_step --device cpu --shape 2 3 40 80 80 --rows 20
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence

import torch

from benchmarks._measure import synchronize
from benchmarks.losses import COMPARED_LOSSES, PATCHES, _in_mode, _variants, loss_step


def profile_steps(step: Callable[[], None], device: torch.device, steps: int, rows: int) -> str:
    """A summary and the profiler's table (by self host time) of ``steps`` calls of ``step`` after two warm-up calls."""
    step()
    step()
    synchronize(device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
        synchronize(device)
    events = profiler.key_averages()
    syncs = sum(e.count for e in events if e.key in ("aten::_local_scalar_dense", "cudaStreamSynchronize"))
    host_ms = sum(e.self_cpu_time_total for e in events) / steps / 1e3
    device_ms = sum(getattr(e, "self_device_time_total", 0) for e in events) / steps / 1e3
    summary = f"per step: host {host_ms:.2f} ms, device {device_ms:.2f} ms, {syncs / steps:.0f} scalar reads / syncs"
    return summary + "\n" + events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--losses", nargs="+", choices=COMPARED_LOSSES, default=["mixed_focal"])
    parser.add_argument("--shape", type=int, nargs="+", default=list(PATCHES["kits19"]), help="logits [B, C, ...]")
    parser.add_argument("--steps", type=int, default=10, help="profiled steps (default 10)")
    parser.add_argument("--rows", type=int, default=15, help="rows of each table (default 15)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rows < 1:
        parser.error("--steps and --rows must be >= 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    warnings.filterwarnings("ignore", category=UserWarning, module="monai")
    generator = torch.Generator().manual_seed(0)
    shape = tuple(args.shape)
    x = torch.randn(*shape, generator=generator).to(device).requires_grad_(True)
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=generator).to(device)
    for name in args.losses:
        for key, factory, mode in _variants(name):
            table = profile_steps(_in_mode(loss_step(factory(), x, labels), mode), device, args.steps, args.rows)
            print(f"\n### {name} / {key}: {args.steps} steps on {device.type}, {list(shape)}\n{table}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
