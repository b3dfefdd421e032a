# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The study report: tables in the paper's format (Markdown, CSV, LaTeX) and figures (PNG).

:func:`write_report` turns a per-case long table (see :mod:`monai_mixedfocal.stats`) into a folder holding

- ``report.md``: the methods used, Table 1 (mean +/- 95% CI per method and class), the number of cases used, and
  Table 2 (per class, the lower-triangular matrix of adjusted pairwise p-values with marks and statistic signs);
- ``summary.csv`` (the long summary), ``summary.tex`` (the same tables in LaTeX, ``booktabs`` style) and
  ``pairwise_<class>.csv`` (every test with raw and adjusted p-values);
- ``boxplot_<metric>.png`` (per-case values per method and class), ``precision_recall.png`` (mean precision against
  mean recall per method, the paper's recall-precision balance) and, with ``overlays``, ``overlays.png`` (the paper's
  Fig. 3: ground truth and each method's segmentation of one slice).

The table helpers (:func:`table1`, :func:`pairwise_matrix`, :func:`markdown_table`, :func:`latex_table`) are public so
that the command line and notebooks can print the same tables.

Example:
    >>> import pandas as pd, tempfile
    >>> df = pd.DataFrame({"case": list("abcabc"), "method": ["dice"] * 3 + ["focal"] * 3, "class": "tumour",
    ...                    "dsc": [0.8, 0.7, 0.9, 0.6, 0.5, 0.7]})
    >>> write_report(df, tempfile.mkdtemp()).name
    'report.md'
"""

from __future__ import annotations

import importlib.metadata
import io
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from monai_mixedfocal import stats
from monai_mixedfocal.utils import atomic_write_bytes

__all__ = [
    "METRIC_LABELS",
    "REPORT_MANIFEST",
    "TEST_DESCRIPTIONS",
    "OverlayInput",
    "format_p",
    "latex_table",
    "markdown_table",
    "pairwise_matrix",
    "pick_overlay_slice",
    "table1",
    "write_report",
]

#: display names of the known metrics; other metric columns are shown by their column name
METRIC_LABELS: dict[str, str] = {"dsc": "DSC", "precision": "Precision", "recall": "Recall", "iou": "IoU"}
#: one-sentence description of each test, used in the report
TEST_DESCRIPTIONS: dict[str, str] = {
    "ranksum": (
        "two-sided Wilcoxon rank-sum test (`scipy.stats.ranksums`, unpaired, as in the paper); the statistic is its "
        "z score"
    ),
    "signedrank": (
        "two-sided paired Wilcoxon signed-rank test (`scipy.stats.wilcoxon`) on the cases both methods were evaluated "
        "on (matched by case and fold; zero differences dropped); the statistic is the normal-approximation z of the "
        "signed-rank sum"
    ),
}
#: one slice per method: (image_2d, label_2d, pred_2d)
OverlayInput = Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
#: label colours: the paper draws the first class (kidney) in red and the second (tumour) in blue
_CLASS_COLOURS: tuple[str, ...] = ("red", "blue", "limegreen", "gold", "magenta", "cyan", "darkorange", "purple")
_PNG_DPI = 120


# ------------------------------------------------------------------------------------------------ table text


#: the file of a report folder that lists the report's files (to remove an earlier report's leftovers)
REPORT_MANIFEST = "report_files.txt"


def format_p(p: float) -> str:
    """Format a p-value as in the paper: 3 significant digits, scientific notation below 0.001, ``"n/a"`` for NaN.

    More digits where 3 would round a p-value up onto a significance threshold that it is below (0.049996 is
    ``"0.049996"``, not ``"0.0500"`` next to its mark ``*`` for p < 0.05).

    Args:
        p: a p-value.

    Returns:
        e.g. ``"1.00"``, ``"0.0841"``, ``"2.52e-05"``; ``"< 2.2e-308"`` for a p-value that underflowed to 0.
    """
    if p is None or math.isnan(p):
        return "n/a"
    if p < sys.float_info.min:
        return f"< {sys.float_info.min:.1e}"  # underflowed to 0 (or a denormal): report the bound, not 0.00e+00
    for digits in range(3, 18):
        text = f"{p:.{digits - 1}e}" if p < 0.001 else f"{p:#.{digits}g}"
        if not any(p < threshold <= float(text) for threshold, _ in stats.SIGNIFICANCE_MARKS):
            break
    return text


def _metric_label(metric: str, cls: str) -> str:
    if metric == "iou" and cls == stats.MEAN_IOU_CLASS:
        return "mIoU"
    return f"{METRIC_LABELS.get(metric, metric)} {cls}"


def table1(summary: pd.DataFrame, digits: int = 3, value: str = "ci") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's Table 1 from :func:`monai_mixedfocal.stats.summary_table`: one row per method, one column per class
    and metric.

    Args:
        summary: output of :func:`~monai_mixedfocal.stats.summary_table`.
        digits: decimals of means and half-widths.
        value: ``"ci"`` for ``"mean ± half-width"`` cells (``"mean (n=1)"`` for a single case, ``"n/a"`` for none),
            ``"n"`` for the number of values used.

    Returns:
        ``(cells, best)``: a DataFrame of cell strings and a boolean DataFrame of the same shape marking the highest
        mean of each column (the paper's boldface; always False for ``value="n"``).

    Raises:
        ValueError: if ``value`` is unknown or ``summary`` lacks the summary columns.
    """
    if value not in ("ci", "n"):
        raise ValueError(f"value must be 'ci' or 'n', got {value!r}")
    needed = {"method", "class", "metric", "mean", "half_width", "n"}
    if not needed.issubset(summary.columns):
        raise ValueError(f"summary lacks columns {sorted(needed - set(summary.columns))}")
    methods = list(pd.unique(summary["method"]))
    columns = list(dict.fromkeys(zip(summary["class"], summary["metric"])))
    # order columns class by class, keeping the metric order within a class (DSC kidney, Precision kidney, ...)
    classes = list(dict.fromkeys(c for c, _ in columns))
    columns = [(c, m) for c in classes for (c2, m) in columns if c2 == c]
    labels = [_metric_label(m, c) for c, m in columns]
    if len(set(labels)) < len(labels):
        clashing = sorted({f"{m!r} ({label})" for (c, m), label in zip(columns, labels) if labels.count(label) > 1})
        raise ValueError(f"metric columns share a label of Table 1: {', '.join(clashing)}; rename one of them")
    # a method without any row for a column has no value: "n/a" (0 values used), as a method whose values are all NaN
    cells = pd.DataFrame("n/a" if value == "ci" else "0", index=pd.Index(methods, name="Method"), columns=labels)
    means = pd.DataFrame(np.nan, index=cells.index, columns=labels)
    for row in summary.to_dict("records"):
        label = _metric_label(row["metric"], row["class"])
        cells.loc[row["method"], label] = _cell(row["mean"], row["half_width"], int(row["n"]), digits, value)
        means.loc[row["method"], label] = row["mean"]
    # the cells' own rounding (f-string), so that the bold cell is the highest as printed; DataFrame.round differs at
    # the half (0.66749999... rounds to 0.668 there and prints as 0.667)
    rounded = means.map(lambda v: float(f"{v:.{digits}f}"))
    if value == "n":
        return cells, pd.DataFrame(False, index=cells.index, columns=labels)
    best = rounded.eq(rounded.max(axis=0), axis=1) & rounded.notna()
    return cells, best


def _cell(mean: float, half_width: float, n: int, digits: int, value: str) -> str:
    if value == "n":
        return str(n)
    if n == 0:
        return "n/a"
    if n == 1 or math.isnan(half_width):
        return f"{mean:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} ± {half_width:.{digits}f}"


def pairwise_matrix(pairs: pd.DataFrame, cls: str, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """The paper's Table 2 for one class: adjusted p-values, row method compared with column method.

    Each lower-triangle cell reads ``"<p_adjusted><mark> (<sign>)"`` where the sign is that of the statistic of the
    row method against the column method (``+``: the row method scores higher, ``-``: lower, ``0``: no difference);
    the diagonal is ``"-"`` and the upper triangle is empty.

    Args:
        pairs: output of :func:`~monai_mixedfocal.stats.pairwise_tests`.
        cls: the class to show.
        methods: row/column order; default: order of appearance in ``pairs``.

    Returns:
        A square DataFrame of strings indexed and labelled by method.

    Raises:
        ValueError: if ``cls`` has no rows in ``pairs`` or ``methods`` lacks a method of its tests.
    """
    sub = pairs[pairs["class"] == cls]
    if sub.empty:
        raise ValueError(f"no pairwise tests for class {cls!r}; classes: {list(pd.unique(pairs['class']))}")
    if methods is None:
        methods = list(dict.fromkeys([*sub["method_b"], *sub["method_a"]]))
    matrix = pd.DataFrame("", index=pd.Index(methods, name="Method"), columns=list(methods))
    for m in methods:
        matrix.loc[m, m] = "-"
    position = {m: k for k, m in enumerate(methods)}
    absent = sorted(set(sub["method_a"]).union(sub["method_b"]) - set(position))
    if absent:
        raise ValueError(f"methods {absent} of the tests are missing from methods={list(methods)}")
    for row in sub.itertuples(index=False):
        a, b, stat = row.method_a, row.method_b, row.statistic
        if position[a] < position[b]:  # keep the lower triangle: row after column
            a, b, stat = b, a, -stat
        sign = "n/a" if math.isnan(stat) else "+" if stat > 0 else "-" if stat < 0 else "0"
        matrix.loc[a, b] = f"{format_p(row.p_adjusted)}{row.mark} ({sign})"
    return matrix


def markdown_table(cells: pd.DataFrame, best: pd.DataFrame | None = None, escape: bool = True) -> str:
    """Render a DataFrame of strings (index included) as a GitHub Markdown table with aligned columns.

    Args:
        cells: the table; the index becomes the first column (its name the header).
        best: optional boolean DataFrame of the same shape; True cells are set in bold.
        escape: escape Markdown characters (``|``, ``*``, ``_``, ``<``, ``>``) so that significance marks print as
            asterisks and a name such as ``<loss>`` is not read as an HTML tag; use
            False for plain terminal output.

    Returns:
        The table text, ending with a newline.
    """
    esc: Callable[[str], str] = (lambda s: re.sub(r"([|*_\\<>])", r"\\\1", str(s))) if escape else str
    header = [esc(cells.index.name or ""), *(esc(c) for c in cells.columns)]
    body = []
    for i, (name, row) in enumerate(cells.iterrows()):
        texts = [esc(v) for v in row]
        if best is not None:
            texts = [f"**{t}**" if best.iat[i, j] else t for j, t in enumerate(texts)]
        body.append([esc(name), *texts])
    widths = [max(len(r[k]) for r in [header, *body]) for k in range(len(header))]
    lines = [header, ["-" * w for w in widths], *body]
    return "".join("| " + " | ".join(t.ljust(w) for t, w in zip(line, widths)) + " |\n" for line in lines)


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "±": r"$\pm$",
    "−": r"$-$",
    "×": r"$\times$",
}


def latex_escape(text: str) -> str:
    """Escape the LaTeX special characters of ``text`` (and write ``±``, ``−``, ``×`` as math)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def latex_table(cells: pd.DataFrame, best: pd.DataFrame | None = None, caption: str = "", label: str = "") -> str:
    """Render a DataFrame of strings (index included) as a LaTeX ``table`` with a ``booktabs`` ``tabular``.

    Args:
        cells: the table; the index becomes the first column.
        best: optional boolean DataFrame of the same shape; True cells are set in ``\\textbf``.
        caption: table caption (escaped).
        label: ``\\label`` key (used verbatim; keep it to letters, digits, ``:`` and ``-``).

    Returns:
        The LaTeX text (needs ``\\usepackage{booktabs}``).
    """
    header = [cells.index.name or "", *cells.columns]
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        *([rf"\caption{{{latex_escape(caption)}}}"] if caption else []),
        *([rf"\label{{{label}}}"] if label else []),
        rf"\begin{{tabular}}{{l{'c' * len(cells.columns)}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    for i, (name, row) in enumerate(cells.iterrows()):
        texts = [latex_escape(v) for v in row]
        if best is not None:
            texts = [rf"\textbf{{{t}}}" if best.iat[i, j] else t for j, t in enumerate(texts)]
        lines.append(" & ".join([latex_escape(name), *texts]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- figures


def _figure_bytes(fig: Figure) -> bytes:
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
            [f"{m}\n(n={d.size})" for m, d in zip(methods, data)],
            rotation=30,
            ha="right",
            fontsize=8,
        )
        ax.set_title(f"{label} — {cls}")
        ax.set_ylabel(f"per-case {label}")
        ax.grid(axis="y", alpha=0.3)
    caption = "box: quartiles, whiskers: 1.5 IQR, line: median, triangle: mean, dots: cases"
    fig.suptitle(f"Per-case {label} per loss ({caption})", fontsize=10)
    return fig


def precision_recall_figure(summary: pd.DataFrame, confidence: float = 0.95) -> Figure:
    """Mean precision against mean recall per method (with CI error bars), one panel per class.

    Points above the dashed diagonal favour precision, below it recall (the paper's recall-precision balance).

    Args:
        summary: output of :func:`~monai_mixedfocal.stats.summary_table` with ``precision`` and ``recall`` rows.
        confidence: the confidence level of ``summary`` (for the axis labels).

    Returns:
        The figure (caller closes it).
    """
    wide = summary[summary["metric"].isin(["precision", "recall"])].pivot_table(
        index=["class", "method"], columns="metric", values=["mean", "half_width"], sort=False, dropna=False
    )
    classes = list(dict.fromkeys(wide.index.get_level_values("class")))
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
                capsize=3,
                label=method,
            )
        lo, hi = ax.get_xlim()[0], ax.get_xlim()[1]
        lo, hi = min(lo, ax.get_ylim()[0]), max(hi, ax.get_ylim()[1])
        ax.plot([lo, hi], [lo, hi], "--", color="0.6", linewidth=1, label="precision = recall")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_xlabel(f"mean recall (± {_pct(confidence)} CI)")
        ax.set_ylabel(f"mean precision (± {_pct(confidence)} CI)")
        ax.set_title(f"Precision vs recall — {cls}")
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", fontsize=8, title="loss")
    return fig


def _class_names_by_label(class_names: Sequence[str] | Mapping[int, str]) -> dict[int, str]:
    if isinstance(class_names, Mapping):
        return {int(k): str(v) for k, v in class_names.items()}
    return {k: str(name) for k, name in enumerate(class_names, start=1)}


def _check_overlays(overlays: OverlayInput) -> None:
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
    _check_overlays(overlays)
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
        ax.set_title(f"({chr(ord('a') + k)}) {title}", fontsize=9)
    legend = [Patch(color=colours[k], label=names.get(k, f"label {k}")) for k in range(1, n_labels + 1)]
    fig.legend(handles=legend, loc="outside lower center", ncol=min(len(legend), 6), fontsize=8, frameon=False)
    fig.suptitle("Segmentations" + (f" of case {case_name}" if case_name else ""), fontsize=10)
    return fig


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


# ----------------------------------------------------------------------------------------------------- report


def _file_stem(cls: str, used: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", cls).strip("._") or "class"
    candidate, k = stem, 1
    while candidate.lower() in used:
        k += 1
        candidate = f"{stem}_{k}"
    used.add(candidate.lower())
    return candidate


def _pct(confidence: float) -> str:
    return f"{confidence * 100:g}%"


def _interval_text(pct: str, ci_over: str) -> str:
    """The Methods line of Table 1 for intervals over cases or over fold means."""
    formula = "(mean ± t(1 − α/2, n − 1) · s / √n, sample standard deviation s)"
    if ci_over == "folds":
        return (
            f"- Table 1: mean of the per-fold means ± half-width of the two-sided {pct} Student-t confidence interval "
            f"over the folds {formula}, n the number of folds. Undefined values (NaN, e.g. a class absent from both "
            "label and prediction) are skipped within each fold; the number of cases used is in the table below "
            "Table 1."
        )
    return (
        f"- Table 1: mean ± half-width of the two-sided {pct} Student-t confidence interval over cases {formula}. "
        "Undefined values (NaN, e.g. a class absent from both label and prediction) are skipped; the number of cases "
        "used is in the table below Table 1."
    )


def _methods_text(
    df: pd.DataFrame, test: str, correction: str, confidence: float, metric: str, ci_over: str = "cases"
) -> list[str]:
    folds = f", {df[stats.FOLD_COLUMN].nunique()} folds" if stats.FOLD_COLUMN in df.columns else ""
    pct = _pct(confidence)
    return [
        "## Methods",
        "",
        f"- Data: {df['case'].nunique()} cases{folds}, {df['method'].nunique()} methods (losses), "
        f"{df['class'].nunique()} classes: {', '.join(pd.unique(df['class']))}.",
        _interval_text(pct, ci_over),
        f"- Table 2: {TEST_DESCRIPTIONS[test]}, on per-case {METRIC_LABELS.get(metric, metric)}.",
        (
            "- p-values are not adjusted for multiple comparisons (`correction='none'`). "
            if correction == "none"
            else f"- p-values are adjusted with the {correction!r} method of "
            "`statsmodels.stats.multitest.multipletests` over all pairs of methods of one class (each class "
            "separately). "
        )
        + "Marks: * p < 0.05, ** p < 0.01, *** p < 0.001 "
        "(the paper prints a double dagger for p < 0.001). The sign after each p-value is that of the statistic of "
        "the row method against the column method: (+) row scores higher, (-) lower.",
        f"- Software: {_versions('scipy', 'statsmodels', 'pandas', 'numpy')} (the signed-rank test's p-value method "
        "depends on the scipy version).",
        "",
    ]


def _versions(*distributions: str) -> str:
    """``"scipy 1.17.1, statsmodels 0.14.5"``: the installed versions of ``distributions``."""
    return ", ".join(f"{name} {importlib.metadata.version(name)}" for name in distributions)


def write_report(
    df: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    test: str = "ranksum",
    overlays: OverlayInput | None = None,
    title: str = "Loss function comparison",
    *,
    metrics: Sequence[str] | None = None,
    test_metric: str | None = None,
    confidence: float = 0.95,
    ci_over: str = "cases",
    correction: str = "holm",
    overlay_case: str | None = None,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    digits: int = 3,
    notes: Sequence[str] = (),
) -> Path:
    """Write the full report (Markdown, CSV, LaTeX, PNG) of a per-case table into ``out_dir``.

    Every file is rendered in memory first and then written atomically, so a failure leaves no partial file.

    Args:
        df: per-case long table (validated here).
        out_dir: output folder (created if missing).
        test: ``"ranksum"`` (the paper's) or ``"signedrank"`` (paired).
        overlays: optional method -> ``(image_2d, label_2d, pred_2d)`` of one case slice for ``overlays.png``.
        title: the report title.
        metrics: metrics of Table 1; default all metric columns.
        test_metric: metric of the pairwise tests and box plots; default ``dsc`` if present, else the first metric.
        confidence: confidence level of the intervals.
        ci_over: intervals over ``"cases"`` or over the per-fold means, ``"folds"`` (see
            :func:`~monai_mixedfocal.stats.summary_table`).
        correction: multiple-comparison correction (see :func:`~monai_mixedfocal.stats.pairwise_tests`).
        overlay_case: case name shown on ``overlays.png``.
        class_names: names of label values 1, 2, ... for ``overlays.png``; default the classes of ``df`` in order.
        digits: decimals in Table 1.
        notes: paragraphs shown first, under the title (e.g. that a study is incomplete).

    Returns:
        Path of ``report.md``. The names of the files written are kept in ``report_files.txt``; files of an earlier
        report in ``out_dir`` that this one does not write again (e.g. ``pairwise_<class>.csv`` of a class no longer
        in the table) are removed, so that the folder holds one consistent report.

    Raises:
        ValueError: on invalid data or arguments, or when ``out_dir`` exists and is not a folder.
    """
    df = stats.validate_per_case(df)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"report output {out} exists and is not a folder")
    metrics = list(metrics) if metrics is not None else stats.metric_columns(df)
    test_metric = test_metric or ("dsc" if "dsc" in stats.metric_columns(df) else stats.metric_columns(df)[0])
    summary = stats.summary_table(df, metrics=metrics, confidence=confidence, ci_over=ci_over)
    pairs = stats.pairwise_tests(df, metric=test_metric, test=test, correction=correction)
    if overlays is not None:
        _check_overlays(overlays)

    files: dict[str, bytes] = {"summary.csv": summary.to_csv(index=False).encode()}
    cells, best = table1(summary, digits=digits)
    counts, _ = table1(stats.summary_table(df, metrics=metrics, confidence=confidence), value="n")
    label = METRIC_LABELS.get(test_metric, test_metric)
    md = [f"# {title}", "", *[line for note in notes for line in (f"> **Note:** {note}", "")]]
    md += _methods_text(df, test, correction, confidence, test_metric, ci_over)
    md += [f"## Table 1: mean ± {_pct(confidence)} confidence interval per loss and class", ""]
    md += [markdown_table(cells, best), "Bold: highest mean of each column.", ""]
    md += ["### Number of cases used (non-missing values)", "", markdown_table(counts), ""]
    tex = [latex_table(cells, best, caption=f"{title}: mean ± {_pct(confidence)} CI", label="tab:summary")]
    used: set[str] = set()
    p_kind = stats.p_value_kind(correction)
    if df["method"].nunique() < 2:
        md += ["(No Table 2: the pairwise tests need at least two methods.)", ""]
    for cls in pd.unique(pairs["class"]):
        stem = _file_stem(cls, used)
        files[f"pairwise_{stem}.csv"] = pairs[pairs["class"] == cls].to_csv(index=False).encode()
        matrix = pairwise_matrix(pairs, cls, methods=list(pd.unique(df["method"])))
        md += [f"## Table 2 ({cls}): {p_kind} p-values, {test} test on {label}", "", markdown_table(matrix), ""]
        caption = f"{p_kind.capitalize()} p-values of pairwise {test} tests on {label}, {cls} (row vs column)"
        tex.append(latex_table(matrix, caption=caption, label=f"tab:pairwise-{stem}"))
    files["summary.tex"] = "\n".join(tex).encode()

    files[f"boxplot_{test_metric}.png"] = _figure_bytes(boxplot_figure(df, test_metric))
    md += ["## Figures", "", f"![Per-case {label}](boxplot_{test_metric}.png)", ""]
    if {"precision", "recall"}.issubset(summary["metric"]):
        files["precision_recall.png"] = _figure_bytes(precision_recall_figure(summary, confidence))
        md += ["![Precision versus recall](precision_recall.png)", ""]
    else:
        md += ["(No precision-recall plot: the table lacks precision or recall.)", ""]
    if overlays is not None:
        names = class_names if class_names is not None else list(pd.unique(df["class"]))
        files["overlays.png"] = _figure_bytes(overlay_figure(overlays, names, overlay_case))
        md += [f"![Segmentations{' of case ' + overlay_case if overlay_case else ''}](overlays.png)", ""]
    files["report.md"] = "\n".join(md).encode()

    out.mkdir(parents=True, exist_ok=True)
    earlier = _earlier_report_files(out)
    files[REPORT_MANIFEST] = "".join(f"{name}\n" for name in sorted(files)).encode()
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
    for name in earlier - set(files):
        (out / name).unlink(missing_ok=True)
    return out / "report.md"


def _earlier_report_files(out: Path) -> set[str]:
    """The files the previous report in ``out`` wrote (its manifest), plain names only."""
    try:
        names = (out / REPORT_MANIFEST).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return set()
    return {name for name in names if name and name == Path(name).name}
