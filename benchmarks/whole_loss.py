# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The host's cost per loss call, the GPU's bound at small kernels: the whole loss compiled against its statistics.

Where the fused kernels are compiled, a scalar loss runs as one compiled call forward and one backward
(:mod:`monai_mixedfocal.losses._fused_loss`): the kernels' sums, the loss's arithmetic on them and its derivatives in
one graph. Before, each loss did that arithmetic (about twenty small operations on ``[B, C]`` sums, the reduction, the
check) and its backward in eager mode after the compiled kernels: on a GPU each is a kernel launch, and a step whose
kernels take well under a millisecond is bound by the host (``docs/performance.md``, "CUDA"). This script times,
forward and backward, side by side in one process (round robin, CUDA events on a GPU):

- ``whole``: the loss as shipped (the whole loss compiled);
- ``stats``: the same loss on the statistics path (compiled kernels, the arithmetic on the sums in eager mode), which
  the losses take past :data:`~monai_mixedfocal.losses._fused_loss.MAX_COMPILED_LOSSES` instances or with
  ``reduction="none"``;
- ``monai``: the nearest MONAI loss (as in ``benchmarks/losses.py``),

and prints the ratios to MONAI and the ATen operations of one step (on a GPU, about the kernel launches).

Run from the repository root::

    python -m benchmarks.whole_loss --device cuda --losses dice mixed_focal      # the KiTS19 patch
    python -m benchmarks.whole_loss --device cpu --shape 2 3 4 4 4 --repeats 300  # the host's cost alone
    python -m benchmarks.whole_loss --device cpu --keep-freed-memory --repeats 9   # the KiTS19 patch on CPU
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence

import torch

from benchmarks._measure import add_allocator_option, apply_allocator_option, interleaved_times, synchronize
from benchmarks.losses import _LOGITS, COMPARED_LOSSES, PATCHES, loss_step, monai_counterpart
from monai_mixedfocal.losses import _fused_loss, get_loss
from monai_mixedfocal.losses._fused import use_fused_mode


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
    parser.add_argument("--losses", nargs="+", choices=COMPARED_LOSSES, default=["dice", "combo", "mixed_focal"])
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
    cap = _fused_loss.MAX_COMPILED_LOSSES
    _fused_loss.release_compiled_losses()
    with use_fused_mode("compile"):  # the compiled kernels at any size (the point is the host's cost per call)
        try:
            for name in args.losses:
                steps[f"{name}/whole"] = loss_step(get_loss(name, **_LOGITS), x, labels)
                steps[f"{name}/whole"]()  # compiles this instance's whole loss (the registry holds it)
            compiled = len(_fused_loss._compiled_losses)
            if compiled < len(args.losses):
                parser.error(
                    f"{len(args.losses) - compiled} of the losses did not compile whole (at most "
                    f"{cap} per process, and only on the fused path: see the log)"
                )
            # no room for more instances: the losses made from here on take the statistics path
            _fused_loss.MAX_COMPILED_LOSSES = len(_fused_loss._compiled_losses)
            for name in args.losses:
                steps[f"{name}/stats"] = loss_step(get_loss(name, **_LOGITS), x, labels)
                steps[f"{name}/monai"] = loss_step(monai_counterpart(name)[1](), x, labels)
            operations = {key: aten_operations(step, device) for key, step in steps.items()}
            times = interleaved_times(steps, device, args.repeats, args.warmup)
        finally:
            _fused_loss.MAX_COMPILED_LOSSES = cap
    print(f"torch {torch.__version__}, {device.type}, logits {list(shape)}, median of {args.repeats}")
    header = (
        "| loss | MONAI loss | whole us | stats us | MONAI us | whole/MONAI | stats/MONAI | ATen ops: whole | stats "
        "| MONAI |"
    )
    print(header + "\n" + "|---" * (header.count("|") - 1) + "|")
    for name in args.losses:
        whole, stats, monai = (times[f"{name}/{key}"][0] * 1e6 for key in ("whole", "stats", "monai"))
        ops = " | ".join(str(operations[f"{name}/{key}"]) for key in ("whole", "stats", "monai"))
        print(
            f"| {name} | {monai_counterpart(name)[0]} | {whole:.0f} | {stats:.0f} | {monai:.0f} "
            f"| {whole / monai:.2f} | {stats / monai:.2f} | {ops} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
