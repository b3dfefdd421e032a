# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Statistics of a loss-function study: confidence intervals and pairwise Wilcoxon tests over cases.

Everything works on a *per-case long table* (a :class:`pandas.DataFrame` or a CSV file) with one row per
(``case``, ``method``, ``class``) and one column per metric (any of ``dsc``, ``precision``, ``recall``, ``iou``, and
any extra numeric column); an optional ``fold`` column is kept and used to pair cases. A metric may be missing (NaN)
where it is undefined (in the tables of :mod:`monai_mixedfocal.metrics`, a class absent from both label and
prediction; other tools also leave, e.g., the precision of an empty prediction undefined): every statistic skips those
values and reports how many it used.

The methods follow Yeung et al. (2021), Section III-F:

- :func:`mean_ci`: mean +/- half-width of the two-sided Student-t confidence interval over cases (Tables 1 and 3).
- :func:`pairwise_tests`: Wilcoxon rank-sum tests (:func:`scipy.stats.ranksums`, the paper's test) or paired Wilcoxon
  signed-rank tests (:func:`scipy.stats.wilcoxon`) between every pair of methods, per class, with p-values adjusted by
  Holm-Bonferroni (:func:`statsmodels.stats.multitest.multipletests`) over all pairs of one class (Tables 2 and 4).
- :func:`significance_mark`: ``*`` p < 0.05, ``**`` p < 0.01, ``***`` p < 0.001 (the paper prints a double dagger for
  the last one).

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"case": ["a", "b", "a", "b"], "method": ["dice", "dice", "focal", "focal"],
    ...                    "class": "tumour", "dsc": [0.8, 0.7, 0.6, 0.5]})
    >>> summary_table(df)["mean"].round(3).tolist()
    [0.75, 0.55]
    >>> pairwise_tests(df)[["method_a", "method_b", "mark"]].values.tolist()
    [['focal', 'dice', '']]
