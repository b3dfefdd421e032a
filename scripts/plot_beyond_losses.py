# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Plot the losses "beyond the paper" from the package's own classes (figures of ``docs/losses_beyond.md``).

Every curve is computed by calling a :mod:`monai_mixedfocal.losses` class or function, never by re-typing a formula:

- ``beyond_unified_focal.png``: (a) the focal part of :class:`UnifiedFocalLoss` for one voxel against the probability
  of its ground-truth class, for a background voxel and a rare-class voxel, asymmetric and symmetric; (b) its focal
  Tversky part per class against the Tversky index (rare classes ``(1 - TI)^(1 - gamma)``, frequent classes of the
  asymmetric loss ``1 - TI``).
- ``beyond_sigmoid_focal.png``: (a) :class:`SigmoidFocalLoss` of a positive voxel against ``p_t`` for several
  ``gamma``; (b) the loss of a negative voxel against its predicted probability ``p``: cross entropy, focal
  ``gamma=2`` and :class:`AsymmetricSigmoidFocalLoss` (``gamma_neg=4``, margin 0.05).
- ``beyond_poly1.png``: :class:`Poly1Loss` (cross entropy) against ``p_t`` for several ``epsilon``.
- ``beyond_class_weights.png``: :func:`effective_number_weights` of three classes with voxel counts of the order of a
  KiTS19 training fold against ``1 - beta``.

Usage::

    python scripts/plot_beyond_losses.py --out docs/images
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from monai_mixedfocal.data.io import atomic_write_bytes
from monai_mixedfocal.losses import (
    AsymmetricSigmoidFocalLoss,
    Poly1Loss,
    SigmoidFocalLoss,
    UnifiedFocalLoss,
)
from monai_mixedfocal.losses._terms import confusion_sums, prepare, tversky_index
from monai_mixedfocal.losses.class_weights import effective_number_weights

NUM_POINTS = 199
DELTA = 0.6
#: illustrative voxel counts (background, kidney, tumour) of the order of a KiTS19 training fold after resampling
KITS_LIKE_COUNTS: tuple[float, ...] = (3.0e9, 3.0e7, 6.0e6)


def _sweep(low: float = 1e-3, high: float = 1.0 - 1e-3) -> torch.Tensor:
    return torch.linspace(low, high, NUM_POINTS, dtype=torch.float64)


