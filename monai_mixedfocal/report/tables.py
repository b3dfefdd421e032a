# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The paper's tables as text: Table 1 (mean +/- confidence interval per method and class) and Table 2 (the matrix
of adjusted pairwise p-values), in Markdown and LaTeX (``booktabs``), and the p-value format they share.

Public so that the command line (``python -m monai_mixedfocal stats``) and notebooks print the same tables as the
report (:func:`monai_mixedfocal.report.write_report`). Needs no plotting library.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from monai_mixedfocal import stats

__all__ = [
    "METRIC_LABELS",
    "bold_rule",
    "confidence_percent",
    "format_p",
    "latex_escape",
    "latex_table",
    "markdown_escape",
    "markdown_table",
    "one_line",
    "pairwise_matrix",
    "summary_classes",
    "table1",
]

#: display names of the known metrics; other metric columns are shown by their column name
METRIC_LABELS: dict[str, str] = {"dsc": "DSC", "precision": "Precision", "recall": "Recall", "iou": "IoU"}


def confidence_percent(confidence: float) -> str:
    """``"95%"`` for a confidence level of 0.95."""
    return f"{confidence * 100:g}%"


def interval_description(confidence: float, ci_over: str, short: bool = False) -> str:
    """What Table 1's intervals are: ``"95% t confidence interval over cases"`` (``ci_over="cases"``) or ``"... over
    fold means"``; with ``short``, ``"95% CI over cases"`` (for a LaTeX caption)."""
    over = "cases" if ci_over == "cases" else "fold means"
    return f"{confidence_percent(confidence)} {'CI' if short else 't confidence interval'} over {over}"


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


def bold_rule(metrics: Sequence[str]) -> str:
    """Which cells of Table 1 with ``metrics`` are bold, as the report says under the table: the highest mean of each
    column of a known metric (:data:`~monai_mixedfocal.stats.KNOWN_METRICS`, higher is better); the direction of other
    metrics (a distance such as HD95: lower is better) is not known, so they are not marked."""
    unmarked = [metric for metric in dict.fromkeys(metrics) if metric not in stats.KNOWN_METRICS]
    rule = "highest mean of each column"
    if unmarked:
        rule += f" ({', '.join(unmarked)} not marked: which direction is better is not known)"
    return rule + "."


def summary_classes(summary: pd.DataFrame) -> list[str]:
    """The classes of a :func:`~monai_mixedfocal.stats.summary_table` in the per-case table's order, as the box plots
    and Table 2 show them.

    The summary lists its rows method by method, each method's classes in the per-case table's order. A method without
    some class leaves it out, so the order of first appearance can differ (classes A, C of a first method, then A, B, C
    of a second, gave A, C, B): each method's classes are merged in, a class not yet placed going before the first of
    the classes that follow it in that method.

    Args:
        summary: output of :func:`~monai_mixedfocal.stats.summary_table` (or the same rows in another order).

    Returns:
        The class names, each once.
    """
    order: list[str] = []
    for _, rows in summary.groupby("method", sort=False):
        listed = list(dict.fromkeys(rows["class"]))
        for k, cls in enumerate(listed):
            if cls not in order:
                placed_after = [order.index(other) for other in listed[k + 1 :] if other in order]
                order.insert(min(placed_after, default=len(order)), cls)
    return order


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
        mean of each column of a known metric (the paper's boldface, :func:`bold_rule`; always False for
        ``value="n"``).

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
    columns = [(c, m) for c in summary_classes(summary) for (c2, m) in columns if c2 == c]
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
    best.loc[:, [metric not in stats.KNOWN_METRICS for _, metric in columns]] = False  # direction unknown (hd95)
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


def one_line(text: object) -> str:
    """``text`` as a string on one line: each run of whitespace, newlines included, becomes one space.

    A newline would end a Markdown heading or table row early, and a blank line would end a LaTeX caption.
    """
    return " ".join(str(text).split())


#: what Markdown could read as markup anywhere in a line, to escape with a backslash: the characters below, and ``_``
#: except between two letters or digits (``mixed_focal``), where CommonMark and GFM never read it as emphasis
_MARKDOWN_SPECIAL = re.compile(r"[\\`*\[\]<>#|~$]|&(?=#?\w+;)|(?<![^\W_])_|_(?![^\W_])")


def markdown_escape(text: object) -> str:
    r"""``text`` on one line (:func:`one_line`) with a backslash before each Markdown character (``\``, ```` ` ````,
    ``*``, ``[``, ``]``, ``<``, ``>``, ``#``, ``|``, ``~``, ``$``, ``&`` that starts an entity, and ``_`` but within a
    word), so that it prints as written: ``0.01*`` keeps its asterisk, ``<loss>`` is not read as an HTML tag,
    ``a~~b~~`` is not struck through, ``&lt;`` is not an entity, ``$x$`` is not GitHub's math and a title ending in
    ``#`` keeps it, while names such as ``mixed_focal/fold_0`` or ``tumour & cyst`` stay readable in the Markdown text.

    Example:
        >>> print(markdown_escape("focal_tversky *v2*   run #3 _x_"))
        focal_tversky \*v2\* run \#3 \_x\_
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\g<0>", one_line(text))


def _plain_cell(text: object) -> str:
    """A cell of a plain (unescaped) Markdown table: one line, ``|`` escaped so that it stays in its column."""
    return one_line(text).replace("|", r"\|")


def markdown_table(cells: pd.DataFrame, best: pd.DataFrame | None = None, escape: bool = True) -> str:
    """Render a DataFrame of strings (index included) as a GitHub Markdown table with aligned columns.

    Args:
        cells: the table; the index becomes the first column (its name the header).
        best: optional boolean DataFrame of the same shape; True cells are set in bold.
        escape: escape the Markdown characters of every cell (:func:`markdown_escape`) so that significance marks
            print as asterisks and a name such as ``<loss>`` is not read as an HTML tag; use False for plain terminal
            output, where only ``|`` is escaped (a name ``a|b`` would add a column). Either way each cell is put on one
            line (:func:`one_line`).

    Returns:
        The table text, ending with a newline.
    """
    esc: Callable[[object], str] = markdown_escape if escape else _plain_cell
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
    """Escape the LaTeX special characters of ``text`` (and write ``±``, ``−``, ``×`` as math), on one line
    (:func:`one_line`)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in one_line(text))


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