"""

from __future__ import annotations

import itertools
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

__all__ = [
    "CI_OVER",
    "FOLD_COLUMN",
    "ID_COLUMNS",
    "KNOWN_METRICS",
    "MEAN_IOU_CLASS",
    "TESTS",
    "MeanCI",
    "load_per_case",
    "mean_ci",
    "metric_columns",
    "pairwise_tests",
    "read_csv_as_written",
    "significance_mark",
    "summary_table",
    "validate_per_case",
]

#: columns identifying one row of the per-case long table
ID_COLUMNS: tuple[str, ...] = ("case", "method", "class")
#: optional column with the cross-validation fold of a case; used with ``case`` to pair cases
FOLD_COLUMN = "fold"
#: metrics the study produces, in the order tables show them; other numeric columns are accepted after these
KNOWN_METRICS: tuple[str, ...] = ("dsc", "precision", "recall", "iou")
#: the ``class`` value of the extra "mean IoU across classes" rows of :func:`summary_table`
MEAN_IOU_CLASS = "all classes"
#: what the intervals of :func:`summary_table` are over: the cases, or the per-fold means (see its docstring)
CI_OVER: tuple[str, ...] = ("cases", "folds")
#: the pairwise tests offered by :func:`pairwise_tests`
TESTS: tuple[str, ...] = ("ranksum", "signedrank")
#: significance thresholds and marks, strictest first (the paper prints a double dagger for p < 0.001)
SIGNIFICANCE_MARKS: tuple[tuple[float, str], ...] = ((0.001, "***"), (0.01, "**"), (0.05, "*"))
#: statsmodels ``multipletests`` methods accepted as ``correction`` (plus ``"none"``)
_CORRECTIONS: tuple[str, ...] = (
    "holm",
    "bonferroni",
    "sidak",
    "holm-sidak",
    "simes-hochberg",
    "hommel",
    "fdr_bh",
    "fdr_by",
    "fdr_tsbh",
    "fdr_tsbky",
    "none",
)
#: two-stage corrections whose adjusted p-values depend on the level alpha (statsmodels computes them at 0.05)
_ALPHA_DEPENDENT: tuple[str, ...] = ("fdr_tsbh", "fdr_tsbky")
#: decimals of the paired differences of the signed-rank test (ties in decimal stay ties in binary)
DIFFERENCE_DECIMALS = 12
#: the text pandas reads as a missing value by default; in a per-case CSV only metric columns read them so
PANDAS_NA_MARKERS: tuple[str, ...] = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
)


class MeanCI(NamedTuple):
    """Mean of the finite values with the half-width of its confidence interval.

    Attributes:
        mean: sample mean (NaN when ``n == 0``).
        half_width: half-width of the two-sided t interval, so the interval is ``mean +/- half_width``; 0 for constant
            values, NaN when ``n < 2`` (a single value has no spread to estimate).
        n: number of values used (NaN values skipped).
    """

    mean: float
    half_width: float
    n: int


def mean_ci(values: Iterable[float] | np.ndarray | pd.Series, confidence: float = 0.95) -> MeanCI:
    """Mean and Student-t confidence interval over cases, skipping NaN values.

    The interval is ``mean +/- t_{(1 + confidence) / 2, n - 1} * s / sqrt(n)``, with ``s`` the sample standard deviation
    (``ddof=1``) and ``t`` the Student-t quantile (:func:`scipy.stats.t.ppf`). Constant values give a half-width of
    exactly 0; with a single value the half-width is NaN (undefined), with no values both mean and half-width are NaN.

    Args:
        values: per-case metric values; NaN entries are skipped (counted out of ``n``).
        confidence: confidence level, strictly between 0 and 1.

    Returns:
        :class:`MeanCI` ``(mean, half_width, n)``.

    Raises:
        ValueError: if ``confidence`` is not in (0, 1), or a value is infinite or not numeric.

    Example:
        >>> mean_ci([0.9, 0.8, 0.7]).n
        3
    """
    _check_confidence(confidence)
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError) as err:
        raise ValueError(f"mean_ci expects numeric values, got {values!r}: {err}") from err
    if np.isinf(arr).any():
        raise ValueError(f"mean_ci got infinite values: {arr[np.isinf(arr)].tolist()}")
    arr = arr[~np.isnan(arr)]
    n = int(arr.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, 0)
    mean = float(arr.mean())
    if n == 1:
        return MeanCI(mean, math.nan, 1)
    if np.ptp(arr) == 0:  # constant: avoid a rounding-noise standard deviation
        return MeanCI(float(arr[0]), 0.0, n)
    sem = float(arr.std(ddof=1)) / math.sqrt(n)
    return MeanCI(mean, float(sps.t.ppf((1.0 + confidence) / 2.0, n - 1)) * sem, n)


def significance_mark(p: float) -> str:
    """Significance mark of a p-value: ``"***"`` (p < 0.001), ``"**"`` (p < 0.01), ``"*"`` (p < 0.05), else ``""``.

    Thresholds are strict, as in the paper's table captions ("* p < 0.05, ** p < 0.01, double dagger p < 0.001"); a NaN
    p-value (no test possible) gets no mark.

    Args:
        p: a p-value in [0, 1] or NaN.

    Returns:
        The mark string.

    Raises:
        ValueError: if ``p`` is outside [0, 1].
    """
    p = float(p)
    if math.isnan(p):
        return ""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"significance_mark expects a p-value in [0, 1], got {p}")
    for threshold, mark in SIGNIFICANCE_MARKS:
        if p < threshold:
            return mark
    return ""


def p_value_kind(correction: str) -> str:
    """How the tables name the p-values of a correction: ``"unadjusted"`` for ``"none"``, else e.g.
    ``"holm-adjusted"``."""
    return "unadjusted" if correction == "none" else f"{correction}-adjusted"


def load_per_case(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a per-case CSV file (see :func:`validate_per_case`).

    ``case``, ``method``, ``class`` and ``fold`` are read as text, exactly as written: case identifiers such as
    ``00012`` keep their leading zeros and a method named ``None`` or ``NA`` is a name, not a missing value (an empty
    identifier is still an error). In metric columns pandas' missing-value markers (:data:`PANDAS_NA_MARKERS`, e.g.
    ``NA``, ``nan``, ``null``, an empty field) are NaN.

    Args:
        path: the CSV file.

    Returns:
        The validated per-case DataFrame.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file cannot be parsed as CSV or fails validation (the message names the file).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        csvs = sorted(name for name in os.listdir(path) if name.endswith(".csv"))
        hint = f" (it holds {', '.join(csvs[:5])})" if csvs else ""
        raise IsADirectoryError(f"{path} is a folder; give the per-case CSV file in it, e.g. per_case.csv{hint}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"per-case CSV not found: {path}")
    df = read_csv_as_written(path, (*ID_COLUMNS, FOLD_COLUMN))
    try:
        _check_header(df)
        return validate_per_case(df)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


#: the name pandas gives a column without a header (a DataFrame's index written by ``to_csv()`` without
#: ``index=False``)
_UNNAMED_COLUMN = re.compile(r"Unnamed: \d+")


def _check_header(df: pd.DataFrame) -> None:
    """The header problems of a per-case CSV that :func:`validate_per_case` would report without their likely cause:
    a column without a name (read as a metric otherwise), another delimiter, identifier columns in other letter case.

    Raises:
        ValueError: naming the problem and what to do.
    """
    header = [str(column) for column in df.columns]
    unnamed = [column for column in header if _UNNAMED_COLUMN.fullmatch(column)]
    if unnamed:
        raise ValueError(
            f"column(s) {unnamed} have no name in the header: a DataFrame's index saved by to_csv() without "
            "index=False? Remove them, or write the file with index=False"
        )
    if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
        raise ValueError(
            f"one column {header[0]!r}: the file is not comma-separated; write it with commas (pandas: sep=',')"
        )
    lower = {column.lower(): column for column in header}
    renamed = {lower[key]: key for key in (*ID_COLUMNS, FOLD_COLUMN) if key not in header and key in lower}
    if renamed:
        raise ValueError(f"column names are case-sensitive: rename {renamed} (expected {list(ID_COLUMNS)})")


def read_csv_as_written(path: str | os.PathLike[str], text_columns: Sequence[str]) -> pd.DataFrame:
    """Read a CSV file with ``text_columns`` as text, exactly as written, and pandas' missing-value markers
    (:data:`PANDAS_NA_MARKERS`) as NaN in every other column.

    An identifier stays what it is (``00012`` keeps its leading zeros, a method named ``None`` or ``NA`` is a name);
    an empty identifier is an empty string, for the caller's checks to refuse.

    Args:
        path: the CSV file.
        text_columns: the columns read as text (those missing from the file are ignored).

    Returns:
        The table, not validated.

    Raises:
        OSError: the file cannot be read.
        ValueError: ``<path>: not a readable CSV file (...)``.
    """
    dtypes = dict.fromkeys(text_columns, str)
    try:
        header = pd.read_csv(path, nrows=0, skipinitialspace=True).columns
        missing = {col: list(PANDAS_NA_MARKERS) for col in header if col not in dtypes}
        return pd.read_csv(path, dtype=dtypes, skipinitialspace=True, keep_default_na=False, na_values=missing)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV file ({err})") from err


def validate_per_case(df: pd.DataFrame) -> pd.DataFrame:
    """Check a per-case long table and return a normalised copy.

    Every column other than ``case``, ``method``, ``class`` and ``fold`` is a metric and must be numeric (NaN allowed,
    infinity not); the known metrics (:data:`KNOWN_METRICS`) are fractions in [0, 1]. Rows are identified by
    (``case``, ``method``, ``class``), plus ``fold`` when that column exists (a case may then appear in several folds,
    e.g. repeated cross-validation).

    Args:
        df: the per-case table.

    Returns:
        A copy with the identifier columns as ``str`` and the metric columns as ``float64``.

    Raises:
        TypeError: if ``df`` is not a DataFrame.
        ValueError: on an empty table, a missing identifier column, no metric column, a missing or blank identifier
            value, a duplicated row identifier, a non-numeric or infinite metric value, or a known metric outside
            [0, 1].
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in ID_COLUMNS if c not in df.columns]
    if missing:
        hint = (
            " (a bundle's per_case_metrics.csv holds one loss: collect runs with `study --collect-only`, or add a "
            "method column naming each row's loss, see docs/statistics.md)"
            if missing == ["method"]
            else " (one row per case, method and class; see docs/statistics.md)"
        )
        raise ValueError(
            f"missing required column(s) {missing}; expected {list(ID_COLUMNS)}, got {list(df.columns)}{hint}"
        )
    if df.empty:
        raise ValueError("the per-case table has no rows")
    keys = _key_columns(df)
    out = df.copy()
    for col in keys:
        stripped = out[col].astype(str).str.strip()
        blank = out[col].isna() | (stripped == "")
        if blank.any():
            rows = out.index[blank].tolist()[:5]
            raise ValueError(f"column {col!r} has missing or blank values (row index {rows})")
        out[col] = stripped
    dup = out.duplicated(subset=keys, keep=False)
    if dup.any():
        examples = out.loc[dup, keys].drop_duplicates().head(3).to_dict("records")
        raise ValueError(f"{int(dup.sum())} rows share a ({', '.join(keys)}) key, e.g. {examples}")
    metrics = [c for c in out.columns if c not in keys]
    if not metrics:
        raise ValueError(f"no metric column: expected some of {list(KNOWN_METRICS)} besides {keys}")
    for col in metrics:
        out[col] = _to_float(out[col], col)
        if col in KNOWN_METRICS:
            _check_fraction(out[col], col)
    return out