def _two_class_voxels(p_t: torch.Tensor, label: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``N`` one-voxel two-class images whose ground-truth class ``label`` has probability ``p_t``."""
    other = 1.0 - p_t
    probs = torch.stack([p_t, other] if label == 0 else [other, p_t], dim=1).reshape(-1, 2, 1, 1)
    return probs, torch.full((len(p_t), 1, 1, 1), float(label))


def unified_focal_curve(p_t: torch.Tensor, label: int, asymmetric: bool, gamma: float = 0.5) -> list[float]:
    """The focal part of :class:`UnifiedFocalLoss` of one voxel of class ``label`` (0 background, 1 rare)."""
    loss = UnifiedFocalLoss(delta=DELTA, gamma=gamma, asymmetric=asymmetric, to_onehot_y=True)
    probs, labels = _two_class_voxels(p_t, label)
    return [float(loss.parts(probs[i : i + 1], labels[i : i + 1])["focal"]) for i in range(len(p_t))]


def unified_tversky_curves(gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(TI, loss)`` of the rare class of one-voxel images swept from a miss to a hit (asymmetric loss)."""
    probs, labels = _two_class_voxels(torch.linspace(0.0, 1.0, NUM_POINTS, dtype=torch.float64), 1)
    loss = UnifiedFocalLoss(delta=DELTA, gamma=gamma, to_onehot_y=True)
    prep = prepare(
        probs, labels, sigmoid=False, softmax=False, other_act=None, to_onehot_y=True, include_background=True
    )
    index = tversky_index(*confusion_sums(prep, clip=True), DELTA, loss.smooth_nr, loss.smooth_dr)
    return index[:, 1], loss.focal_tversky_term(prep)[:, 1]


def _axes(ax: plt.Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def plot_unified() -> Figure:
    """Focal and focal Tversky parts of the (a)symmetric Unified Focal loss."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    p_t = _sweep()
    for label, name in ((0, "background voxel"), (1, "rare-class voxel")):
        for asymmetric, style in ((True, "-"), (False, "--")):
            kind = "asymmetric" if asymmetric else "symmetric"
            left.plot(p_t, unified_focal_curve(p_t, label, asymmetric), style, label=f"{name}, {kind}")
    _axes(
        left, f"(a) Unified Focal: focal part (delta {DELTA}, gamma 0.5)", "probability of the true class p_t", "loss"
    )
    left.set_ylim(0.0, 3.0)
    left.legend(fontsize="small")
    for gamma in (0.0, 0.25, 0.5, 0.75):
        index, curve = unified_tversky_curves(gamma)
        label = "1 - TI (frequent classes; gamma = 0)" if gamma == 0.0 else f"(1 - TI)^(1 - gamma), gamma = {gamma:g}"
        right.plot(index, curve, label=label)
    _axes(right, "(b) Unified Focal: focal Tversky part per class", "Tversky index TI", "loss")
    right.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_sigmoid() -> Figure:
    """Sigmoid focal loss of a positive, and focal / asymmetric loss of a negative voxel."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    p = _sweep()
    logits = torch.logit(p).reshape(-1, 1, 1, 1)
    ones, zeros = torch.ones_like(logits), torch.zeros_like(logits)
    for gamma in (0.0, 0.5, 1.0, 2.0, 5.0):
        curve = SigmoidFocalLoss(alpha=None, gamma=gamma, reduction="none")(logits, ones).flatten()
        left.plot(p, curve, label=f"gamma = {gamma:g}" + (" (cross entropy)" if gamma == 0 else ""))
    _axes(left, "(a) Sigmoid focal loss, positive voxel", "p_t = p", "loss")
    left.set_ylim(0.0, 5.0)
    left.legend(fontsize="small")
    negatives = {
        "cross entropy": SigmoidFocalLoss(alpha=None, gamma=0.0, reduction="none"),
        "focal, gamma = 2": SigmoidFocalLoss(alpha=None, gamma=2.0, reduction="none"),
        "asymmetric, gamma_neg = 4, margin 0.05": AsymmetricSigmoidFocalLoss(reduction="none"),
    }
    for name, loss in negatives.items():
        right.plot(p, loss(logits, zeros).flatten(), label=name)
    _axes(right, "(b) Negative (background) voxel", "predicted foreground probability p = 1 - p_t", "loss")
    right.set_ylim(0.0, 5.0)
    right.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_poly() -> Figure:
    """Poly-1 cross entropy for several epsilon."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    p_t = _sweep()
    probs, labels = _two_class_voxels(p_t, 1)
    for epsilon in (-1.0, 0.0, 1.0, 2.0):
        curve = Poly1Loss(epsilon=epsilon, to_onehot_y=True, reduction="none")(probs, labels).sum(1).flatten()
        ax.plot(p_t, curve, label=f"epsilon = {epsilon:g}" + (" (cross entropy)" if epsilon == 0 else ""))
    _axes(ax, "Poly-1 cross entropy", "probability of the true class p_t", "loss")
    ax.set_ylim(0.0, 5.0)
    ax.legend(fontsize="small")
    return fig


def plot_class_weights() -> Figure:
    """Effective-number weights of three classes against ``1 - beta``."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    one_minus_beta = np.logspace(-12, -1, 111)
    weights = np.stack([effective_number_weights(KITS_LIKE_COUNTS, 1.0 - b) for b in one_minus_beta])
    for column, name in enumerate(("background", "kidney", "tumour")):
        ax.semilogx(one_minus_beta, weights[:, column], label=f"{name} ({KITS_LIKE_COUNTS[column]:.0e} voxels)")
    ax.axvline(1e-4, color="grey", linestyle=":", label="beta = 0.9999 (Cui et al.)")
    _axes(ax, "Effective-number class weights (sum = 3)", "1 - beta", "weight")
    ax.legend(fontsize="small")
    return fig


FIGURES = {
    "beyond_unified_focal.png": plot_unified,
    "beyond_sigmoid_focal.png": plot_sigmoid,
    "beyond_poly1.png": plot_poly,
    "beyond_class_weights.png": plot_class_weights,
}


def main(argv: list[str] | None = None) -> list[Path]:
    """Write every figure of :data:`FIGURES` to ``--out`` (atomically) and return their paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="output folder (default docs/images)")
    args = parser.parse_args(argv)
    written = []
    for name, make in FIGURES.items():
        fig = make()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        written.append(atomic_write_bytes(args.out / name, buffer.getvalue()))
        print(args.out / name)
    return written


if __name__ == "__main__":
    main()
