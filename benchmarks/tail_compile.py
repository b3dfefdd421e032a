# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""An experiment for the GPU's host-bound regime: each loss with its arithmetic on the sums compiled too.

The fused kernels leave each loss about twenty small operations on ``[B, C]`` sums after the forward kernel (the
per-class formula, the reduction, the final check) and as many in the backward pass: on a GPU each is a kernel launch,
and a step whose kernels take well under a millisecond is bound by the host (``docs/performance.md``, "CUDA"). This
script times, forward and backward, side by side in one process (round robin, CUDA events on a GPU):

- ``ours``: the loss as shipped (compiled kernels, eager tail);
- ``tail``: the same loss instance with its ``forward`` compiled by ``torch.compile``, the statistics
  (``_statistics``, which runs the compiled kernels and must not be traced again) left out of the graph with
  ``torch.compiler.disable``;
- ``monai``: the nearest MONAI loss (as in ``benchmarks/losses.py``),

and prints the ratios to MONAI and the ATen operations of one step (on a GPU, about the kernel launches). Not part of
the package: it measures whether compiling the tail would pay, before the losses do it.

Run from the repository root::

    python -m benchmarks.tail_compile --device cuda --losses dice mixed_focal      # the KiTS19 patch
    python -m benchmarks.tail_compile --device cpu --shape 2 3 16 16 16 --repeats 200
    python -m benchmarks.tail_compile --device cpu --keep-freed-memory --repeats 9   # the KiTS19 patch on CPU
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence

import torch
from torch.nn.modules.loss import _Loss

from benchmarks._measure import add_allocator_option, apply_allocator_option, interleaved_times, synchronize
from benchmarks.losses import _LOGITS, PATCHES, loss_step, monai_counterpart
from monai_mixedfocal.losses import LOSS_NAMES, get_loss
from monai_mixedfocal.losses._fused import use_fused_mode


def with_compiled_tail(loss: _Loss) -> Callable[..., torch.Tensor]:
    """``loss.forward`` compiled, with this instance's ``_statistics`` (the fused kernels) kept out of the graph."""
    loss._statistics = torch.compiler.disable(loss._statistics)  # an instance attribute: only this instance
    return torch.compile(loss.forward)


def aten_operations(step: Callable[[], None], device: torch.device) -> int:
    """The ATen operations one call of ``step`` dispatches (after two warm-up calls)."""
    step()
    step()
    synchronize(device)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        step()
        synchronize(device)
    return sum(event.count for event in profiler.key_averages() if event.key.startswith("aten::"))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--losses", nargs="+", choices=LOSS_NAMES, default=["dice", "combo", "mixed_focal"])
    parser.add_argument("--shape", type=int, nargs="+", default=list(PATCHES["kits19"]), help="logits [B, C, ...]")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per variant (median; default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU (default 2)")
    add_allocator_option(parser)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 1 or args.threads < 1:
        parser.error("--repeats, --warmup and --threads must be >= 1")
    apply_allocator_option(args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning, module="monai")
    generator = torch.Generator().manual_seed(0)
    shape = tuple(args.shape)
    x = torch.randn(*shape, generator=generator).to(device).requires_grad_(True)
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=generator).to(device)
    steps: dict[str, Callable[[], None]] = {}
    for name in args.losses:
        steps[f"{name}/ours"] = loss_step(get_loss(name, **_LOGITS), x, labels)
        steps[f"{name}/tail"] = loss_step(with_compiled_tail(get_loss(name, **_LOGITS)), x, labels)
        steps[f"{name}/monai"] = loss_step(monai_counterpart(name)[1](), x, labels)
    with use_fused_mode("compile"):  # the compiled kernels at any size (the tail's point is the host's cost per call)
        operations = {key: aten_operations(step, device) for key, step in steps.items()}
        times = interleaved_times(steps, device, args.repeats, args.warmup)
    print(f"torch {torch.__version__}, {device.type}, logits {list(shape)}, median of {args.repeats}")
    header = (
        "| loss | MONAI loss | ours us | tail us | MONAI us | ours/MONAI | tail/MONAI | ATen ops: ours | tail | MONAI |"
    )
    print(header + "\n" + "|---" * (header.count("|") - 1) + "|")
    for name in args.losses:
        ours, tail, monai = (times[f"{name}/{key}"][0] * 1e6 for key in ("ours", "tail", "monai"))
        ops = " | ".join(str(operations[f"{name}/{key}"]) for key in ("ours", "tail", "monai"))
        print(
            f"| {name} | {monai_counterpart(name)[0]} | {ours:.0f} | {tail:.0f} | {monai:.0f} "
            f"| {ours / monai:.2f} | {tail / monai:.2f} | {ops} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
