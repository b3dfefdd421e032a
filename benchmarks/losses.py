# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Forward + backward time and peak memory of every loss against its nearest MONAI loss, at the paper's patch sizes.

Run from the repository root::

    python -m benchmarks.losses                          # CPU (2 threads), and CUDA when a GPU is present
    python -m benchmarks.losses --patches kits19 --losses mixed_focal dice --repeats 9
    python -m benchmarks.losses --markdown results/bench_losses.md

For every patch (KiTS19 ``2 x 3 x 80 x 160 x 160``, BraTS20 ``2 x 2 x 96 x 96 x 96`` logits, int64 labels
``[B, 1, ...]``) and device it prints one row per loss: the median forward + backward time of our loss in the
default mode (``ours``: the fused kernels, compiled at these sizes) and on the plain autograd path (``plain``: what
runs where ``torch.compile`` is unavailable, ``MONAI_MIXEDFOCAL_FUSED=off``), of the MONAI loss, the ratio ours/MONAI,
the ratios to the memory-bandwidth floor (one read of the logits and one write of their gradient, measured in the same
run), the peak extra memory of a step (including the input's gradient, one volume) in MiB and in volumes (float32
tensors of the logits' size), and the first call of ours (``first``: includes the compilation).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss, FocalLoss, TverskyLoss
from torch.nn.modules.loss import _Loss

from benchmarks._measure import (
    add_allocator_option,
    apply_allocator_option,
    floor_steps,
    interleaved_times,
    peak_extra_bytes,
    write_text,
)
from monai_mixedfocal.losses import get_loss
from monai_mixedfocal.losses._fused import compile_unavailable_reason, use_fused_mode
from monai_mixedfocal.losses._fused_loss import release_compiled_losses

#: the paper's patches as logits shapes [B, C, *spatial]
PATCHES: dict[str, tuple[int, ...]] = {"kits19": (2, 3, 80, 160, 160), "brats20": (2, 2, 96, 96, 96)}
#: our losses of the benchmark (the eight of the paper's study)
DEFAULT_LOSSES = (
    "dice",
    "tversky",
    "focal_tversky",
    "cosine_tversky",
    "cross_entropy",
    "focal",
    "combo",
    "mixed_focal",
)
_LOGITS = {"softmax": True, "to_onehot_y": True}


class TorchCrossEntropy(_Loss):
    """``torch.nn.functional.cross_entropy`` on class indices ``[B, 1, ...]``: the cross entropy MONAI itself uses
    (the ``CrossEntropyLoss`` term of ``DiceCELoss``; MONAI has no cross-entropy loss of its own)."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(input, target[:, 0].long())


_TVERSKY = ("TverskyLoss(alpha=0.3, beta=0.7)", lambda: TverskyLoss(alpha=0.3, beta=0.7, **_LOGITS))
#: our loss -> (the nearest MONAI loss's name, its factory); same inputs: logits, class indices, one-hot of the target.
#: MONAI's DiceFocalLoss has no softmax option for its focal term: that term is a per-channel sigmoid focal loss.
_COUNTERPARTS: dict[str, tuple[str, Callable[[], _Loss]]] = {
    "dice": ("DiceLoss", lambda: DiceLoss(**_LOGITS)),
    "tversky": _TVERSKY,
    "focal_tversky": _TVERSKY,
    "cosine_tversky": _TVERSKY,
    "cross_entropy": ("torch CrossEntropyLoss (DiceCELoss's CE term)", TorchCrossEntropy),
    "focal": ("FocalLoss(use_softmax)", lambda: FocalLoss(gamma=2.0, use_softmax=True, to_onehot_y=True)),
    "combo": ("DiceCELoss", lambda: DiceCELoss(**_LOGITS)),
    "mixed_focal": ("DiceFocalLoss (sigmoid focal term)", lambda: DiceFocalLoss(**_LOGITS)),
}
#: the losses the benchmarks can compare (those with a MONAI counterpart)
COMPARED_LOSSES: tuple[str, ...] = tuple(_COUNTERPARTS)


def monai_counterpart(name: str) -> tuple[str, Callable[[], _Loss]]:
    """The nearest MONAI loss of one of ours (:data:`COMPARED_LOSSES`)."""
    return _COUNTERPARTS[name]


@dataclass
class Row:
    """One loss on one patch and device."""

    patch: str
    device: str
    loss: str
    monai_name: str
    seconds: dict[str, float] = field(default_factory=dict)  # "ours", "plain", "monai"
    peak: dict[str, int | None] = field(default_factory=dict)
    first_call: float = 0.0


def loss_step(loss: Callable[..., torch.Tensor], x: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """One forward and backward pass of ``loss`` on ``x`` (a leaf that requires a gradient)."""

    def step() -> None:
        x.grad = None
        loss(x, labels).backward()
        x.grad = None

    return step


def _variants(name: str) -> list[tuple[str, Callable[[], _Loss], str | None]]:
    """``(key, factory, fused mode)`` of the three losses compared for ``name`` (``None``: the default mode)."""
    return [
        ("ours", lambda: get_loss(name, **_LOGITS), None),
        ("plain", lambda: get_loss(name, **_LOGITS), "off"),
        ("monai", monai_counterpart(name)[1], None),
    ]


def _mode(mode: str | None) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if mode is None else use_fused_mode(mode)


def _in_mode(step: Callable[[], None], mode: str | None) -> Callable[[], None]:
    def run() -> None:
        with _mode(mode):
            step()

    return run


def benchmark_patch(
    patch: str, shape: Sequence[int], device: torch.device, names: Sequence[str], repeats: int, warmup: int
) -> tuple[list[Row], float]:
    """Time (then measure the memory of) every loss of ``names`` on one patch; returns the rows and the floor."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(*shape, generator=generator).to(device).requires_grad_(True)
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=generator).to(device)
    release_compiled_losses()  # each patch's losses get the whole-loss path, as one run of the bundle's loss does
    steps = floor_steps(x.detach())
    for name in names:
        for key, factory, mode in _variants(name):
            steps[f"{name}/{key}"] = _in_mode(loss_step(factory(), x, labels), mode)
    times = interleaved_times(steps, device, repeats, warmup)
    floor, fresh = times["bandwidth floor"][0], times["allocation floor"][0]
    gbps = 2 * 4 * x.numel() / floor / 1e9
    print(
        f"{patch} {list(shape)} on {device.type}: bandwidth floor {floor * 1e3:.1f} ms ({gbps:.1f} GB/s), "
        f"allocation floor {fresh * 1e3:.1f} ms",
        flush=True,
    )
    rows = []
    for name in names:
        row = Row(patch, device.type, name, monai_counterpart(name)[0])
        for key, _factory, _mode_name in _variants(name):
            row.seconds[key], first = times[f"{name}/{key}"]
            if key == "ours":
                row.first_call = first
            # memory after all timings (under the profiler, which would slow them down)
            row.peak[key] = peak_extra_bytes(steps[f"{name}/{key}"], device)
        rows.append(row)
    return rows, floor


