# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The report's figures (PNG): per-case box plots, mean precision against mean recall, and the segmentation overlays
of the paper's Fig. 3.

Every figure is a :class:`matplotlib.figure.Figure` of its own, not pyplot's: no backend is chosen or changed (the
caller's plots are left alone), and a figure is freed with its last reference.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from monai_mixedfocal.report.tables import METRIC_LABELS, interval_description, summary_classes

__all__ = [
    "OverlayInput",
    "boxplot_figure",
    "check_overlays",
    "figure_png",
    "overlay_figure",
    "overlay_title",
    "pick_overlay_slice",
    "precision_recall_figure",
    "radiological_view",
]

#: one slice per method: (image_2d, label_2d, pred_2d)
OverlayInput = Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
#: label colours: the paper draws the first class (kidney) in red and the second (tumour) in blue
_CLASS_COLOURS: tuple[str, ...] = ("red", "blue", "limegreen", "gold", "magenta", "cyan", "darkorange", "purple")
_PNG_DPI = 120


def _text(name: object) -> str:
    """A name as figure text, drawn as written: matplotlib reads text between two ``$`` as mathtext (``cost $5 vs
    $10`` lost its spaces, in italics) and stops at an invalid formula (``loss_$x^$``: ``ParseSyntaxException``)."""
    return str(name).replace("$", r"\$")


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (rendered in memory, so that the report can write every file atomically)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_PNG_DPI, bbox_inches="tight")
    return buffer.getvalue()