def metric_columns(df: pd.DataFrame) -> list[str]:
    """Metric columns of a per-case table: the known metrics first (in :data:`KNOWN_METRICS` order), then the others.

    Args:
        df: a per-case table.

    Returns:
        Column names.
    """
    keys = _key_columns(df)
    others = [c for c in df.columns if c not in keys]
    return [m for m in KNOWN_METRICS if m in others] + [c for c in others if c not in KNOWN_METRICS]


def summary_table(
    df: pd.DataFrame, metrics: Sequence[str] | None = None, confidence: float = 0.95, ci_over: str = "cases"
) -> pd.DataFrame:
    """Mean +/- confidence interval of each metric per method and class (the paper's Table 1), in long form.

    With ``ci_over="cases"`` the mean and the Student-t interval (:func:`mean_ci`) are over the per-case values. With
    ``ci_over="folds"`` each fold's values are averaged first and the mean and interval are over those fold means
    (``n`` is then the number of folds, ``n_missing`` still counts skipped cases). The paper does not say which it used,
    but its intervals are wider than any interval over cases can be: for values in [0, 1] the half-width over ``n``
    cases is at most ``t * 0.5 * sqrt(n / (n - 1)) / sqrt(n)``, 0.069 for its 204 KiTS19 cases and 0.053 for its 342
    BraTS20 cases, while its Tables 1 and 3 print up to 0.086 and 0.070; an interval over its five fold means fits.

    When ``iou`` is among the metrics and there are at least two classes, each method gets an extra row with class
    :data:`MEAN_IOU_CLASS`: per case, the mean IoU over the classes where it is defined, then mean and interval as
    above (with complete data the mean equals the mean of the per-class mean IoUs).

    Args:
        df: per-case table (validated here).
        metrics: metric columns to summarise; default: all of them (:func:`metric_columns`).
        confidence: confidence level of the intervals.
        ci_over: ``"cases"`` or ``"folds"`` (needs the ``fold`` column).

    Returns:
        DataFrame with columns ``method``, ``class``, ``metric``, ``mean``, ``half_width``, ``ci_low``, ``ci_high``,
        ``n`` (values used) and ``n_missing`` (NaN values skipped); methods and classes keep their order of first
        appearance, metrics the order of ``metrics``.

    Raises:
        ValueError: on invalid data, an unknown metric, an invalid confidence level, an unknown ``ci_over``, or
            ``ci_over="folds"`` without a ``fold`` column.
    """
    _check_confidence(confidence)
    if ci_over not in CI_OVER:
        raise ValueError(f"ci_over must be one of {CI_OVER}, got {ci_over!r}")
    df = validate_per_case(df)
    if ci_over == "folds" and FOLD_COLUMN not in df.columns:
        raise ValueError(f"ci_over='folds' needs a {FOLD_COLUMN!r} column in the per-case table")
    by_fold = ci_over == "folds"
    if by_fold:
        _warn_of_few_folds(df[FOLD_COLUMN].nunique(), confidence)
    metrics = _select_metrics(df, metrics)
    methods = list(pd.unique(df["method"]))
    classes = list(pd.unique(df["class"]))
    rows: list[dict[str, object]] = []
    for method, cls in itertools.product(methods, classes):
        sub = df[(df["method"] == method) & (df["class"] == cls)]
        if sub.empty:
            continue
        rows.extend(_summary_row(method, cls, metric, sub[metric], confidence, sub, by_fold) for metric in metrics)
    if "iou" in metrics and len(classes) > 1:
        if MEAN_IOU_CLASS in classes:
            raise ValueError(f"class name {MEAN_IOU_CLASS!r} is reserved for the mean IoU over classes")
        case_keys = [c for c in _key_columns(df) if c != "class"]
        per_case = df.groupby(case_keys, sort=False)["iou"].mean()  # skips NaN, NaN when all classes are NaN
        for method in methods:
            values = per_case.xs(method, level="method")
            cases = values.reset_index()
            rows.append(_summary_row(method, MEAN_IOU_CLASS, "iou", values, confidence, cases, by_fold))
    return pd.DataFrame(
        rows, columns=["method", "class", "metric", "mean", "half_width", "ci_low", "ci_high", "n", "n_missing"]
    )


