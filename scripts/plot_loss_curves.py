# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Plot the loss curves of the paper's Fig. 2 from the package's own loss classes.

Every curve is computed by calling a :mod:`monai_mixedfocal.losses` class on a constructed input, never by re-typing a
formula, so the figures document what the code computes:

- ``focal_loss_gamma.png`` (Fig. 2a): :class:`CategoricalFocalLoss` (``alpha=1``) against the probability of the
  ground-truth class ``p_t``, one curve per ``gamma`` (``gamma=0`` is the cross entropy).
- ``focal_tversky_gamma.png`` (Fig. 2b): :class:`FocalTverskyLoss` against the Tversky index, one curve per ``gamma``.
- ``cosine_tversky_gamma.png`` (Fig. 2c): :class:`CosineTverskyLoss` against the Tversky index, one curve per
  ``gamma``.
- ``mixed_focal_components.png`` (d): the two parts of the categorical Mixed Focal loss (Eq. 24), their sum as
  returned by :class:`MixedFocalLoss`, and the lambda-weighted Mixed Focal loss (Eq. 23), against ``p_t`` on a
  three-class image.

The x axis of (b) and (c) is the Tversky index as computed by :class:`ModifiedDiceLoss` (``TI = 1 - loss``) on the same
input. Each point is one single-voxel image of a one-channel probability map whose only voxel is foreground, so
``TP = p``, ``FN = 1 - p`` and ``FP = 0``; sweeping ``p`` from 0 to 1 sweeps the index from 0 to 1.

Usage::

    python scripts/plot_loss_curves.py --out docs/images
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from monai_mixedfocal.losses import (
    CategoricalFocalLoss,
    CosineTverskyLoss,
    FocalTverskyLoss,
    MixedFocalLoss,
    ModifiedDiceLoss,
)

FOCAL_GAMMAS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0)
FOCAL_TVERSKY_GAMMAS: tuple[float, ...] = (0.5, 1.0, 4.0 / 3.0, 2.0, 3.0)
COSINE_TVERSKY_GAMMAS: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 5.0)
TVERSKY_DELTA = 0.7
NUM_POINTS = 201
FIGURE_NAMES: tuple[str, ...] = (
    "focal_loss_gamma.png",
    "focal_tversky_gamma.png",
    "cosine_tversky_gamma.png",
    "mixed_focal_components.png",
)


def ground_truth_probabilities(num_points: int = NUM_POINTS, low: float = 1e-3) -> torch.Tensor:
    """Return an evenly spaced sweep of ground-truth-class probabilities in ``[low, 1]``.

    Args:
        num_points: number of points of the sweep.
        low: smallest probability (the cross entropy diverges at 0).

    Returns:
        A float64 tensor of shape ``[num_points]``.
    """
    return torch.linspace(low, 1.0, num_points, dtype=torch.float64)


