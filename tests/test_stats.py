# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Tests of :mod:`monai_mixedfocal.stats` against scipy / statsmodels called directly on fixed hand-made data."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from monai_mixedfocal import stats

# per-case DSC of three methods on six cases; "focal" has a tie, "constant" is a constant column, and one NaN
DSC = {
    "dice": [0.81, 0.85, 0.79, 0.90, 0.88, 0.84],
    "focal": [0.60, 0.62, 0.62, 0.70, 0.58, np.nan],
    "constant": [0.75, 0.75, 0.75, 0.75, 0.75, 0.75],
}
CASES = [f"case_{k:05d}" for k in range(6)]


def make_table(dsc: dict[str, list[float]] = DSC, classes: tuple[str, ...] = ("kidney",)) -> pd.DataFrame:
    """Long table from per-method value lists; class k adds 0.01 * k so classes differ."""
    rows = [
        {"case": CASES[i], "method": m, "class": cls, "dsc": v + 0.01 * k if not math.isnan(v) else v}
        for k, cls in enumerate(classes)
        for m, values in dsc.items()
        for i, v in enumerate(values)
    ]
    return pd.DataFrame(rows)


def finite(values: list[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[~np.isnan(arr)]


# ------------------------------------------------------------------------------------------------- mean_ci


def test_mean_ci_matches_t_interval() -> None:
    values = [0.81, 0.85, 0.79, 0.90, 0.88, 0.84]
    arr = np.array(values)
    expected = sps.t.ppf(0.975, df=5) * arr.std(ddof=1) / np.sqrt(6)
    ci = stats.mean_ci(values)
    assert ci.n == 6
    assert ci.mean == pytest.approx(arr.mean(), abs=1e-15)
    assert ci.half_width == pytest.approx(expected, rel=1e-12)
    # scipy's own interval agrees
    lo, hi = sps.t.interval(0.95, df=5, loc=arr.mean(), scale=sps.sem(arr))
    assert (ci.mean - ci.half_width, ci.mean + ci.half_width) == pytest.approx((lo, hi), rel=1e-12)


def test_mean_ci_other_confidence_is_narrower() -> None:
    values = [0.1, 0.4, 0.35, 0.8]
    ci90 = stats.mean_ci(values, confidence=0.90)
    assert ci90.half_width == pytest.approx(sps.t.ppf(0.95, 3) * np.std(values, ddof=1) / 2.0, rel=1e-12)
    assert ci90.half_width < stats.mean_ci(values).half_width


def test_mean_ci_skips_nan_and_counts() -> None:
    ci = stats.mean_ci([0.6, np.nan, 0.8, np.nan, 0.7])
    assert ci.n == 3
    assert ci.mean == pytest.approx(0.7)
    assert ci.half_width == pytest.approx(sps.t.ppf(0.975, 2) * 0.1 / np.sqrt(3), rel=1e-12)


def test_mean_ci_constant_single_and_empty() -> None:
    constant = stats.mean_ci([0.1] * 7)
    assert constant == (0.1, 0.0, 7)
    single = stats.mean_ci([0.42])
    assert single.mean == 0.42 and single.n == 1 and math.isnan(single.half_width)
    empty = stats.mean_ci([np.nan, np.nan])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.half_width)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.2, "0.95"])
def test_mean_ci_rejects_bad_confidence(confidence: object) -> None:
    with pytest.raises(ValueError, match="confidence"):
        stats.mean_ci([0.1, 0.2], confidence=confidence)  # type: ignore[arg-type]


def test_mean_ci_rejects_inf_and_text() -> None:
    with pytest.raises(ValueError, match="infinite"):
        stats.mean_ci([0.1, np.inf])
    with pytest.raises(ValueError, match="numeric"):
        stats.mean_ci(["a", "b"])


# ------------------------------------------------------------------------------------------------ marks


@pytest.mark.parametrize(
    ("p", "mark"),
    [
        (1.0, ""),
        (0.05, ""),
        (0.0499, "*"),
        (0.01, "*"),
        (0.00999, "**"),
        (0.001, "**"),
        (0.000999, "***"),
        (0.0, "***"),
        (float("nan"), ""),
    ],
)
def test_significance_mark(p: float, mark: str) -> None:
    assert stats.significance_mark(p) == mark