def pairwise_tests(
    df: pd.DataFrame,
    metric: str = "dsc",
    test: str = "ranksum",
    correction: str = "holm",
    zero_method: str = "wilcox",
) -> pd.DataFrame:
    """Pairwise Wilcoxon tests of one metric between all methods, per class, with multiple-comparison correction.

    For methods listed in order of first appearance ``m_0, m_1, ...``, each class gets one row per pair with
    ``method_a = m_i`` and ``method_b = m_j`` for ``i > j``: the lower triangle of the paper's matrix, row compared
    with column. The p-values of one class are adjusted together (Holm-Bonferroni by default, over all the pairs of that
    class that could be tested); classes are corrected separately, as in the paper.

    - ``test="ranksum"``: :func:`scipy.stats.ranksums` on the non-missing values of each method (unpaired, the paper's
      choice); ``statistic`` is its z statistic.
    - ``test="signedrank"``: :func:`scipy.stats.wilcoxon` on the differences ``a - b`` of the cases (matched by
      ``case``, and ``fold`` if present) where both values exist; zero differences are handled by ``zero_method``
      (scipy's, ``"wilcox"`` drops them). ``statistic`` is the normal-approximation z of the signed-rank sum of
      positive differences (:func:`scipy.stats.wilcoxon` with ``method="approx"``, ``alternative="greater"``, tie
      corrected), and ``p_raw`` is scipy's default two-sided p-value (``method="auto"``, see docs/statistics.md).
      The differences are rounded to :data:`DIFFERENCE_DECIMALS` decimals, so that differences equal in decimal
      (``0.78 - 0.76`` and ``0.94 - 0.92``) are ties.
      When all differences are zero the methods are indistinguishable: ``statistic = 0`` and ``p_raw = 1``.

    In both cases a positive statistic means ``method_a`` tends to score higher than ``method_b``. A pair with no data
    for one of the methods (or no common case for the paired test) has NaN p-values, no mark, and does not count in the
    correction.

    Args:
        df: per-case table (validated here).
        metric: the metric column to compare.
        test: ``"ranksum"`` or ``"signedrank"``.
        correction: a :func:`statsmodels.stats.multitest.multipletests` method (``"holm"``, ``"bonferroni"``,
            ``"fdr_bh"``, ...) or ``"none"``.
        zero_method: zero-difference handling of the signed-rank test (``"wilcox"``, ``"pratt"`` or ``"zsplit"``).

    Returns:
        DataFrame with columns ``class``, ``method_a``, ``method_b``, ``test``, ``n_a``, ``n_b`` (values used per
        method), ``n_pairs`` (matched cases, signed-rank only, else NaN), ``statistic``, ``p_raw``, ``p_adjusted``,
        ``mark`` (:func:`significance_mark` of ``p_adjusted``; for the two-stage corrections ``"fdr_tsbh"`` and
        ``"fdr_tsbky"``, whose adjusted p-values statsmodels computes for alpha = 0.05, the mark is the strictest
        level at which the procedure itself rejects, and ``p_adjusted`` is the one for 0.05).

    Raises:
        ValueError: on invalid data, an unknown metric, test, correction or zero method.
    """
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; expected one of {list(TESTS)}")
    if correction not in _CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; expected one of {list(_CORRECTIONS)}")
    if zero_method not in ("wilcox", "pratt", "zsplit"):
        raise ValueError(f"unknown zero_method {zero_method!r}; expected 'wilcox', 'pratt' or 'zsplit'")
    df = validate_per_case(df)
    (metric,) = _select_metrics(df, [metric])
    pair_keys = [c for c in _key_columns(df) if c not in ("method", "class")]
    methods = list(pd.unique(df["method"]))
    if len(methods) < 2:
        warnings.warn(f"pairwise_tests needs at least two methods, got {methods}: no test", stacklevel=2)
    frames = []
    for cls in pd.unique(df["class"]):
        sub = df[df["class"] == cls]
        series = {m: sub.loc[sub["method"] == m].set_index(pair_keys)[metric].dropna() for m in methods}
        rows = []
        for i, j in itertools.combinations(range(len(methods)), 2):
            a, b = methods[j], methods[i]  # a = later method (matrix row), b = earlier one (matrix column)
            rows.append(
                {
                    "class": cls,
                    "method_a": a,
                    "method_b": b,
                    "test": test,
                    **_one_test(series[a], series[b], test, zero_method),
                }
            )
        frames.append(_adjust(pd.DataFrame(rows), correction))
    unmatched = [
        f"{row['method_a']} vs {row['method_b']} ({row['class']})"
        for frame in frames
        for row in frame.to_dict("records")
        if row["n_pairs"] == 0 and row["n_a"] and row["n_b"]
    ]
    if unmatched:
        warnings.warn(
            f"no case in common for {len(unmatched)} pair(s), not tested: {', '.join(unmatched[:5])}"
            f"{', ...' if len(unmatched) > 5 else ''}; the paired test matches cases by {' and '.join(pair_keys)}, "
            "written alike for every method",
            stacklevel=2,
        )
    columns = [
        "class",
        "method_a",
        "method_b",
        "test",
        "n_a",
        "n_b",
        "n_pairs",
        "statistic",
        "p_raw",
        "p_adjusted",
        "mark",
    ]
    if not frames or all(f.empty for f in frames):
        return pd.DataFrame(columns=columns)
    return pd.concat([f for f in frames if not f.empty], ignore_index=True)[columns]