def focal_curve(p_t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Categorical focal loss (``alpha=1``) of a two-class voxel whose ground-truth class has probability ``p_t``.

    The sweep is one image of ``len(p_t)`` voxels with probabilities ``[1 - p_t, p_t]`` and every voxel labelled 1;
    ``reduction="none"`` gives the loss per voxel and class, summed here over the classes.

    Args:
        p_t: probabilities of the ground-truth class, shape ``[N]``.
        gamma: the focusing parameter.

    Returns:
        The loss per voxel, shape ``[N]``.
    """
    probs = torch.stack([1.0 - p_t, p_t]).reshape(1, 2, -1, 1)
    target = torch.stack([torch.zeros_like(p_t), torch.ones_like(p_t)]).reshape(1, 2, -1, 1)
    loss = CategoricalFocalLoss(alpha=1.0, gamma=gamma, reduction="none")(probs, target)
    return loss.sum(dim=1).flatten()


def single_voxel_images(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return a batch of one-voxel, one-channel probability maps whose voxel is foreground.

    Args:
        p: the foreground probability of each image, shape ``[N]``.

    Returns:
        ``(probs, target)``, both of shape ``[N, 1, 1, 1]``: ``TP = p``, ``FN = 1 - p``, ``FP = 0`` per image.
    """
    probs = p.reshape(-1, 1, 1, 1)
    return probs, torch.ones_like(probs)


def tversky_index(p: torch.Tensor, delta: float = TVERSKY_DELTA) -> torch.Tensor:
    """Tversky index of each one-voxel image of :func:`single_voxel_images`, as ``1 - ModifiedDiceLoss``.

    Args:
        p: the foreground probability of each image, shape ``[N]``.
        delta: the false-negative weight.

    Returns:
        The index per image, shape ``[N]``.
    """
    probs, target = single_voxel_images(p)
    return 1.0 - ModifiedDiceLoss(delta=delta, reduction="none")(probs, target).flatten()


def region_curve(loss: torch.nn.Module, p: torch.Tensor) -> torch.Tensor:
    """Evaluate a region loss built with ``reduction="none"`` on the one-voxel images of :func:`single_voxel_images`.

    Args:
        loss: the loss module (``reduction="none"``).
        p: the foreground probability of each image, shape ``[N]``.

    Returns:
        The loss per image, shape ``[N]``.
    """
    probs, target = single_voxel_images(p)
    return loss(probs, target).flatten()


def three_class_image(p_t: float, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """A three-class ``size x size`` image (labels 0, 1, 2 in horizontal bands) predicted with confidence ``p_t``.

    Every voxel gives probability ``p_t`` to its ground-truth class and ``(1 - p_t) / 2`` to each other class.

    Args:
        p_t: probability of the ground-truth class at every voxel.
        size: side of the square image.

    Returns:
        ``(probs, labels)`` of shapes ``[1, 3, size, size]`` and ``[1, 1, size, size]``.
    """
    labels = (torch.arange(size) * 3 // size).reshape(1, 1, size, 1).expand(1, 1, size, size)
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2).to(torch.float64)
    probs = onehot * p_t + (1.0 - onehot) * (1.0 - p_t) / 2.0
    return probs, labels.to(torch.float64)


def mixed_focal_curves(p_t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Components of the Mixed Focal loss against ``p_t`` on :func:`three_class_image` (paper presets).

    Args:
        p_t: probabilities of the ground-truth class, shape ``[N]``.

    Returns:
        Curves keyed by legend label, each of shape ``[N]``.
    """
    common = {"to_onehot_y": True}
    losses: dict[str, torch.nn.Module] = {
        "focal Tversky part (delta 0.7, gamma 4/3)": FocalTverskyLoss(delta=0.7, gamma=4.0 / 3.0, **common),
        "categorical focal part (alpha 0.25, gamma 2)": CategoricalFocalLoss(alpha=0.25, gamma=2.0, **common),
        "Mixed Focal, Eq. 24 (sum of both)": MixedFocalLoss(**common),
        "Mixed Focal, Eq. 23, lambda 0.5": MixedFocalLoss(lambda_focal=0.5, **common),
    }
    curves: dict[str, list[float]] = {name: [] for name in losses}
    for value in p_t.tolist():
        probs, labels = three_class_image(value)
        for name, loss in losses.items():
            curves[name].append(float(loss(probs, labels)))
    return {name: torch.tensor(values) for name, values in curves.items()}


def _gamma_label(gamma: float) -> str:
    """Legend label of one gamma value (4/3 shown as a fraction)."""
    return "gamma = 4/3" if abs(gamma - 4.0 / 3.0) < 1e-12 else f"gamma = {gamma:g}"


def _line_figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, plt.Axes]:
    """A new figure with one labelled axes and a light grid."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def plot_focal(gammas: Sequence[float] = FOCAL_GAMMAS) -> Figure:
    """Fig. 2a: focal loss against the probability of the ground-truth class."""
    p_t = ground_truth_probabilities()
    fig, ax = _line_figure("(a) Focal loss", "probability of the ground-truth class p_t", "loss")
    for gamma in gammas:
        ax.plot(p_t, focal_curve(p_t, gamma), label=_gamma_label(gamma) + (" (cross entropy)" if gamma == 0 else ""))
    ax.set_ylim(0.0, 5.0)
    ax.legend()
    return fig


def plot_region(kind: str, gammas: Sequence[float]) -> Figure:
    """Fig. 2b/2c: focal Tversky or cosine Tversky loss against the Tversky index.

    Args:
        kind: ``"focal_tversky"`` or ``"cosine_tversky"``.
        gammas: the values of gamma, one curve each.

    Returns:
        The figure.

    Raises:
        ValueError: for an unknown ``kind``.
    """
    if kind not in ("focal_tversky", "cosine_tversky"):
        raise ValueError(f"kind must be 'focal_tversky' or 'cosine_tversky', got {kind!r}.")
    p = torch.linspace(0.0, 1.0, NUM_POINTS, dtype=torch.float64)
    index = tversky_index(p)
    if kind == "focal_tversky":
        fig, ax = _line_figure("(b) Focal Tversky loss (delta 0.7)", "Tversky index", "loss = (1 - TI)^(1/gamma)")
        make = FocalTverskyLoss
    else:
        fig, ax = _line_figure("(c) Cosine Tversky loss (delta 0.7)", "Tversky index", "loss = cos^gamma(pi/2 TI)")
        make = CosineTverskyLoss
    for gamma in gammas:
        curve = region_curve(make(delta=TVERSKY_DELTA, gamma=gamma, reduction="none"), p)
        ax.plot(index, curve, label=_gamma_label(gamma))
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.legend()
    return fig


def plot_mixed_focal() -> Figure:
    """(d): the parts of the Mixed Focal loss and their combinations on a three-class image."""
    p_t = torch.linspace(1.0 / 3.0, 1.0, 81, dtype=torch.float64)
    fig, ax = _line_figure(
        "(d) Mixed Focal loss and its parts (3 classes)", "probability of the ground-truth class p_t", "loss"
    )
    for (label, curve), style in zip(mixed_focal_curves(p_t).items(), ("--", ":", "-", "-.")):
        ax.plot(p_t, curve, style, label=label, linewidth=2.0 if style == "-" else 1.5)
    ax.set_xlim(1.0 / 3.0, 1.0)
    ax.set_ylim(bottom=0.0)
    ax.legend(fontsize="small")
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG atomically (temporary file in the same folder, then ``os.replace``) and close it.

    Args:
        fig: the figure.
        path: the destination ``.png``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format="png", bbox_inches="tight")
        os.chmod(tmp, 0o644)  # mkstemp creates the file private (0600); a documentation image is world-readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)


def make_figures(out_dir: str | Path) -> list[Path]:
    """Compute every curve and write the PNGs into ``out_dir``.

    Args:
        out_dir: destination folder (created if missing).

    Returns:
        The paths written, in the order of :data:`FIGURE_NAMES`.
    """
    out = Path(out_dir)
    figures = (
        plot_focal(),
        plot_region("focal_tversky", FOCAL_TVERSKY_GAMMAS),
        plot_region("cosine_tversky", COSINE_TVERSKY_GAMMAS),
        plot_mixed_focal(),
    )
    paths = [out / name for name in FIGURE_NAMES]
    for fig, path in zip(figures, paths):
        save_figure(fig, path)
    return paths


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Command-line entry point.

    Args:
        argv: the arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        The paths written.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images", help="output folder for the PNGs (default: docs/images)")
    args = parser.parse_args(argv)
    paths = make_figures(args.out)
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main()