def test_significance_mark_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.significance_mark(1.2)


# -------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.drop(columns="class"), "missing required column"),
        (lambda d: pd.concat([d, d.iloc[[0]]]), "share a"),
        (lambda d: d.assign(dsc=d["dsc"].astype(object).where(d.index != 2, "bad")), "non-numeric"),
        (lambda d: d.assign(dsc=d["dsc"].where(d.index != 2, np.inf)), "infinite"),
        (lambda d: d.assign(dsc=d["dsc"].where(d.index != 2, 1.7)), r"'dsc' has values outside \[0, 1\]: \[1.7\]"),
        (lambda d: d.assign(recall=d["dsc"] * 100), "recall is a fraction: divide percentages by 100"),
        (lambda d: d.assign(iou=d["dsc"].where(d.index != 0, -0.1)), r"'iou' has values outside .*\[0\]"),
        (lambda d: d.iloc[0:0], "no rows"),
        (lambda d: d.assign(case=d["case"].where(d.index != 1, None)), "'case' has missing or blank values"),
        (lambda d: d.assign(method=d["method"].where(d.index != 2, "  ")), r"'method' has missing or blank.*\[2\]"),
        (lambda d: d[["case", "method", "class"]], "no metric column"),
    ],
)
def test_validate_rejects(mutate, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stats.validate_per_case(mutate(make_table()))


def test_a_metric_of_another_name_may_take_any_finite_value() -> None:
    """Only the known metrics are fractions: a Hausdorff distance in mm, say, is taken as it is."""
    table = make_table().assign(hd95=lambda d: d["dsc"] * 40 - 30)
    checked = stats.validate_per_case(table)["hd95"]
    assert checked.min() < 0 and checked.max() > 1


def test_validate_rejects_non_dataframe() -> None:
    with pytest.raises(TypeError, match="DataFrame"):
        stats.validate_per_case({"case": [1]})  # type: ignore[arg-type]


def test_fold_column_allows_same_case_in_two_folds() -> None:
    df = make_table()
    twice = pd.concat([df.assign(fold=0), df.assign(fold=1)], ignore_index=True)
    assert len(stats.validate_per_case(twice)) == 2 * len(df)
    assert stats.metric_columns(twice) == ["dsc"]


def test_metric_columns_order_known_first() -> None:
    df = make_table().assign(extra=1.0, recall=0.5, iou=0.3)
    assert stats.metric_columns(df) == ["dsc", "recall", "iou", "extra"]


def test_load_per_case_keeps_text_ids(tmp_path) -> None:
    path = tmp_path / "per_case.csv"
    path.write_text("case,method,class,dsc,precision\n00012,dice,1,0.5,\n00013,dice,1,0.7,0.9\n")
    df = stats.load_per_case(path)
    assert df["case"].tolist() == ["00012", "00013"]
    assert df["class"].tolist() == ["1", "1"]
    assert math.isnan(df["precision"].iloc[0])


def test_load_per_case_reads_identifiers_literally(tmp_path) -> None:
    """A method or class named like a pandas missing-value marker is a name; in metrics such markers are NaN."""
    path = tmp_path / "per_case.csv"
    path.write_text("case,method,class,dsc\nc1,None,NA,0.5\nc2,None,NA,null\nc1,dice,NA,0.7\nc2,dice,NA,NA\n")
    df = stats.load_per_case(path)
    assert df["method"].tolist() == ["None", "None", "dice", "dice"] and set(df["class"]) == {"NA"}
    assert df["dsc"].isna().tolist() == [False, True, False, True]
    path.write_text("case,method,class,dsc\nc1,,k,0.5\n")
    with pytest.raises(ValueError, match="missing or blank"):
        stats.load_per_case(path)


def test_load_per_case_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        stats.load_per_case(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("case,method,dsc\na,b,0.1\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*class"):
        stats.load_per_case(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv"):
        stats.load_per_case(empty)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (",case,method,class,dsc\n0,a,m,k,0.5\n", r"\['Unnamed: 0'\] have no name in the header.*index=False"),
        ("case;method;class;dsc\na;m;k;0.5\n", r"not comma-separated"),
        ("Case,Method,class,DSC\na,m,k,0.5\n", r"case-sensitive: rename \{'Case': 'case', 'Method': 'method'\}"),
        ("case,class,dsc,absent\na,k,0.5,False\n", r"\['method'\].*study --collect-only"),
    ],
    ids=["pandas-index", "semicolons", "letter-case", "a-bundle-s-csv"],
)
def test_load_per_case_names_the_likely_cause_of_a_bad_header(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "table.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        stats.load_per_case(path)


def test_load_per_case_of_a_folder_names_its_csv_files(tmp_path) -> None:
    (tmp_path / "per_case.csv").write_text("")
    with pytest.raises(IsADirectoryError, match=r"is a folder; give the per-case CSV file in it.*holds per_case\.csv"):
        stats.load_per_case(tmp_path)


# ---------------------------------------------------------------------------------------------- summary


def test_summary_table_matches_direct_computation() -> None:
    df = make_table(classes=("kidney", "tumour"))
    summary = stats.summary_table(df)
    assert list(summary["method"].unique()) == ["dice", "focal", "constant"]
    assert len(summary) == 6
    for row in summary.to_dict("records"):
        values = df.loc[(df["method"] == row["method"]) & (df["class"] == row["class"]), "dsc"].dropna()
        assert row["n"] == len(values)
        assert row["n_missing"] == 6 - len(values)
        assert row["mean"] == pytest.approx(values.mean(), rel=1e-12)
        expected = 0.0 if values.nunique() == 1 else sps.t.ppf(0.975, len(values) - 1) * sps.sem(values)
        assert row["half_width"] == pytest.approx(expected, rel=1e-12, abs=0.0)
        assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * expected, abs=1e-15)
    focal = summary[(summary["method"] == "focal") & (summary["class"] == "kidney")].iloc[0]
    assert (focal["n"], focal["n_missing"]) == (5, 1)
    assert not summary["mean"].isna().any()  # the NaN did not poison a mean


def test_summary_table_mean_iou_row() -> None:
    df = pd.DataFrame(
        {
            "case": ["a", "a", "b", "b", "c", "c"],
            "method": "dice",
            "class": ["road", "car"] * 3,
            "iou": [0.9, 0.5, 0.8, np.nan, 0.7, 0.3],
        }
    )
    summary = stats.summary_table(df)
    miou = summary[summary["class"] == stats.MEAN_IOU_CLASS].iloc[0]
    per_case = np.array([0.7, 0.8, 0.5])  # (0.9 + 0.5) / 2, 0.8 (car undefined), (0.7 + 0.3) / 2
    assert miou["metric"] == "iou"
    assert miou["n"] == 3
    assert miou["mean"] == pytest.approx(per_case.mean())
    assert miou["half_width"] == pytest.approx(sps.t.ppf(0.975, 2) * sps.sem(per_case))
    # no mean IoU row without iou, nor with a single class
    assert stats.MEAN_IOU_CLASS not in set(stats.summary_table(make_table())["class"])


def test_summary_table_metric_selection() -> None:
    df = make_table().assign(recall=0.5)
    assert set(stats.summary_table(df, metrics=["recall"])["metric"]) == {"recall"}
    with pytest.raises(ValueError, match="unknown metric"):
        stats.summary_table(df, metrics=["precision"])


# ----------------------------------------------------------------------------------------- rank-sum test


def test_ranksum_matches_scipy_and_holm() -> None:
    pairs = stats.pairwise_tests(make_table(), metric="dsc", test="ranksum")
    assert list(zip(pairs["method_a"], pairs["method_b"])) == [
        ("focal", "dice"),
        ("constant", "dice"),
        ("constant", "focal"),
    ]
    expected_p = []
    for row in pairs.to_dict("records"):
        res = sps.ranksums(finite(DSC[row["method_a"]]), finite(DSC[row["method_b"]]))
        assert row["statistic"] == pytest.approx(res.statistic, rel=1e-12)
        assert row["p_raw"] == pytest.approx(res.pvalue, rel=1e-12)
        assert (row["n_a"], row["n_b"]) == (len(finite(DSC[row["method_a"]])), len(finite(DSC[row["method_b"]])))
        expected_p.append(res.pvalue)
    adjusted = multipletests(expected_p, method="holm")[1]
    np.testing.assert_allclose(pairs["p_adjusted"], adjusted, rtol=1e-12)
    # signs: focal < dice, constant < dice, constant > focal
    assert (np.sign(pairs["statistic"]) == [-1, -1, 1]).all()
    assert pairs["mark"].tolist() == [stats.significance_mark(p) for p in adjusted]
    assert pairs["mark"].iloc[0] == "*"  # 5 vs 6 fully separated cases: p_raw = 0.0062, Holm x3 = 0.019


def test_ranksum_two_methods_only_has_no_correction_effect() -> None:
    two = {"dice": DSC["dice"], "focal": DSC["focal"]}
    pairs = stats.pairwise_tests(make_table(two, classes=("kidney", "tumour")))
    assert len(pairs) == 2  # one pair per class, corrected separately
    np.testing.assert_allclose(pairs["p_adjusted"], pairs["p_raw"])
    res = sps.ranksums(finite(two["focal"]), finite(two["dice"]))
    assert pairs["p_raw"].iloc[0] == pytest.approx(res.pvalue)


def test_ranksum_strong_difference_gets_three_stars() -> None:
    rng = np.random.default_rng(3)
    values = {"good": list(0.9 + 0.01 * rng.random(12)), "bad": list(0.1 + 0.01 * rng.random(12))}
    cases = [f"c{k}" for k in range(12)]
    rows = [{"case": c, "method": m, "class": "t", "dsc": v[i]} for m, v in values.items() for i, c in enumerate(cases)]
    df = pd.DataFrame(rows)
    row = stats.pairwise_tests(df).iloc[0]
    expected = sps.ranksums(values["bad"], values["good"])
    assert row["method_a"] == "bad"
    assert row["statistic"] == pytest.approx(expected.statistic)
    assert row["statistic"] < 0
    assert expected.pvalue < 0.001 and row["mark"] == "***"


def test_ranksum_identical_constant_columns() -> None:
    same = {"a": [0.5] * 4, "b": [0.5] * 4}
    row = stats.pairwise_tests(make_table(same)).iloc[0]
    assert (row["statistic"], row["p_raw"], row["p_adjusted"], row["mark"]) == (0.0, 1.0, 1.0, "")


def test_method_without_data_is_left_out_of_correction() -> None:
    data = dict(DSC, empty=[np.nan] * 6)
    pairs = stats.pairwise_tests(make_table(data))
    empty = pairs[(pairs["method_a"] == "empty") | (pairs["method_b"] == "empty")]
    assert empty["p_raw"].isna().all() and empty["p_adjusted"].isna().all() and (empty["mark"] == "").all()
    tested = pairs.dropna(subset=["p_raw"])
    np.testing.assert_allclose(tested["p_adjusted"], multipletests(tested["p_raw"], method="holm")[1])


def test_pairwise_corrections_and_bad_arguments() -> None:
    df = make_table()
    none = stats.pairwise_tests(df, correction="none")
    np.testing.assert_allclose(none["p_adjusted"], none["p_raw"])
    bonf = stats.pairwise_tests(df, correction="bonferroni")
    np.testing.assert_allclose(bonf["p_adjusted"], np.minimum(1.0, 3 * bonf["p_raw"]))
    for kwargs, message in [
        ({"test": "ttest"}, "unknown test"),
        ({"correction": "magic"}, "unknown correction"),
        ({"zero_method": "drop"}, "zero_method"),
        ({"metric": "iou"}, "unknown metric"),
    ]:
        with pytest.raises(ValueError, match=message):
            stats.pairwise_tests(df, **kwargs)


@pytest.mark.parametrize("method", ["fdr_tsbh", "fdr_tsbky"])
def test_two_stage_corrections_mark_what_the_procedure_rejects_at_each_level(method: str) -> None:
    """Their adjusted p-values hold for alpha = 0.05 only: a mark for p < 0.01 needs a rejection at alpha = 0.01."""
    p = np.array([0.0004, 0.003, 0.008, 0.02, 0.04, 0.3, 0.5])
    rows = stats._adjust(pd.DataFrame({"p_raw": p}), method)
    np.testing.assert_allclose(rows["p_adjusted"], multipletests(p, alpha=0.05, method=method)[1])
    expected = [""] * len(p)
    for threshold, mark in reversed(stats.SIGNIFICANCE_MARKS):
        for i in np.flatnonzero(multipletests(p, alpha=threshold, method=method)[0]):
            expected[i] = mark
    assert rows["mark"].tolist() == expected
    adjusted_at_05 = multipletests(p, alpha=0.05, method=method)[1]
    assert any(stats.significance_mark(a) != m for a, m in zip(adjusted_at_05, expected))  # the case that was wrong


def test_single_method_warns_and_returns_empty() -> None:
    with pytest.warns(UserWarning, match="at least two methods"):
        pairs = stats.pairwise_tests(make_table({"dice": DSC["dice"]}))
    assert pairs.empty and "p_adjusted" in pairs.columns


# --------------------------------------------------------------------------------------- signed-rank test


def test_signedrank_pairs_cases_and_matches_scipy() -> None:
    df = make_table()
    df = df[~((df["method"] == "dice") & (df["case"] == CASES[0]))]  # unequal case counts: dice lacks case 0
    pairs = stats.pairwise_tests(df, test="signedrank")
    for row in pairs.to_dict("records"):
        a = pd.Series(DSC[row["method_a"]], index=CASES)
        b = pd.Series(DSC[row["method_b"]], index=CASES)
        if "dice" in (row["method_a"], row["method_b"]):
            a, b = a.drop(CASES[0]), b.drop(CASES[0])
        keep = a.notna() & b.notna()
        assert row["n_pairs"] == keep.sum()
        assert row["p_raw"] == pytest.approx(sps.wilcoxon(a[keep], b[keep]).pvalue, rel=1e-12)
        diff = (a - b)[keep]
        assert np.sign(row["statistic"]) == np.sign(diff.median())
    expected = multipletests(pairs["p_raw"], method="holm")[1]
    np.testing.assert_allclose(pairs["p_adjusted"], expected, rtol=1e-12)
    focal_dice = pairs.iloc[0]
    assert (focal_dice["n_pairs"], focal_dice["n_a"], focal_dice["n_b"]) == (4, 5, 5)


def test_signedrank_statistic_is_tie_corrected_z() -> None:
    a = np.array([0.9, 0.8, 0.8, 0.7, 0.95, 0.6, 0.85])
    b = np.array([0.7, 0.6, 0.6, 0.75, 0.80, 0.6, 0.65])  # tied differences (0.2 twice) and one zero
    df = pd.DataFrame(
        [{"case": f"c{i}", "method": m, "class": "k", "dsc": v[i]} for m, v in (("a", a), ("b", b)) for i in range(7)]
    )
    row = stats.pairwise_tests(df, test="signedrank").iloc[0]
    assert row["method_a"] == "b" and row["method_b"] == "a"  # later method is the row
    d = np.round(b - a, 12)  # in binary 0.9 - 0.7, 0.8 - 0.6 and 0.85 - 0.65 differ: ties only in decimal
    assert len(set((b - a).tolist())) > len(set(d.tolist()))
    d = d[d != 0]
    ranks = sps.rankdata(np.abs(d))
    n = d.size
    r_plus = ranks[d > 0].sum()
    _, counts = np.unique(ranks, return_counts=True)
    assert counts.max() == 4  # the four differences of -0.2 are one tie
    var = n * (n + 1) * (2 * n + 1) / 24 - (counts**3 - counts).sum() / 48
    assert row["statistic"] == pytest.approx((r_plus - n * (n + 1) / 4) / np.sqrt(var), rel=1e-12)
    assert row["statistic"] < 0  # b is lower than a
    assert row["p_raw"] == pytest.approx(sps.wilcoxon(d).pvalue, rel=1e-12)


def test_signedrank_all_equal_pair_gives_p_one() -> None:
    same = {"a": DSC["dice"], "b": list(DSC["dice"]), "c": DSC["constant"]}
    pairs = stats.pairwise_tests(make_table(same), test="signedrank")
    ab = pairs[(pairs["method_a"] == "b") & (pairs["method_b"] == "a")].iloc[0]
    assert (ab["statistic"], ab["p_raw"], ab["n_pairs"], ab["mark"]) == (0.0, 1.0, 6, "")
    assert not pairs["p_adjusted"].isna().any()


def test_signedrank_pairs_by_fold_too() -> None:
    df = pd.DataFrame(
        {
            "case": ["x", "x", "y", "x", "x", "y"],
            "fold": ["0", "1", "1", "0", "1", "1"],
            "method": ["a"] * 3 + ["b"] * 3,
            "class": "k",
            "dsc": [0.9, 0.5, 0.7, 0.8, 0.6, 0.7],
        }
    )
    row = stats.pairwise_tests(df, test="signedrank").iloc[0]
    assert row["n_pairs"] == 3
    assert row["p_raw"] == pytest.approx(sps.wilcoxon([0.8, 0.6, 0.7], [0.9, 0.5, 0.7]).pvalue)


def test_signedrank_without_common_cases_is_nan() -> None:
    """Not tested, with a warning: often the same case written two ways (a fold ``0`` and ``0.0``)."""
    df = pd.DataFrame({"case": ["x", "y"], "method": ["a", "b"], "class": "k", "dsc": [0.5, 0.6]})
    with pytest.warns(UserWarning, match=r"no case in common for 1 pair\(s\), not tested: b vs a \(k\)"):
        row = stats.pairwise_tests(df, test="signedrank").iloc[0]
    assert row["n_pairs"] == 0 and math.isnan(row["p_raw"]) and row["mark"] == ""


def _folded_table() -> pd.DataFrame:
    """Six cases in three folds of two, two classes, dsc and iou; one NaN (focal, case 5, kidney)."""
    table = make_table(classes=("kidney", "tumor"))
    table["fold"] = table["case"].map({c: k // 2 for k, c in enumerate(CASES)})
    table["iou"] = table["dsc"] / (2.0 - table["dsc"])
    return table


def test_intervals_over_fold_means_match_scipy() -> None:
    """``ci_over="folds"``: each fold's mean (NaN skipped), then the t interval over the fold means (n = folds)."""
    table = _folded_table()
    summary = stats.summary_table(table, metrics=["dsc", "iou"], ci_over="folds")
    for method, values in DSC.items():
        fold_means = [np.nanmean(values[2 * f : 2 * f + 2]) for f in range(3)]
        row = summary[(summary["method"] == method) & (summary["class"] == "kidney") & (summary["metric"] == "dsc")]
        assert row["n"].item() == 3 and row["n_missing"].item() == int(np.isnan(values).sum())
        assert row["mean"].item() == pytest.approx(np.mean(fold_means), abs=1e-12)
        half = sps.t.ppf(0.975, 2) * np.std(fold_means, ddof=1) / math.sqrt(3)
        assert row["half_width"].item() == pytest.approx(half, abs=1e-12)
    # the mean IoU over classes: per case first, then per fold, then over the folds
    per_case = table.groupby(["case", "method", "fold"], sort=False)["iou"].mean().reset_index()
    dice = per_case[per_case["method"] == "dice"].groupby("fold")["iou"].mean()
    miou = summary[(summary["method"] == "dice") & (summary["class"] == stats.MEAN_IOU_CLASS)]
    assert miou["n"].item() == 3 and miou["mean"].item() == pytest.approx(dice.mean(), abs=1e-12)
    assert miou["half_width"].item() == pytest.approx(sps.t.ppf(0.975, 2) * dice.std(ddof=1) / math.sqrt(3), abs=1e-12)
    # over cases (the default) the same table gives n = 6 and a narrower interval for these values
    by_case = stats.summary_table(table, metrics=["dsc"])
    assert by_case.loc[0, "n"] == 6 and by_case.loc[0, "half_width"] != summary.loc[0, "half_width"]


@pytest.mark.parametrize(("folds", "message"), [(1, "undefined"), (2, "very wide"), (3, None)])
def test_intervals_over_few_folds_warn(folds: int, message: str | None) -> None:
    """One fold mean has no interval and two give t with 1 degree of freedom: a warning names the cause and the
    alternative, pointing at the caller's line; from three folds on there is none. Over cases there is none either."""
    table = _folded_table()
    table = table[table["fold"] < folds]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats.summary_table(table, metrics=["dsc"], ci_over="folds")
        stats.summary_table(table, metrics=["dsc"])
    texts = [str(w.message) for w in caught]
    if message is None:
        assert texts == []
        return
    assert len(texts) == 1 and message in texts[0] and f"ci_over='folds' with {folds} fold(s)" in texts[0]
    assert "ci_over='cases' gives intervals over the cases" in texts[0]
    assert caught[0].filename == __file__


def test_intervals_over_folds_need_folds() -> None:
    with pytest.raises(ValueError, match="ci_over='folds' needs a 'fold' column"):
        stats.summary_table(make_table(), ci_over="folds")
    with pytest.raises(ValueError, match=r"ci_over must be one of \('cases', 'folds'\), got 'fold'"):
        stats.summary_table(_folded_table(), ci_over="fold")


@pytest.mark.parametrize("zero_method", ["pratt", "zsplit"])
def test_signedrank_zero_method_reaches_the_p_value(zero_method: str) -> None:
    """Two zero differences: scipy's ``pratt`` and ``zsplit`` give other p-values than the default ``wilcox``."""
    a = np.full(10, 0.5)
    b = a + np.array([0, 0, 0.1, -0.2, 0.3, 0.15, 0.25, -0.05, 0.12, 0.33])
    df = pd.DataFrame(
        [{"case": f"c{i}", "method": m, "class": "k", "dsc": v[i]} for m, v in (("a", a), ("b", b)) for i in range(10)]
    )
    d = np.round(b - a, 12)
    expected = sps.wilcoxon(d, zero_method=zero_method).pvalue
    assert expected != pytest.approx(sps.wilcoxon(d).pvalue)  # the data tell the zero methods apart
    row = stats.pairwise_tests(df, test="signedrank", zero_method=zero_method).iloc[0]
    assert row["p_raw"] == pytest.approx(expected, rel=1e-12)


def test_intervals_over_folds_average_each_fold() -> None:
    """Three cases per fold with a skewed fold (median 0.2, mean 0.4): the fold values are means."""
    df = pd.DataFrame(
        {
            "case": [f"c{i}" for i in range(6)] * 2,
            "fold": [0, 0, 0, 1, 1, 1] * 2,
            "method": ["a"] * 6 + ["b"] * 6,
            "class": "k",
            "dsc": [0.1, 0.2, 0.9, 0.5, 0.6, 0.7] + [0.5] * 6,
        }
    )
    with pytest.warns(UserWarning, match=r"2 fold\(s\): .* 1 degree of freedom \(t = 12\.7\)"):
        row = stats.summary_table(df, ci_over="folds").iloc[0]
    assert row["n"] == 2 and row["mean"] == pytest.approx(0.5, abs=1e-12)  # (0.4 + 0.6) / 2
    assert row["half_width"] == pytest.approx(sps.t.ppf(0.975, 1) * np.std([0.4, 0.6], ddof=1) / math.sqrt(2))


@pytest.mark.parametrize("correction", ["sidak", "holm-sidak"])
def test_sidak_of_identical_methods_adds_no_numpy_warning(correction: str) -> None:
    """statsmodels' Sidak takes log1p(-p): at p = 1 (identical methods) numpy warned 'divide by zero', a line on the
    stats command's stderr that looked like a fault. The adjusted p-value is exactly 1."""
    values = [0.9, 0.8, 0.7, 0.6, 0.5]
    table = make_table({"a": values, "b": values, "c": [0.1, 0.2, 0.3, 0.4, 0.45]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pairs = stats.pairwise_tests(table, correction=correction)
    same = pairs[[{a, b} == {"a", "b"} for a, b in zip(pairs["method_a"], pairs["method_b"])]]
    assert same["p_raw"].tolist() == [1.0] and same["p_adjusted"].tolist() == [1.0]