# --------------------------------------------------------------------------------------------------- helpers


def _check_confidence(confidence: float) -> None:
    if not isinstance(confidence, (int, float)) or not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be a number strictly between 0 and 1, got {confidence!r}")


def _key_columns(df: pd.DataFrame) -> list[str]:
    return [*ID_COLUMNS, FOLD_COLUMN] if FOLD_COLUMN in df.columns else list(ID_COLUMNS)


def _to_float(column: pd.Series, name: str) -> pd.Series:
    """Convert a metric column to float, rejecting text that is not a number and infinite values."""
    if pd.api.types.is_bool_dtype(column):
        raise ValueError(f"metric column {name!r} is boolean; expected numbers")
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & column.notna()
    if bad.any():
        examples = column[bad].head(3).tolist()
        raise ValueError(
            f"metric column {name!r} has non-numeric values {examples} (row index {column.index[bad][:3].tolist()})"
        )
    values = values.astype("float64")
    if np.isinf(values).any():
        raise ValueError(
            f"metric column {name!r} has infinite values (row index {column.index[np.isinf(values)][:3].tolist()})"
        )
    return values


def _check_fraction(values: pd.Series, name: str) -> None:
    """A known metric (:data:`KNOWN_METRICS`) is a fraction: refuse values outside [0, 1] (NaN allowed)."""
    outside = (values < 0) | (values > 1)
    if outside.any():
        examples = values[outside].head(3).tolist()
        raise ValueError(
            f"metric column {name!r} has values outside [0, 1]: {examples} (row index "
            f"{values.index[outside][:3].tolist()}); {name} is a fraction: divide percentages by 100, or give another "
            "metric another column name"
        )


