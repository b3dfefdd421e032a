# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Training iterations per second of the KiTS19 bundle with each loss, on generated data.

Run from the repository root::

    python -m benchmarks.training                                   # the bundle's network and patch, every loss
    python -m benchmarks.training --patch-size 112 112 56 --features 8 16 32 64 128 8 --iterations 3  # a small CPU
    python -m benchmarks.training --losses mixed_focal dice --markdown results/bench_training.md

The network, optimizer, patch size, batch size, loss arguments and mixed precision come from
``bundles/kits19_mixedfocal_segmentation/configs/train.json`` (read with MONAI's ``ConfigParser``; ``--patch-size``
and ``--features`` override them). One iteration is what the bundle's trainer does per batch: forward (under autocast
where the bundle enables it), loss, backward, optimizer step, on a random image and a label map of the patch size
(data loading is not timed). Next to our losses it times ``none`` (the network's own cost: the mean square of the
logits as the "loss", one read and one gradient) and the nearest MONAI losses. Each loss is also timed alone, forward
and backward on logits of the network's output shape ("loss alone"), interleaved with the training steps; its share of
the step is that time over the step's (on a busy CPU the differences between whole steps drown in their noise).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from benchmarks._measure import add_allocator_option, apply_allocator_option, interleaved_times, write_text
from benchmarks.losses import COMPARED_LOSSES, DEFAULT_LOSSES, loss_step, monai_counterpart
from monai_mixedfocal.bundle import build_loss

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "kits19_mixedfocal_segmentation"
#: MONAI losses timed next to ours (their counterparts' names, see ``benchmarks.losses.monai_counterpart``)
MONAI_OF = ("dice", "combo", "mixed_focal")


def load_bundle(bundle: Path, device: torch.device, patch_size: Sequence[int] | None, features: Sequence[int] | None):
    """``(network, optimizer, batch_size, patch_size, num_classes, loss_kwargs, amp)`` of the bundle's training config.

    Raises:
        FileNotFoundError: if the bundle has no ``configs/train.json``.
    """
    config = bundle / "configs" / "train.json"
    if not config.is_file():
        raise FileNotFoundError(f"the bundle's training config {config} does not exist.")
    parser = ConfigParser()
    parser.read_config(str(config))
    parser["device"] = f"$torch.device('{device}')"
    parser["bundle_root"] = str(bundle)
    if patch_size is not None:
        parser["patch_size"] = list(patch_size)
    if features is not None:
        parser["network_def"]["features"] = list(features)
    network = parser.get_parsed_content("network")
    optimizer = parser.get_parsed_content("optimizer")
    return (
        network,
        optimizer,
        int(parser.get_parsed_content("batch_size")),
        [int(s) for s in parser.get_parsed_content("patch_size")],
        int(parser.get_parsed_content("num_classes")),
        dict(parser.get_parsed_content("loss_kwargs")),
        bool(parser.get_parsed_content("amp")),
    )


def _no_loss(logits: torch.Tensor, _target: torch.Tensor) -> torch.Tensor:
    """The network's own cost: a "loss" that reads the logits once and writes an ordinary gradient.

    (``logits.mean()`` would not do: its gradient is a broadcast view, which the convolutions' backward passes take a
    much slower path for.)
    """
    return logits.float().square().mean()


def training_step(
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    label: torch.Tensor,
    amp: bool,
) -> Callable[[], None]:
    """One iteration of the bundle's trainer: forward (under autocast with ``amp``), loss, backward, optimizer step.

    Every call starts from the same weights and optimizer state (training on random data would drift them, and with
    them the speed of the step); the restore, a copy of both, is part of every timed step, the same for every loss.
    """
    device = image.device
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    initial = copy.deepcopy((network.state_dict(), optimizer.state_dict()))

    def step() -> None:
        network.load_state_dict(initial[0])
        optimizer.load_state_dict(initial[1])
        network.train()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            loss = loss_fn(network(image), label)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--losses", nargs="+", choices=COMPARED_LOSSES, default=list(DEFAULT_LOSSES))
    parser.add_argument("--no-monai", action="store_true", help="do not time the MONAI counterparts")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU (default 2)")
    parser.add_argument("--patch-size", type=int, nargs=3, default=None, help="default: the bundle's")
    parser.add_argument("--features", type=int, nargs=6, default=None, help="BasicUNet features; default: the bundle's")
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per loss (median; default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default 2)")
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="the KiTS19 bundle directory")
    parser.add_argument("--markdown", default=None, help="also write the table to this Markdown file")
    add_allocator_option(parser)
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.warmup < 1 or args.threads < 1:
        parser.error("--iterations, --warmup and --threads must be >= 1")
    apply_allocator_option(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning, module="monai")
    device = torch.device(args.device)
    bundle = load_bundle(args.bundle, device, args.patch_size, args.features)
    network, optimizer, batch, patch, num_classes, loss_kwargs, amp = bundle
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 1, *patch, generator=generator).to(device)
    label = torch.randint(0, num_classes, (batch, 1, *patch), generator=generator).to(device)
    candidates: list[tuple[str, Callable[[], Callable]]] = [("none", lambda: _no_loss)]
    candidates += [(name, lambda n=name: build_loss(n, device=device, **loss_kwargs)) for name in args.losses]
    if not args.no_monai:
        candidates += [
            (f"MONAI {monai_counterpart(n)[0]}", monai_counterpart(n)[1]) for n in MONAI_OF if n in args.losses
        ]
    mode = os.environ.get("MONAI_MIXEDFOCAL_FUSED", "auto")
    print(
        f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, batch {batch}, patch {patch}, "
        f"amp {amp}, MONAI_MIXEDFOCAL_FUSED={mode}",
        flush=True,
    )
    # the logits of the bundle's network, to time each loss alone (forward + backward) next to the training steps
    with torch.no_grad(), torch.autocast(device.type, enabled=amp):
        logits = network(image).float().requires_grad_(True)
    steps: dict[str, Callable[[], object]] = {}
    for name, factory in candidates:
        loss_fn = factory()
        steps[name] = training_step(network, optimizer, loss_fn, image, label, amp)
        steps[f"{name} (loss alone)"] = loss_step(loss_fn, logits, label)
    times = interleaved_times(steps, device, args.iterations, args.warmup)
    lines = [
        "| loss | it/s | s/it | loss alone ms | loss share of the step | first iteration s |",
        "|---|---|---|---|---|---|",
    ]
    for name, _ in candidates:
        seconds, first = times[name]
        alone = times[f"{name} (loss alone)"][0]
        print(f"{name}: {seconds:.3f} s/iteration (first {first:.1f} s), loss alone {alone * 1e3:.0f} ms", flush=True)
        share = f"{alone / seconds:.1%}"
        lines.append(f"| {name} | {1 / seconds:.3f} | {seconds:.3f} | {alone * 1e3:.0f} | {share} | {first:.1f} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        write_text(args.markdown, table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