def _panel_grid(n_panels: int, width: float, height: float, max_cols: int, **kwargs: Any) -> tuple[Figure, list[Any]]:
    """A figure of ``n_panels`` axes of ``width x height`` inches, at most ``max_cols`` per row; spare axes hidden."""
    ncols = max(1, min(max_cols, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    # a Figure of its own, not pyplot's: no backend is chosen or changed (the caller's plots are left alone), and the
    # figure is freed with its last reference
    fig = Figure(figsize=(width * ncols, height * nrows), **kwargs)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n_panels:]:
        ax.axis("off")
    return fig, flat[:n_panels]


def boxplot_figure(df: pd.DataFrame, metric: str = "dsc") -> Figure:
    """Box plots of per-case ``metric`` per method, one panel per class, with the individual cases as dots.

    Args:
        df: validated per-case table.
        metric: the metric column.

    Returns:
        The figure (caller closes it).
    """
    methods = list(pd.unique(df["method"]))
    classes = list(pd.unique(df["class"]))
    width = max(4.0, 0.8 * len(methods) + 1.5)
    fig, axes = _panel_grid(len(classes), width, 4.5, max_cols=max(1, int(16 // width)), layout="constrained")
    rng = np.random.default_rng(0)  # fixed jitter: identical figures on identical data
    label = METRIC_LABELS.get(metric, metric)
    for ax, cls in zip(axes, classes):
        data = [df.loc[(df["class"] == cls) & (df["method"] == m), metric].dropna().to_numpy() for m in methods]
        ax.boxplot([d if d.size else [np.nan] for d in data], showmeans=True, showfliers=False, widths=0.6)
        for k, d in enumerate(data, start=1):
            ax.plot(k + rng.uniform(-0.15, 0.15, d.size), d, ".", color="0.35", alpha=0.5, markersize=4)
        ax.set_xticks(
            range(1, len(methods) + 1),
            [f"{_text(m)}\n(n={d.size})" for m, d in zip(methods, data)],
            rotation=30,
            ha="right",
            fontsize=8,
        )
        ax.set_title(_text(f"{label} — {cls}"))
        ax.set_ylabel(_text(f"per-case {label}"))
        ax.grid(axis="y", alpha=0.3)
    caption = "box: quartiles, whiskers: 1.5 IQR, line: median, triangle: mean, dots: cases"
    fig.suptitle(_text(f"Per-case {label} per loss ({caption})"), fontsize=10)
    return fig


#: how far the precision-recall axes may reach beyond [0, 1]
_RATIO_MARGIN = 0.02


def precision_recall_figure(summary: pd.DataFrame, confidence: float = 0.95, ci_over: str = "cases") -> Figure:
    """Mean precision against mean recall per method (with CI error bars), one panel per class.

    Points above the dashed diagonal favour precision, below it recall (the paper's recall-precision balance). The
    panels follow the per-case table's class order (:func:`~monai_mixedfocal.report.tables.summary_classes`), as the
    box plots and Table 1 do. The markers are hollow, each method's of another shape, so that methods with the same
    means stay visible on top of each other; the axes stay within the values precision and recall can take (a small
    margin around ``[0, 1]``), whatever the error bars.

    Args:
        summary: output of :func:`~monai_mixedfocal.stats.summary_table` with ``precision`` and ``recall`` rows.
        confidence: the confidence level of ``summary`` (for the axis labels).
        ci_over: what the intervals of ``summary`` are over, ``"cases"`` or ``"folds"`` (for the axis labels).

    Returns:
        The figure (caller closes it).
    """
    rows = summary[summary["metric"].isin(["precision", "recall"])]
    wide = rows.pivot_table(
        index=["class", "method"], columns="metric", values=["mean", "half_width"], sort=False, dropna=False
    )
    classes = summary_classes(rows)
    methods = list(dict.fromkeys(wide.index.get_level_values("method")))
    colours = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    markers = "osD^vP*Xh<>"
    fig, axes = _panel_grid(len(classes), 4.6, 4.4, max_cols=3, layout="constrained")
    for ax, cls in zip(axes, classes):
        for k, method in enumerate(methods):
            if (cls, method) not in wide.index:
                continue
            row = wide.loc[(cls, method)]
            ax.errorbar(
                row[("mean", "recall")],
                row[("mean", "precision")],
                xerr=np.nan_to_num(row[("half_width", "recall")]),
                yerr=np.nan_to_num(row[("half_width", "precision")]),
                fmt=markers[k % len(markers)],
                color=colours(k % colours.N),
                markerfacecolor="none",
                markeredgewidth=1.5,
                capsize=3,
                label=_text(method),
            )
        lo, hi = min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])
        lo, hi = max(lo, -_RATIO_MARGIN), min(hi, 1 + _RATIO_MARGIN)
        ax.plot([lo, hi], [lo, hi], "--", color="0.6", linewidth=1, label="precision = recall")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        interval = interval_description(confidence, ci_over, short=True)
        ax.set_xlabel(f"mean recall (± {interval})")
        ax.set_ylabel(f"mean precision (± {interval})")
        ax.set_title(_text(f"Precision vs recall — {cls}"))
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", fontsize=8, title="loss")
    return fig


def _class_names_by_label(class_names: Sequence[str] | Mapping[int, str]) -> dict[int, str]:
    if isinstance(class_names, Mapping):
        return {int(k): str(v) for k, v in class_names.items()}
    return {k: str(name) for k, name in enumerate(class_names, start=1)}


def check_overlays(overlays: OverlayInput) -> None:
    """Raise ``ValueError`` unless ``overlays`` maps methods to 2-D ``(image, label, pred)`` slices of one shape."""
    if not isinstance(overlays, Mapping) or not overlays:
        raise ValueError(f"overlays must be a non-empty mapping method -> (image, label, pred), got {type(overlays)}")
    shape = None
    for method, item in overlays.items():
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"overlays[{method!r}] must be a tuple (image_2d, label_2d, pred_2d)")
        shapes = [np.shape(a) for a in item]
        if any(len(s) != 2 for s in shapes) or len(set(shapes)) != 1 or (shape is not None and shapes[0] != shape):
            raise ValueError(f"overlays[{method!r}]: image, label and pred must be 2-D of one shape, got {shapes}")
        shape = shapes[0]


def overlay_figure(
    overlays: OverlayInput, class_names: Sequence[str] | Mapping[int, str], case_name: str | None = None
) -> Figure:
    """Ground truth and each method's prediction over the image of one slice (the paper's Fig. 3).

    The ground truth panel uses the label of the first method's entry. Label value ``k`` (``k >= 1``) is drawn in the
    colour of class ``k``: red, blue, green, ... (the paper: kidney red, tumour blue); 0 is background.

    Args:
        overlays: method -> ``(image_2d, label_2d, pred_2d)``, all arrays of the same 2-D shape.
        class_names: names of label values 1, 2, ... (a sequence) or a mapping label value -> name.
        case_name: optional case identifier for the figure title.

    Returns:
        The figure (caller closes it).

    Raises:
        ValueError: on an empty mapping, entries that are not triples, or arrays that are not 2-D of one shape.
    """
    check_overlays(overlays)
    names = _class_names_by_label(class_names)
    first_image, first_label, _ = next(iter(overlays.values()))
    panels = [("ground truth", first_image, first_label)] + [(m, im, pr) for m, (im, _, pr) in overlays.items()]
    n_labels = max([*names, *(int(np.max(p[2])) for p in panels), 1])
    colours = [(0, 0, 0, 0)] + [
        to_rgba(_CLASS_COLOURS[(k - 1) % len(_CLASS_COLOURS)], 0.55) for k in range(1, n_labels + 1)
    ]
    cmap = ListedColormap(colours)
    fig, axes = _panel_grid(len(panels), 3.2, 3.6, max_cols=4, layout="constrained")
    for k, (ax, (title, image, lab)) in enumerate(zip(axes, panels)):
        ax.axis("off")
        image = np.asarray(image, dtype=float)
        lo, hi = np.nanpercentile(image, [1, 99]) if image.size else (0, 1)
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        ax.imshow(
            np.clip(np.asarray(lab, dtype=int), 0, n_labels), cmap=cmap, vmin=0, vmax=n_labels, interpolation="nearest"
        )
        ax.set_title(_text(f"({chr(ord('a') + k)}) {title}"), fontsize=9)
    legend = [Patch(color=colours[k], label=_text(names.get(k, f"label {k}"))) for k in range(1, n_labels + 1)]
    fig.legend(handles=legend, loc="outside lower center", ncol=min(len(legend), 6), fontsize=8, frameon=False)
    fig.suptitle(_text(overlay_title(case_name)), fontsize=10)
    return fig


def overlay_title(case_name: str | None = None) -> str:
    """The overlay figure's title, also the report's caption of it.

    Args:
        case_name: the case shown, or ``None``.

    Returns:
        ``"Segmentations of case_00001"``, ``"Segmentations of case 7"`` for a name that does not say it is a case,
        ``"Segmentations"`` without one.
    """
    if not case_name:
        return "Segmentations"
    return f"Segmentations of {'' if str(case_name).lower().startswith('case') else 'case '}{case_name}"


def radiological_view(axial_slice: Any) -> np.ndarray:
    """An axial slice of a RAS-oriented volume (``volume[..., k]``, indexed ``(x, y)``) as radiologists display it:
    anterior at the top and the patient's right on the viewer's left (as ITK-SNAP and 3D Slicer show axial slices).

    Rows run from anterior to posterior (decreasing ``y``), columns from the patient's right to left (decreasing
    ``x``). For a volume in another orientation, reorient it first (``nibabel.as_closest_canonical``).

    Args:
        axial_slice: 2-D array ``(x, y)``.

    Returns:
        The 2-D array ``(y, x)`` with both axes reversed, ready for ``imshow``.

    Raises:
        ValueError: if ``axial_slice`` is not 2-D.
    """
    view = np.asarray(axial_slice)
    if view.ndim != 2:
        raise ValueError(f"radiological_view expects a 2-D axial slice, got shape {view.shape}")
    return view.T[::-1, ::-1]


def pick_overlay_slice(label_volume: Any, axis: int = -1) -> int:
    """The axial slice showing most of the rarest foreground class of a label volume.

    The rarest class is the label value > 0 with the fewest voxels among those present; the slice is the index along
    ``axis`` with the most voxels of it (the first on ties). MONAI's RAS orientation puts the axial axis last, hence the
    default ``axis=-1``. A leading channel dimension of size 1 is dropped.

    Args:
        label_volume: integer label volume (numpy array, torch tensor or array-like), 3-D or ``(1, H, W, D)``.
        axis: the axial axis.

    Returns:
        The slice index; the middle slice (with a warning) when the volume has no foreground.

    Raises:
        ValueError: if the volume is not 3-D (after dropping a size-1 channel) or ``axis`` is out of range.
    """
    if hasattr(label_volume, "detach"):  # torch tensor
        label_volume = label_volume.detach().cpu().numpy()
    volume = np.asarray(label_volume)
    if volume.ndim == 4 and volume.shape[0] == 1:
        volume = volume[0]
    if volume.ndim != 3:
        raise ValueError(f"pick_overlay_slice expects a 3-D label volume, got shape {volume.shape}")
    if not -3 <= axis < 3:
        raise ValueError(f"axis must be in [-3, 2] for a 3-D volume, got {axis}")
    values, counts = np.unique(volume[volume > 0], return_counts=True)
    if values.size == 0:
        middle = volume.shape[axis] // 2
        warnings.warn(f"label volume has no foreground; using the middle slice {middle}", stacklevel=2)
        return int(middle)
    rarest = values[np.argmin(counts)]
    other_axes = tuple(a for a in range(3) if a != axis % 3)
    return int(np.argmax((volume == rarest).sum(axis=other_axes)))