def _select_metrics(df: pd.DataFrame, metrics: Sequence[str] | None) -> list[str]:
    available = metric_columns(df)
    if metrics is None:
        return available
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = [m for m in metrics if m not in available]
    if unknown or not metrics:
        raise ValueError(f"unknown metric(s) {unknown or list(metrics)}; the table has {available}")
    return list(dict.fromkeys(metrics))


def _warn_of_few_folds(n_folds: int, confidence: float) -> None:
    """Warn when an interval over ``n_folds`` fold means is undefined (one fold) or rests on one degree of freedom."""
    if n_folds == 1:
        reason = "an interval over one fold mean is undefined (shown as n=1)"
    elif n_folds == 2:
        t = float(sps.t.ppf((1.0 + confidence) / 2.0, 1))
        reason = (
            f"the interval over 2 fold means has 1 degree of freedom (t = {t:.1f}), so it is very wide and unstable"
        )
    else:
        return
    warnings.warn(
        f"ci_over='folds' with {n_folds} fold(s): {reason}; ci_over='cases' gives intervals over the cases",
        stacklevel=3,
    )


def _summary_row(
    method: str, cls: str, metric: str, values: pd.Series, confidence: float, rows: pd.DataFrame, by_fold: bool
) -> dict[str, object]:
    """One row of :func:`summary_table`: ``values`` are the per-case values, ``rows`` the table rows they come from."""
    if by_fold:  # the mean of each fold (NaN skipped), then the interval over those means
        ci = mean_ci(values.groupby(rows[FOLD_COLUMN].to_numpy(), sort=True).mean().to_numpy(dtype=float), confidence)
    else:
        ci = mean_ci(values.to_numpy(dtype=float), confidence)
    return {
        "method": method,
        "class": cls,
        "metric": metric,
        "mean": ci.mean,
        "half_width": ci.half_width,
        "ci_low": ci.mean - ci.half_width,
        "ci_high": ci.mean + ci.half_width,
        "n": ci.n,
        "n_missing": int(values.isna().sum()),
    }


