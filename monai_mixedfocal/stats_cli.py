# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The ``stats`` command: Table 1 and Table 2 of any per-case CSV, and optionally the full report.

Usage::

    python -m monai_mixedfocal stats per_case.csv [--out DIR] [--test ranksum|signedrank]
        [--metrics dsc precision recall] [--test-metric dsc] [--correction holm] [--confidence 0.95]
        [--ci-over cases|folds]

The CSV needs the columns ``case``, ``method``, ``class`` and metric columns (``dsc``, ``precision``, ``recall``,
``iou`` or others), optionally ``fold``. Tables go to stdout; ``--out`` also writes the report
(:func:`monai_mixedfocal.report.write_report`). Bad input prints one ``error:`` line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from monai_mixedfocal import stats
from monai_mixedfocal.cli_errors import print_error

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``stats`` sub-command to an ``argparse`` sub-parsers object.

    Args:
        subparsers: the object returned by :meth:`argparse.ArgumentParser.add_subparsers`.

    Returns:
        The new sub-parser (its ``func`` default is :func:`run`).
    """
    parser = subparsers.add_parser(
        "stats",
        help="mean ± CI tables and pairwise Wilcoxon tests of a per-case CSV",
        description=(
            "Print Table 1 (mean ± CI per method and class) and Table 2 (pairwise Wilcoxon tests, p-values adjusted "
            "by --correction, Holm by default) of a per-case CSV with columns case, method, class and metric columns "
            "(dsc, precision, recall, iou, ...)."
        ),
    )
    parser.add_argument("csv", help="per-case CSV file")
    parser.add_argument("--out", default=None, help="also write the full report (Markdown, CSV, LaTeX, PNG) here")
    parser.add_argument(
        "--test",
        choices=stats.TESTS,
        default="ranksum",
        help="ranksum: unpaired Wilcoxon rank-sum (the paper's); signedrank: paired Wilcoxon signed-rank",
    )
    parser.add_argument("--metrics", nargs="+", default=None, help="metrics of Table 1 (default: all metric columns)")
    parser.add_argument("--test-metric", default=None, help="metric of the pairwise tests (default: dsc, if present)")
    parser.add_argument("--correction", default="holm", help="multipletests method, or 'none' (default: holm)")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals")
    parser.add_argument(
        "--ci-over",
        choices=stats.CI_OVER,
        default="cases",
        help="intervals over the cases or over the per-fold means (needs a fold column; default: cases)",
    )
    parser.add_argument("--title", default="Loss function comparison", help="report title (with --out)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the ``stats`` command.

    Args:
        args: parsed arguments of the ``stats`` sub-parser.

    Returns:
        0 on success, 2 on bad input (with a one-line message on stderr).
    """
    from monai_mixedfocal import report  # matplotlib is only needed here, not to build the parser

    try:
        df = stats.load_per_case(args.csv)
        available = stats.metric_columns(df)
        test_metric = args.test_metric or ("dsc" if "dsc" in available else available[0])
        summary = stats.summary_table(df, metrics=args.metrics, confidence=args.confidence, ci_over=args.ci_over)
        pairs = stats.pairwise_tests(df, metric=test_metric, test=args.test, correction=args.correction)
        if args.out is not None:
            path = report.write_report(
                df,
                args.out,
                test=args.test,
                title=args.title,
                metrics=args.metrics,
                test_metric=test_metric,
                confidence=args.confidence,
                ci_over=args.ci_over,
                correction=args.correction,
            )
    except (OSError, ValueError) as err:
        print_error(err, one_line=True)
        return 2
    _print_tables(args, df, summary, pairs, test_metric)  # a closed stdout (`| head`): cli.main stops quietly
    if args.out is not None:
        print(f"report written to {path}")
    return 0


def _print_tables(
    args: argparse.Namespace, df: pd.DataFrame, summary: pd.DataFrame, pairs: pd.DataFrame, test_metric: str
) -> None:
    """Print Table 1, the case counts and the Table 2 matrices as plain Markdown."""
    from monai_mixedfocal import report

    cells, best = report.table1(summary)
    counts, _ = report.table1(stats.summary_table(df, metrics=args.metrics), value="n")  # cases, whatever --ci-over
    print(f"Table 1: mean ± {report.interval_description(args.confidence, args.ci_over)}")
    print(report.markdown_table(cells, best, escape=False))
    print(f"Bold (**): {report.bold_rule(args.metrics or stats.metric_columns(df))}")
    print("Cases used (non-missing values):")
    print(report.markdown_table(counts, escape=False))
    label = report.METRIC_LABELS.get(test_metric, test_metric)
    kind = stats.p_value_kind(args.correction)
    for cls in dict.fromkeys(pairs["class"]):
        print(f"Table 2 ({cls}): {kind} p-values, {args.test} test on {label}, row vs column")
        print(
            report.markdown_table(report.pairwise_matrix(pairs, cls, list(dict.fromkeys(df["method"]))), escape=False)
        )
    print("Marks: * p < 0.05, ** p < 0.01, *** p < 0.001; (+)/(-): sign of the statistic, row method vs column method.")
