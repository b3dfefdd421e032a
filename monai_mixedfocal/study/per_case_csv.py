# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""A run's per-case metrics CSV (``eval/per_case_metrics.csv``), read and checked to be complete.

The study counts a run as finished only when its CSV is whole: a file cut short (a copy back from a cluster job that
stopped half-way, a disk that filled up) or written for another split would otherwise enter the statistics as if it
were the run's result. :func:`read_per_case_csv` reads it with the statistics' own reader and checks, and adds the
checks only the study can make: every class of every case, and exactly the validation cases of the run's fold.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from monai_mixedfocal.stats import KNOWN_METRICS, read_csv_as_written, validate_per_case

__all__ = ["PER_CASE_METRICS", "PER_CASE_REQUIRED", "read_per_case_csv"]

#: the columns of the per-case CSV that the study reads (the bundles' writer adds the class index and the counts)
PER_CASE_REQUIRED: tuple[str, ...] = ("case", "class", *KNOWN_METRICS, "absent")
#: the metric columns of the per-case CSV (the study's metrics, :data:`~monai_mixedfocal.stats.KNOWN_METRICS`)
PER_CASE_METRICS: tuple[str, ...] = KNOWN_METRICS
_TRUE, _FALSE = frozenset({"true", "1", "1.0"}), frozenset({"false", "0", "0.0"})


def read_per_case_csv(
    path: str | os.PathLike, cases: Sequence[str] | None = None, classes: Sequence[Sequence[str]] | None = None
) -> pd.DataFrame:
    """Read a run's per-case metrics CSV and check that it is complete.

    The checks: the columns :data:`PER_CASE_REQUIRED`; ``absent`` true or false; numeric, finite metrics in [0, 1],
    missing only where ``absent`` is true (a row cut short lacks them); no blank or repeated (case, class); every case
    with the same classes, one of ``classes`` when given; and, when ``cases`` is given, exactly those cases.

    Args:
        path: the CSV (``eval/per_case_metrics.csv``).
        cases: the ids of the validation cases of the run's fold, or ``None`` not to check them.
        classes: the class lists the file may hold (e.g. without and with the background), or ``None``.

    Returns:
        The table, with ``absent`` as bool and the metrics as float64.

    Raises:
        OSError: the file cannot be read.
        ValueError: the file is not a CSV or is incomplete; the message names the file and what is wrong.
    """
    table = read_csv_as_written(path, ("case", "class", "absent"))
    try:
        return _check_per_case(table, cases, classes)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _check_per_case(
    table: pd.DataFrame,
    cases: Sequence[str] | None,
    classes: Sequence[Sequence[str]] | None,
) -> pd.DataFrame:
    """The checks of :func:`read_per_case_csv`, on the table read (messages without the file name)."""
    missing = [col for col in PER_CASE_REQUIRED if col not in table.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}: not a complete per-case CSV of the bundle's evaluation")
    if table.empty:
        raise ValueError("no rows (the file was cut short, or the evaluation scored no case)")
    absent = table["absent"].astype(str).str.strip().str.lower()
    bad = table["absent"].isna() | ~absent.isin(_TRUE | _FALSE)
    if bad.any():
        rows = table.index[bad].tolist()[:5]
        raise ValueError(f"column 'absent' is not true or false in row(s) {rows} (a row cut short?)")
    # blank or repeated (case, class); non-numeric, infinite or out-of-[0, 1] metrics: the statistics' own checks
    checked = validate_per_case(table[["case", "class", *PER_CASE_METRICS]].assign(method="run"))
    out = table.copy()
    out["case"], out["class"] = checked["case"], checked["class"]
    out["absent"] = absent.isin(_TRUE)
    for metric in PER_CASE_METRICS:
        values = checked[metric]
        out[metric] = values
        lost = values.isna() & ~out["absent"]
        if lost.any():
            rows = table.index[lost].tolist()[:5]
            raise ValueError(f"{metric!r} is missing in row(s) {rows} of a class marked present (a row cut short?)")
    per_case = out.groupby("case", sort=False)["class"].agg(frozenset)
    found = set().union(*per_case)
    short = {case: sorted(found - names) for case, names in per_case.items() if names != found}
    if short:
        examples = dict(list(short.items())[:3])
        raise ValueError(f"{len(short)} case(s) lack a class row, e.g. {examples} (the file was cut short?)")
    if classes is not None and not any(found == set(names) for names in classes):
        raise ValueError(f"classes {sorted(found)}, expected {' or '.join(str(list(c)) for c in classes)}")
    if cases is not None:
        lacking = [case for case in cases if case not in per_case.index]
        extra = [case for case in per_case.index if case not in set(cases)]
        if lacking or extra:
            raise ValueError(
                f"{len(per_case)} case(s), not the {len(cases)} validation case(s) of the fold in the datalist"
                + (f"; missing {lacking[:5]}" if lacking else "")
                + (f"; not in the fold {extra[:5]}" if extra else "")
                + " (the file was cut short, or the evaluation used another split)"
            )
    return out