def _one_test(a: pd.Series, b: pd.Series, test: str, zero_method: str) -> dict[str, float]:
    """Statistic and raw p-value of one pair; NaN when there is nothing to compare."""
    out = {"n_a": len(a), "n_b": len(b), "n_pairs": math.nan, "statistic": math.nan, "p_raw": math.nan}
    if test == "ranksum":
        if len(a) and len(b):
            res = sps.ranksums(a.to_numpy(), b.to_numpy())
            out.update(statistic=float(res.statistic), p_raw=float(res.pvalue))
        return out
    paired = pd.concat({"a": a, "b": b}, axis=1, join="inner")
    # rounded so that differences equal in decimal are ties (0.78 - 0.76 and 0.94 - 0.92 differ in binary by 1e-16,
    # which would rank them apart and drop their tie correction)
    diff = np.round((paired["a"] - paired["b"]).to_numpy(dtype=float), DIFFERENCE_DECIMALS)
    out["n_pairs"] = len(diff)
    if len(diff) == 0:
        return out
    if np.all(diff == 0):  # identical on every case: no evidence of a difference
        out.update(statistic=0.0, p_raw=1.0)
        return out
    signed = sps.wilcoxon(diff, zero_method=zero_method, method="approx", alternative="greater")
    res = sps.wilcoxon(diff, zero_method=zero_method)
    out.update(statistic=float(signed.zstatistic), p_raw=float(res.pvalue))
    return out


def _adjust(rows: pd.DataFrame, correction: str) -> pd.DataFrame:
    """Add ``p_adjusted`` (over the finite p-values of one class) and ``mark``."""
    if rows.empty:
        return rows
    rows["p_adjusted"] = math.nan
    finite = rows["p_raw"].notna()
    if finite.any():
        p = rows.loc[finite, "p_raw"].to_numpy(dtype=float)
        with np.errstate(divide="ignore"):  # Sidak's log1p(-p) at p = 1 (identical methods): the result is 1, exact
            rows.loc[finite, "p_adjusted"] = p if correction == "none" else multipletests(p, method=correction)[1]
    rows["mark"] = [significance_mark(p) for p in rows["p_adjusted"]]
    if correction in _ALPHA_DEPENDENT and finite.any():
        # the two-stage adjusted p-values hold for alpha = 0.05 only: mark what the procedure rejects at each level
        marks = pd.Series("", index=rows.index[finite])
        for threshold, mark in reversed(SIGNIFICANCE_MARKS):  # loosest first, stricter levels overwrite
            rejected = multipletests(p, alpha=threshold, method=correction)[0]
            marks[rejected] = mark
        rows.loc[finite, "mark"] = marks
    return rows