def _ms(seconds: float) -> str:
    """Milliseconds, with a decimal below 10 ms (GPU timings, small patches)."""
    return f"{seconds * 1e3:.1f}" if seconds < 0.01 else f"{seconds * 1e3:.0f}"


def _mib(value: int | None, volume: int) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f} ({value / volume:.2f})"


def format_table(rows: Sequence[Row], floors: dict[tuple[str, str], float], volumes: dict[str, int]) -> str:
    """The rows as a Markdown table."""
    header = (
        "| patch | device | loss | MONAI loss | ours ms | plain ms | MONAI ms | ours/MONAI | plain/MONAI | ours/floor "
        "| MONAI/floor | peak MiB (volumes): ours | plain | MONAI | ours first call s |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        floor = floors[(row.patch, row.device)]
        ours, plain, monai = (row.seconds[k] for k in ("ours", "plain", "monai"))
        volume = volumes[row.patch]
        lines.append(
            f"| {row.patch} | {row.device} | {row.loss} | {row.monai_name} | {_ms(ours)} | {_ms(plain)} "
            f"| {_ms(monai)} | {ours / monai:.2f} | {plain / monai:.2f} "
            f"| {ours / floor:.1f} | {monai / floor:.1f} "
            f"| {_mib(row.peak.get('ours'), volume)} | {_mib(row.peak.get('plain'), volume)} "
            f"| {_mib(row.peak.get('monai'), volume)} | {row.first_call:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", nargs="+", choices=sorted(PATCHES), default=list(PATCHES))
    parser.add_argument("--losses", nargs="+", choices=COMPARED_LOSSES, default=list(DEFAULT_LOSSES))
    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), default=None, help="default: cpu (+ cuda)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per loss (median; default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--shape", type=int, nargs="+", default=None, help="replace the patches by one [B, C, ...]")
    parser.add_argument("--markdown", default=None, help="also write the table to this Markdown file")
    add_allocator_option(parser)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 1 or args.threads < 1:
        parser.error("--repeats, --warmup and --threads must be >= 1")
    apply_allocator_option(args)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--devices cuda: no CUDA device is available")
    torch.set_num_threads(args.threads)
    patches = {"custom": tuple(args.shape)} if args.shape else {p: PATCHES[p] for p in args.patches}
    warnings.filterwarnings("ignore", category=UserWarning, module="monai")
    mode = os.environ.get("MONAI_MIXEDFOCAL_FUSED", "auto")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, MONAI_MIXEDFOCAL_FUSED={mode}", flush=True)
    rows: list[Row] = []
    floors: dict[tuple[str, str], float] = {}
    volumes = {p: 4 * torch.Size(s).numel() for p, s in patches.items()}
    for device_name in devices:
        for patch, shape in patches.items():
            device = torch.device(device_name)
            patch_rows, floor = benchmark_patch(patch, shape, device, args.losses, args.repeats, args.warmup)
            floors[(patch, device.type)] = floor
            rows += patch_rows
    reason = compile_unavailable_reason()
    table = format_table(rows, floors, volumes)
    print(table)
    if reason:
        print(f"\nnote: torch.compile failed ({reason}); 'ours' ran the eager fused kernels.")
    if args.markdown:
        write_text(args.markdown, table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
