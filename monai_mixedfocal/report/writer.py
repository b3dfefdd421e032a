# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The report folder of a loss study: its tables (Markdown, CSV, LaTeX) and figures (PNG), written together.

:func:`write_report` turns a per-case long table (see :mod:`monai_mixedfocal.stats`) into a folder holding

- ``report.md``: the methods used, Table 1 (mean +/- 95% CI per method and class), the number of cases used, and
  Table 2 (per class, the lower-triangular matrix of adjusted pairwise p-values with marks and statistic signs);
- ``summary.csv`` (the long summary), ``summary.tex`` (the same tables in LaTeX, ``booktabs`` style) and
  ``pairwise_<class>.csv`` (every test with raw and adjusted p-values);
- ``boxplot_<metric>.png`` (per-case values per method and class), ``precision_recall.png`` (mean precision against
  mean recall per method, the paper's recall-precision balance) and, with ``overlays``, ``overlays.png`` (the paper's
  Fig. 3: ground truth and each method's segmentation of one slice).

The tables come from :mod:`~monai_mixedfocal.report.tables`, the figures from :mod:`~monai_mixedfocal.report.figures`.

Example:
    >>> import pandas as pd, tempfile
    >>> df = pd.DataFrame({"case": list("abcabc"), "method": ["dice"] * 3 + ["focal"] * 3, "class": "tumour",
    ...                    "dsc": [0.8, 0.7, 0.9, 0.6, 0.5, 0.7]})
    >>> write_report(df, tempfile.mkdtemp()).name
    'report.md'
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from monai_mixedfocal import stats
from monai_mixedfocal.report.figures import (
    OverlayInput,
    boxplot_figure,
    check_overlays,
    figure_png,
    overlay_figure,
    overlay_title,
    precision_recall_figure,
)
from monai_mixedfocal.report.tables import (
    METRIC_LABELS,
    bold_rule,
    confidence_percent,
    interval_description,
    latex_table,
    markdown_escape,
    markdown_table,
    pairwise_matrix,
    table1,
)
from monai_mixedfocal.utils import atomic_write_bytes

__all__ = ["REPORT_MANIFEST", "TEST_DESCRIPTIONS", "write_report"]

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
#: the file of a report folder that lists the report's files (to remove an earlier report's leftovers)
REPORT_MANIFEST = "report_files.txt"


def _file_stem(name: str, used: set[str], fallback: str = "class") -> str:
    """``name`` as a file-name stem of letters, digits, ``.``, ``_`` and ``-``, different from the stems in ``used``
    (case-insensitively, and added to it); ``fallback`` when nothing of ``name`` is left."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or fallback
    candidate, k = stem, 1
    while candidate.lower() in used:
        k += 1
        candidate = f"{stem}_{k}"
    used.add(candidate.lower())
    return candidate


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
    folds = f", {_count(df[stats.FOLD_COLUMN].nunique(), 'fold')}" if stats.FOLD_COLUMN in df.columns else ""
    pct = confidence_percent(confidence)
    classes = ", ".join(map(markdown_escape, pd.unique(df["class"])))
    data = (
        f"- Data: {_count(df['case'].nunique(), 'case')}{folds}, {_count(df['method'].nunique(), 'method')} (losses), "
        f"{_count(df['class'].nunique(), 'class', 'classes')}: {classes}."
    )
    if df["method"].nunique() < 2:
        return ["## Methods", "", data, _interval_text(pct, ci_over), _software_text(), ""]
    return [
        "## Methods",
        "",
        data,
        _interval_text(pct, ci_over),
        f"- Table 2: {TEST_DESCRIPTIONS[test]}, on per-case {markdown_escape(METRIC_LABELS.get(metric, metric))}.",
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
        _software_text(),
        "",
    ]


def _count(number: int, singular: str, plural: str | None = None) -> str:
    """``"1 fold"``, ``"5 folds"``."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def _software_text() -> str:
    return (
        f"- Software: {_versions('scipy', 'statsmodels', 'pandas', 'numpy')} (the signed-rank test's p-value method "
        "depends on the scipy version)."
    )


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
    with warnings.catch_warnings():  # one method: the report itself says that there is no Table 2
        warnings.filterwarnings("ignore", message="pairwise_tests needs at least two methods")
        pairs = stats.pairwise_tests(df, metric=test_metric, test=test, correction=correction)
    if overlays is not None:
        check_overlays(overlays)

    files: dict[str, bytes] = {"summary.csv": summary.to_csv(index=False).encode()}
    cells, best = table1(summary, digits=digits)
    counts, _ = table1(stats.summary_table(df, metrics=metrics, confidence=confidence), value="n")
    label = METRIC_LABELS.get(test_metric, test_metric)
    md = [
        f"# {markdown_escape(title)}",
        "",
        *[line for note in notes for line in (f"> **Note:** {markdown_escape(note)}", "")],
    ]
    md += _methods_text(df, test, correction, confidence, test_metric, ci_over)
    md += [f"## Table 1: mean ± {interval_description(confidence, ci_over)}, per loss and class", ""]
    md += [markdown_table(cells, best), f"Bold: {bold_rule(metrics)}", ""]
    md += ["### Number of cases used (non-missing values)", "", markdown_table(counts), ""]
    caption = f"{title}: mean ± {interval_description(confidence, ci_over, short=True)}"
    tex = [latex_table(cells, best, caption=caption, label="tab:summary")]
    used: set[str] = set()
    p_kind = stats.p_value_kind(correction)
    if df["method"].nunique() < 2:
        md += ["(No Table 2: the pairwise tests need at least two methods.)", ""]
    for cls in pd.unique(pairs["class"]):
        stem = _file_stem(cls, used)
        files[f"pairwise_{stem}.csv"] = pairs[pairs["class"] == cls].to_csv(index=False).encode()
        matrix = pairwise_matrix(pairs, cls, methods=list(pd.unique(df["method"])))
        heading = f"## Table 2 ({markdown_escape(cls)}): {p_kind} p-values, {test} test on {markdown_escape(label)}"
        md += [heading, "", markdown_table(matrix), ""]
        caption = f"{p_kind.capitalize()} p-values of pairwise {test} tests on {label}, {cls} (row vs column)"
        tex.append(latex_table(matrix, caption=caption, label=f"tab:pairwise-{stem}"))
    files["summary.tex"] = "\n".join(tex).encode()

    boxplot = (
        f"boxplot_{_file_stem(test_metric, set(), 'metric')}.png"  # a metric column may be named "HD95 (mm)" or "a/b"
    )
    files[boxplot] = figure_png(boxplot_figure(df, test_metric))
    md += ["## Figures", "", f"![Per-case {markdown_escape(label)}]({boxplot})", ""]
    if {"precision", "recall"}.issubset(summary["metric"]):
        files["precision_recall.png"] = figure_png(precision_recall_figure(summary, confidence, ci_over))
        md += ["![Precision versus recall](precision_recall.png)", ""]
    else:
        md += ["(No precision-recall plot: the table lacks precision or recall.)", ""]
    if overlays is not None:
        names = class_names if class_names is not None else list(pd.unique(df["class"]))
        files["overlays.png"] = figure_png(overlay_figure(overlays, names, overlay_case))
        md += [f"![{markdown_escape(overlay_title(overlay_case))}](overlays.png)", ""]
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
