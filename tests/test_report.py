# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Tests of :mod:`monai_mixedfocal.report` and the ``stats`` command line."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import scipy
import torch
from scipy import stats as sps

from monai_mixedfocal import report, stats, stats_cli

METHODS = ("focal", "dice", "mixed_focal")
CLASSES = ("kidney", "tumour & cyst")  # a class name needing escaping and file-name sanitising


def study_table(n_cases: int = 8, seed: int = 0) -> pd.DataFrame:
    """A small per-case table with DSC, precision, recall and IoU; mixed_focal is best on tumour."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, method in enumerate(METHODS):
        for cls, base in zip(CLASSES, (0.9, 0.5)):
            for i in range(n_cases):
                dsc = float(np.clip(base + 0.12 * k * (cls != "kidney") + rng.normal(0, 0.05), 0, 1))
                precision = np.nan if (k, i) == (0, 0) else float(np.clip(dsc + 0.05 * (1 - k), 0, 1))
                recall = float(np.clip(dsc - 0.05 * (1 - k), 0, 1))
                rows.append(
                    {"case": f"case_{i:05d}", "fold": str(i % 2), "method": method, "class": cls, "dsc": dsc,
                     "precision": precision, "recall": recall, "iou": dsc / (2 - dsc)}
                )  # fmt: skip
    return pd.DataFrame(rows)


def overlay_inputs(shape: tuple[int, int] = (48, 40)) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    image = np.random.default_rng(1).normal(size=shape)
    label = np.zeros(shape, dtype=np.int64)
    label[10:35, 8:30] = 1
    label[18:26, 12:20] = 2
    return {m: (image, label, np.roll(label, k, axis=1)) for k, m in enumerate(METHODS)}


def assert_png_not_blank(path: Path, min_size: int = 200) -> None:
    image = mpimg.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= min_size, image.shape
    rgb = image[..., :3]
    assert rgb.std() > 0.02  # not a uniform canvas
    assert (rgb.reshape(-1, 3).std(axis=1) > 0.05).any()  # some coloured pixels (boxes, markers or overlays)


# ------------------------------------------------------------------------------------------------- tables


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (1.0, "1.00"),
        (0.0841, "0.0841"),
        (0.00468, "0.00468"),
        (2.52e-5, "2.52e-05"),
        (np.nan, "n/a"),
        (0.05, "0.0500"),
        (0.049996, "0.049996"),  # not "0.0500", which would contradict its mark for p < 0.05
        (0.0099996, "0.0099996"),
        (0.00099996, "9.9996e-04"),
        (0.0, "< 2.2e-308"),  # an underflowed p-value is a bound, not 0.00e+00
    ],
)
def test_format_p_like_the_paper(p: float, text: str) -> None:
    assert report.format_p(p) == text


def test_table1_cells_and_best() -> None:
    df = study_table()
    cells, best = report.table1(stats.summary_table(df, metrics=["dsc", "precision", "iou"]))
    assert list(cells.index) == list(METHODS)
    assert list(cells.columns) == [
        "DSC kidney", "Precision kidney", "IoU kidney", "DSC tumour & cyst", "Precision tumour & cyst",
        "IoU tumour & cyst", "mIoU",
    ]  # fmt: skip
    values = df[(df["method"] == "dice") & (df["class"] == "kidney")]["dsc"]
    half = sps.t.ppf(0.975, len(values) - 1) * sps.sem(values)
    assert cells.loc["dice", "DSC kidney"] == f"{values.mean():.3f} ± {half:.3f}"
    tumour = df[df["class"] == CLASSES[1]].groupby("method")["dsc"].mean()
    assert best["DSC tumour & cyst"].tolist() == [m == tumour.idxmax() for m in METHODS]
    counts, no_best = report.table1(stats.summary_table(df, metrics=["precision"]), value="n")
    assert counts.loc["focal", "Precision kidney"] == str(len(values) - 1)  # one NaN skipped
    assert not no_best.to_numpy().any()


def test_table1_bold_follows_the_printed_rounding() -> None:
    """0.6675 is 0.66749999... in binary: printed 0.667, as 0.667 is; both are the highest as printed (the bold once
    followed DataFrame.round, which gives 0.668 for the first only)."""
    df = pd.DataFrame({"case": ["a", "b"] * 2, "method": ["x", "x", "y", "y"], "class": "k"})
    df["dsc"] = [0.6675, 0.6675, 0.667, 0.667]
    cells, best = report.table1(stats.summary_table(df))
    assert cells["DSC k"].str.startswith("0.667").all()
    assert best["DSC k"].tolist() == [True, True]


def test_table1_refuses_metric_columns_with_one_label() -> None:
    df = pd.DataFrame({"case": ["a", "b"], "method": "x", "class": "k", "dsc": [0.5, 0.6], "DSC": [0.1, 0.2]})
    with pytest.raises(ValueError, match=r"metric columns share a label of Table 1: 'DSC' \(DSC k\), 'dsc' \(DSC k\)"):
        report.table1(stats.summary_table(df))


def test_table1_single_case_and_empty_cells() -> None:
    df = pd.DataFrame({"case": ["a", "a"], "method": ["x", "y"], "class": "k", "dsc": [0.5, np.nan]})
    cells, _ = report.table1(stats.summary_table(df))
    assert cells.loc["x", "DSC k"] == "0.500 (n=1)"
    assert cells.loc["y", "DSC k"] == "n/a"
    # a method without any row for a class: "n/a" and 0 cases used, as one whose values are all NaN
    df = pd.DataFrame({"case": ["a", "a", "a"], "method": ["x", "y", "x"], "class": ["k", "k", "j"], "dsc": 0.5})
    cells, _ = report.table1(stats.summary_table(df))
    counts, _ = report.table1(stats.summary_table(df), value="n")
    assert cells.loc["y", "DSC j"] == "n/a" and counts.loc["y", "DSC j"] == "0"


def test_pairwise_matrix_lower_triangle_with_signs() -> None:
    df = study_table()
    pairs = stats.pairwise_tests(df)
    matrix = report.pairwise_matrix(pairs, CLASSES[1], list(METHODS))
    assert [matrix.iat[i, i] for i in range(3)] == ["-"] * 3
    assert matrix.loc["focal", "dice"] == "" and matrix.loc["focal", "mixed_focal"] == ""
    row = pairs[(pairs["class"] == CLASSES[1]) & (pairs["method_a"] == "mixed_focal") & (pairs["method_b"] == "focal")]
    row = row.iloc[0]
    assert matrix.loc["mixed_focal", "focal"] == f"{report.format_p(row['p_adjusted'])}{row['mark']} (+)"
    # reversed order: the same test seen from the other side flips the sign
    flipped = report.pairwise_matrix(pairs, CLASSES[1], list(reversed(METHODS)))
    assert flipped.loc["focal", "mixed_focal"].endswith("(-)")
    with pytest.raises(ValueError, match="no pairwise tests"):
        report.pairwise_matrix(pairs, "liver")
    with pytest.raises(ValueError, match="missing from methods"):
        report.pairwise_matrix(pairs, "kidney", ["focal", "dice"])


def test_markdown_and_latex_escaping() -> None:
    cells = pd.DataFrame({"a_b": ["0.01* (+)", "x|y"]}, index=pd.Index(["m_1", "m&2"], name="Method"))
    best = pd.DataFrame({"a_b": [True, False]}, index=cells.index)
    md = report.markdown_table(cells, best)
    lines = md.splitlines()
    assert len(lines) == 4 and all(line.startswith("| ") and line.endswith(" |") for line in lines)
    assert "**0.01\\* (+)**" in md and "x\\|y" in md and "| a_b " in md and "| m_1 " in md  # "_" within a word
    assert "0.01* (+)" in report.markdown_table(cells, escape=False)
    assert report.latex_escape("a_b & 50% ± $x^2$ {}#~\\") == (
        r"a\_b \& 50\% $\pm$ \$x\textasciicircum{}2\$ \{\}\#\textasciitilde{}\textbackslash{}"
    )
    tex = report.latex_table(cells, best, caption="c_1", label="tab:x")
    assert r"\textbf{0.01* (+)}" in tex and r"m\&2 & x\textbar{}y \\" in tex and r"\caption{c\_1}" in tex
    assert report.markdown_table(pd.DataFrame({"x": ["<loss>"]})).splitlines()[2] == "| 0 | \\<loss\\> |"
    assert report.latex_escape("<a>") == r"\textless{}a\textgreater{}"
    assert tex.count(r"\begin{tabular}{lc}") == 1 and r"\bottomrule" in tex


def test_markdown_escape_puts_text_on_one_line_as_written() -> None:
    assert report.one_line("  a\n\n b\t c  ") == "a b c"
    assert report.markdown_escape("Study #3\n# x [y](z) `c` a_b *d* <e> f|g \\") == (
        r"Study \#3 \# x \[y\](z) \`c\` a_b \*d\* \<e\> f\|g \\"
    )
    # "_" is emphasis only at a word's edge (CommonMark, GFM): "_x_", "a_ b", "__init__", "γ_1" kept within a word
    assert report.markdown_escape("_x_ a_ b __init__ γ_1 a__b") == r"\_x\_ a\_ b \_\_init\_\_ γ_1 a\_\_b"
    # GitHub's strikethrough, HTML entities and math (``~~x~~``, ``&lt;``, ``$x$``) were read as such
    assert report.markdown_escape("a~~b~~ &lt; &#60; $x^2$ & c") == r"a\~\~b\~\~ \&lt; \&\#60; \$x^2\$ & c"
    cells = pd.DataFrame({"col\numn": ["a\nb"]}, index=pd.Index(["m\n1"], name="Method"))
    assert report.markdown_table(cells).splitlines()[2] == "| m 1    | a b     |"  # one row, not three lines
    assert report.markdown_table(cells, escape=False).splitlines()[0] == "| Method | col umn |"
    assert report.latex_escape("x\n\ny") == "x y"  # a blank line would end a LaTeX caption


# ------------------------------------------------------------------------------------------ write_report


def test_write_report_files(tmp_path: Path) -> None:
    df = study_table()
    path = report.write_report(df, tmp_path / "out", overlays=overlay_inputs(), overlay_case="case_00003", title="T")
    out = tmp_path / "out"
    assert path == out / "report.md"
    expected = {
        "report.md", "summary.csv", "summary.tex", "pairwise_kidney.csv", "pairwise_tumour_cyst.csv",
        "boxplot_dsc.png", "precision_recall.png", "overlays.png", report.REPORT_MANIFEST,
    }  # fmt: skip
    assert {p.name for p in out.iterdir()} == expected  # no temporary file left behind
    text = path.read_text()
    assert text.startswith("# T\n")
    assert "Wilcoxon rank-sum" in text and "Student-t" in text and "'holm'" in text
    assert f"- Software: scipy {scipy.__version__}, statsmodels" in text
    assert "| Method" in text and "| mixed_focal" in text
    assert "## Table 2 (tumour & cyst): holm-adjusted p-values" in text
    assert "8 cases, 2 folds, 3 methods" in text and "mIoU" in text
    summary = pd.read_csv(out / "summary.csv")
    pd.testing.assert_frame_equal(summary, stats.summary_table(df), check_dtype=False)
    pairs = pd.read_csv(out / "pairwise_tumour_cyst.csv")
    direct = stats.pairwise_tests(df)
    np.testing.assert_allclose(pairs["p_adjusted"], direct[direct["class"] == CLASSES[1]]["p_adjusted"])
    tex = (out / "summary.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 3 and r"mixed\_focal" in tex and r"tumour \& cyst" in tex
    for name in ("boxplot_dsc.png", "precision_recall.png", "overlays.png"):
        assert_png_not_blank(out / name)


def test_write_report_prints_user_text_as_written(tmp_path: Path) -> None:
    """A title, class, metric or case name from the user is one line of literal text in report.md: a newline or
    ``#`` in the title starts no heading, ``*`` makes no emphasis, and a metric named like a path gets a plain file."""
    df = study_table()[["case", "fold", "method", "class", "dsc"]].rename(columns={"dsc": "HD95 [mm]/x"})
    df["class"] = df["class"].replace({"kidney": "kidney *left*"})
    title = "Study #3\n\n# not a heading [x](y)"
    overlays, notes = overlay_inputs(), ["runs *a* and\n# b"]
    path = report.write_report(df, tmp_path, title=title, overlays=overlays, overlay_case="case_*7*", notes=notes)
    lines = path.read_text().splitlines()
    assert lines[0] == r"# Study \#3 \# not a heading \[x\](y)"
    assert [line for line in lines if line.startswith("# ")] == lines[:1]
    assert r"> **Note:** runs \*a\* and \# b" in lines
    assert r"2 classes: kidney \*left\*, tumour & cyst." in "\n".join(lines)
    assert r"## Table 2 (kidney \*left\*): holm-adjusted p-values, ranksum test on HD95 \[mm\]/x" in lines
    assert r"![Per-case HD95 \[mm\]/x](boxplot_HD95_mm_x.png)" in lines
    assert any(line.startswith("- Table 2:") and line.endswith(r"on per-case HD95 \[mm\]/x.") for line in lines)
    assert r"![Segmentations of case\_\*7\*](overlays.png)" in lines
    assert {p.name for p in tmp_path.iterdir() if p.name.startswith("boxplot")} == {"boxplot_HD95_mm_x.png"}
    assert all(p.is_file() for p in tmp_path.iterdir())  # no sub-folder made from the "/" of the metric name
    tex = (tmp_path / "summary.tex").read_text()
    assert r"\caption{Study \#3 \# not a heading [x](y): mean $\pm$ 95\% CI over cases}" in tex


def test_write_report_again_leaves_one_consistent_report(tmp_path: Path) -> None:
    """A second report into the same folder removes the first one's files it does not write again (and nothing
    else); notes are shown under the title; a single method gets no Table 2, with the reason."""
    report.write_report(study_table(), tmp_path)
    (tmp_path / "mine.txt").write_text("the user's own file")
    one_class = study_table()
    one_class = one_class[(one_class["class"] == "kidney") & (one_class["method"] == "dice")].drop(columns="precision")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the report says why there is no Table 2: no warning besides
        path = report.write_report(one_class, tmp_path, notes=["incomplete study: 1 of 2 runs"])
    names = {p.name for p in tmp_path.iterdir()}
    assert "pairwise_tumour_cyst.csv" not in names and "precision_recall.png" not in names
    assert "pairwise_kidney.csv" not in names  # a single method: no pairwise tests
    assert {"mine.txt", "report.md", "boxplot_dsc.png", report.REPORT_MANIFEST} <= names
    text = path.read_text()
    assert text.startswith("# Loss function comparison\n\n> **Note:** incomplete study: 1 of 2 runs\n")
    assert "No Table 2: the pairwise tests need at least two methods" in text
    assert "- Data: 8 cases, 2 folds, 1 method (losses), 1 class: kidney." in text and "- Table 2:" not in text


def test_write_report_without_correction_says_so(tmp_path: Path) -> None:
    text = report.write_report(study_table(), tmp_path, correction="none").read_text()
    assert "not adjusted for multiple comparisons" in text and "adjusted with the 'none'" not in text
    assert "## Table 2 (kidney): unadjusted p-values" in text


def test_write_report_signedrank_subset_and_no_pr_plot(tmp_path: Path) -> None:
    df = study_table().drop(columns=["precision"])
    path = report.write_report(df, tmp_path, test="signedrank", metrics=["dsc", "recall"], test_metric="recall")
    text = path.read_text()
    assert "signed-rank" in text and "Recall" in text and "No precision-recall plot" in text
    assert (tmp_path / "boxplot_recall.png").exists() and not (tmp_path / "precision_recall.png").exists()
    assert "IoU" not in text


def test_write_report_bad_input_writes_nothing(tmp_path: Path) -> None:
    bad = overlay_inputs()
    bad["dice"] = (bad["dice"][0], bad["dice"][1], np.zeros((5, 5)))
    with pytest.raises(ValueError, match="2-D of one shape"):
        report.write_report(study_table(), tmp_path / "a", overlays=bad)
    with pytest.raises(ValueError, match="unknown test"):
        report.write_report(study_table(), tmp_path / "a", test="ttest")
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        report.write_report(study_table(), tmp_path / "file")


# ------------------------------------------------------------------------------------------------- slices


def test_pick_overlay_slice_rarest_class() -> None:
    volume = np.zeros((16, 16, 10), dtype=np.int64)
    volume[2:14, 2:14, 1:9] = 1  # large class everywhere
    volume[5:7, 5:7, 6] = 2  # rare class: 4 voxels on slice 6
    volume[5:6, 5:6, 3] = 2  # and 1 voxel on slice 3
    assert report.pick_overlay_slice(volume) == 6
    assert report.pick_overlay_slice(torch.as_tensor(volume)[None]) == 6  # channel-first tensor
    assert report.pick_overlay_slice(np.moveaxis(volume, 2, 0), axis=0) == 6


def test_pick_overlay_slice_edge_cases() -> None:
    with pytest.warns(UserWarning, match="no foreground"):
        assert report.pick_overlay_slice(np.zeros((4, 4, 9))) == 4
    with pytest.raises(ValueError, match="3-D"):
        report.pick_overlay_slice(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="axis"):
        report.pick_overlay_slice(np.zeros((4, 4, 4)), axis=3)


# ---------------------------------------------------------------------------------------------------- CLI


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monai_mixedfocal", "stats", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_prints_tables_and_writes_report(tmp_path: Path) -> None:
    csv = tmp_path / "per_case.csv"
    study_table().to_csv(csv, index=False)
    result = run_cli(str(csv), "--out", str(tmp_path / "rep"), "--test", "signedrank", "--metrics", "dsc", "recall")
    assert result.returncode == 0, result.stderr
    assert "Table 1" in result.stdout and "Table 2 (tumour & cyst)" in result.stdout
    assert "DSC kidney" in result.stdout and "Precision" not in result.stdout.split("Table 2")[0]
    assert "signedrank" in result.stdout
    assert (tmp_path / "rep" / "report.md").exists() and (tmp_path / "rep" / "overlays.png").exists() is False


def run_in_process(*args: str) -> int:
    """The ``stats`` command through its own parser, without a subprocess."""
    parser = argparse.ArgumentParser()
    stats_cli.register(parser.add_subparsers())
    namespace = parser.parse_args(["stats", *args])
    return namespace.func(namespace)


def test_cli_bad_input_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "dup.csv"
    csv.write_text("case,method,class,dsc\na,x,k,0.5\na,x,k,0.6\n")
    for args, fragment in [
        ((str(csv),), "dup.csv"),
        ((str(tmp_path / "nope.csv"),), "nope.csv"),
        ((str(csv).replace("dup", "ok"), "--metrics", "hd95"), "unknown metric"),
    ]:
        if "ok" in args[0]:
            study_table().to_csv(args[0], index=False)
        assert run_in_process(*args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and fragment in err and len(err.strip().splitlines()) == 1


def test_cli_in_process_prints_paired_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "per_case.csv"
    study_table().to_csv(csv, index=False)
    assert run_in_process(str(csv), "--test", "signedrank", "--test-metric", "iou", "--correction", "bonferroni") == 0
    out = capsys.readouterr().out
    assert "Table 2 (kidney): bonferroni-adjusted p-values, signedrank test on IoU" in out
    assert "mIoU" in out and "0.500" not in out.split("Cases used")[1].split("Table 2")[0]
    assert "Bold (**): highest mean of each column.\n" in out  # bold as in report.md


def test_cli_bold_rule_names_only_the_metrics_of_table_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    df = study_table()
    df["hd95"] = np.arange(len(df), dtype=float)
    df.to_csv(tmp_path / "per_case.csv", index=False)
    assert run_in_process(str(tmp_path / "per_case.csv")) == 0
    assert "Bold (**): highest mean of each column (hd95 not marked" in capsys.readouterr().out
    assert run_in_process(str(tmp_path / "per_case.csv"), "--metrics", "dsc") == 0
    assert "Bold (**): highest mean of each column.\n" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:ci_over='folds' with 2 fold")
def test_the_report_says_when_the_intervals_are_over_fold_means(tmp_path: Path) -> None:
    report.write_report(study_table(), tmp_path, ci_over="folds")
    assert (
        "## Table 1: mean ± 95% t confidence interval over fold means, per loss and class"
        in (tmp_path / "report.md").read_text().splitlines()
    )
    assert r"mean $\pm$ 95\% CI over fold means}" in (tmp_path / "summary.tex").read_text()


@pytest.mark.slow
def test_cli_subprocess_bad_input(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path / "nope.csv"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "nope.csv" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_report_leaves_the_callers_matplotlib_backend_alone(tmp_path: Path) -> None:
    """Importing the report module and writing figures neither picks nor changes the process's plotting backend."""
    code = (
        "import matplotlib; matplotlib.use('svg'); import pandas as pd; from monai_mixedfocal import report; "
        "df = pd.DataFrame({'case': ['a', 'b', 'a', 'b'], 'method': ['x', 'x', 'y', 'y'], 'class': 'c', "
        "'dsc': [0.1, 0.2, 0.3, 0.4]}); "
        f"report.write_report(df, {str(tmp_path)!r}); print(matplotlib.get_backend())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "svg"
    assert (tmp_path / "boxplot_dsc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_intervals_over_folds_still_count_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--ci-over folds``: the count table still counts the 8 cases (Table 1's values: the test below)."""
    csv = tmp_path / "per_case.csv"
    study_table().to_csv(csv, index=False)
    with pytest.warns(UserWarning, match=r"ci_over='folds' with 2 fold\(s\)"):  # study_table has 2 folds
        assert run_in_process(str(csv), "--ci-over", "folds", "--metrics", "dsc") == 0
    out = capsys.readouterr().out
    assert "confidence interval over fold means" in out
    counts = out.split("Cases used")[1].split("Table 2")[0]
    assert re.findall(r"\| (\d+) ", counts) and set(re.findall(r"\| (\d+) ", counts)) == {"8"}


def test_bold_marks_only_metrics_where_higher_is_better(tmp_path: Path) -> None:
    """A distance column (lower is better) is reported but not bolded, and the report says why."""
    df = study_table()
    df["hd95"] = np.arange(len(df), dtype=float)
    cells, best = report.table1(stats.summary_table(df))
    hd95 = [label for label in cells.columns if label.startswith("hd95")]
    assert hd95 and not best[hd95].to_numpy().any() and best.drop(columns=hd95).to_numpy().any()
    text = report.write_report(df, tmp_path).read_text()
    assert "Bold: highest mean of each column (hd95 not marked: which direction is better is not known)." in text


@pytest.mark.filterwarnings("ignore:ci_over='folds' with 2 fold")
@pytest.mark.parametrize(
    ("args", "summary_settings", "test_settings"),
    [
        (("--confidence", "0.8"), {"confidence": 0.8}, {}),
        (("--ci-over", "folds"), {"ci_over": "folds"}, {}),
        (("--correction", "none"), {}, {"correction": "none"}),
        (("--test", "signedrank"), {}, {"test": "signedrank"}),
    ],
)
def test_cli_options_change_the_numbers_not_only_the_headers(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    summary_settings: dict,
    test_settings: dict,
) -> None:
    """The printed Table 1 and Table 2 and the report's CSV files are the library's results with the same setting (and
    differ from the defaults' on this table); the headers alone are built from the arguments and prove nothing."""
    df = study_table()
    csv = tmp_path / "per_case.csv"
    df.to_csv(csv, index=False)
    assert run_in_process(str(csv), *args, "--out", str(tmp_path / "rep")) == 0
    out = capsys.readouterr().out

    def tables(summary: pd.DataFrame, pairs: pd.DataFrame) -> list[str]:
        matrices = [report.pairwise_matrix(pairs, cls, list(METHODS)) for cls in CLASSES]
        table1 = report.markdown_table(*report.table1(summary), escape=False)  # bold as the report's (it was not)
        return [table1, *(report.markdown_table(t, escape=False) for t in matrices)]

    summary = stats.summary_table(df, **summary_settings)
    pairs = stats.pairwise_tests(df, **test_settings)
    assert all(table in out for table in tables(summary, pairs))
    assert not all(table in out for table in tables(stats.summary_table(df), stats.pairwise_tests(df)))
    written = pd.read_csv(tmp_path / "rep" / "summary.csv")
    np.testing.assert_allclose(written[["mean", "half_width", "n"]], summary[["mean", "half_width", "n"]], rtol=1e-12)
    written_pairs = pd.concat(pd.read_csv(f) for f in sorted((tmp_path / "rep").glob("pairwise_*.csv")))
    expected_pairs = pairs.sort_values("class", kind="stable")  # kidney before tumour, as the files sort
    np.testing.assert_allclose(written_pairs[["p_raw", "p_adjusted"]], expected_pairs[["p_raw", "p_adjusted"]])
    counts = (tmp_path / "rep" / "report.md").read_text().split("### Number of cases used")[1].split("##")[0]
    assert set(re.findall(r"\| (\d+) ", counts)) == {"7", "8"}  # cases (focal lacks one precision), never folds


def test_table1_groups_columns_by_class_whatever_the_order_of_the_summary() -> None:
    """A summary given in another row order (sorted by metric, say) still gives each class's metrics side by side."""
    df = study_table()[["case", "method", "class", "dsc", "recall"]]
    cells, _ = report.table1(stats.summary_table(df).sort_values("metric", kind="stable"))
    assert list(cells.columns) == ["DSC kidney", "Recall kidney", "DSC tumour & cyst", "Recall tumour & cyst"]


def test_the_tables_and_figures_show_the_classes_in_one_order() -> None:
    """Against the bug (the order of first appearance in the summary): a first method without class B put B last in
    Table 1 and the precision-recall panels (A, C, B), while the box plots and Table 2 showed A, B, C."""
    rows = [("m0", "A"), ("m1", "B"), ("m0", "C"), ("m1", "A"), ("m1", "C")]
    df = pd.DataFrame(
        [
            {"case": f"c{i}", "method": m, "class": c, "dsc": 0.5 + 0.1 * i, "precision": 0.6, "recall": 0.4 + 0.1 * i}
            for m, c in rows
            for i in range(3)
        ]
    )
    summary = stats.summary_table(df)
    assert report.summary_classes(summary) == ["A", "B", "C"]
    cells, _ = report.table1(summary)
    assert [column.split()[-1] for column in cells.columns[::3]] == ["A", "B", "C"]
    titles = [ax.get_title() for ax in report.precision_recall_figure(summary).axes if ax.get_title()]
    assert titles == [f"Precision vs recall — {c}" for c in "ABC"]
    titles = [ax.get_title() for ax in report.boxplot_figure(df).axes if ax.get_title()]
    assert titles == [f"DSC — {c}" for c in "ABC"]
    assert list(dict.fromkeys(stats.pairwise_tests(df)["class"])) == ["A", "B", "C"]


def test_summary_classes_merges_each_methods_order() -> None:
    summary = pd.DataFrame(
        {"method": ["m0", "m0", "m1", "m1", "m2", "m2"], "class": ["B", "D", "A", "B", "C", "D"], "metric": "dsc"}
    )
    assert report.summary_classes(summary) == ["A", "B", "C", "D"]
    assert report.summary_classes(summary.iloc[:0]) == []


def test_figures_draw_names_with_dollar_signs_as_written(tmp_path: Path) -> None:
    """Against the bug (names read as matplotlib mathtext): ``loss_$x^$`` stopped the report with a
    ParseSyntaxException, ``cost $5 vs $10`` lost its spaces in italics."""
    df = study_table()
    df["method"] = df["method"].map(dict(zip(METHODS, ["loss_$x^$", "cost $5 vs $10", "plain", "$"])))
    df["class"] = df["class"].replace({"kidney": "kidney $k$"})
    report.write_report(df, tmp_path, overlays=overlay_inputs(), overlay_case="$7")
    for name in ("boxplot_dsc.png", "precision_recall.png", "overlays.png"):
        assert_png_not_blank(tmp_path / name)
    figure = report.boxplot_figure(df)
    ticks = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    assert ticks[:2] == [r"loss_\$x^\$" + "\n(n=8)", r"cost \$5 vs \$10" + "\n(n=8)"]  # \$: a literal dollar sign
    assert figure.axes[0].get_title() == r"DSC — kidney \$k\$"


def test_the_precision_recall_axes_say_what_the_intervals_are_over() -> None:
    """Against the bug (the axes said only "95% CI"): the PNG pasted into a paper loses the report's heading."""
    with pytest.warns(UserWarning, match="interval over 2 fold means has 1 degree of freedom"):
        summary = stats.summary_table(study_table(), ci_over="folds", confidence=0.9)
    ax = report.precision_recall_figure(summary, 0.9, "folds").axes[0]
    assert ax.get_xlabel() == "mean recall (± 90% CI over fold means)"
    assert ax.get_ylabel() == "mean precision (± 90% CI over fold means)"
    assert report.precision_recall_figure(summary).axes[0].get_xlabel() == "mean recall (± 95% CI over cases)"


def test_the_precision_recall_points_of_equal_methods_stay_visible_within_the_possible_range() -> None:
    """Against the cosmetic bugs: a filled marker hid another method's at the same means, and panels whose values were
    all 0 (or whose error bars crossed 0 or 1) had axes from -0.05, where no precision or recall can lie."""
    df = study_table()
    df.loc[df["method"] == METHODS[1], ["precision", "recall"]] = 0.0
    df.loc[df["method"] == METHODS[0], ["precision", "recall"]] = 0.0
    summary = stats.summary_table(df[df["method"].isin(METHODS[:2])])
    for ax in report.precision_recall_figure(summary).axes:
        points = [container.lines[0] for container in ax.containers]  # each method's marker (without error bars)
        assert len(points) == 2 and {line.get_markerfacecolor() for line in points} == {"none"}
        assert len({line.get_marker() for line in points}) == 2
        assert ax.get_xlim()[0] >= -0.02 and ax.get_ylim()[0] >= -0.02
    wide = stats.summary_table(study_table())
    for ax in report.precision_recall_figure(wide).axes:
        assert ax.get_xlim()[0] >= -0.02 and ax.get_xlim()[1] <= 1.02 and ax.get_xlim() == ax.get_ylim()


def test_a_plain_table_keeps_a_pipe_in_its_column() -> None:
    cells = pd.DataFrame({"DSC": ["0.1", "0.2"]}, index=pd.Index(["a|b", "c_d *e*"], name="Method"))
    lines = report.markdown_table(cells, escape=False).splitlines()
    assert lines[2] == r"| a\|b    | 0.1 |" and lines[3] == "| c_d *e* | 0.2 |"  # nothing else escaped


@pytest.mark.parametrize(
    ("case", "title"),
    [(None, "Segmentations"), ("case_00001", "Segmentations of case_00001"), ("7", "Segmentations of case 7"),
     ("BraTS20_Training_001", "Segmentations of case BraTS20_Training_001")],
)  # fmt: skip
def test_overlay_title(case: str | None, title: str) -> None:
    assert report.overlay_title(case) == title
    assert report.overlay_figure(overlay_inputs(), ["kidney", "tumour"], case).get_suptitle() == title


def test_radiological_view_puts_the_patients_right_on_the_left_and_anterior_at_the_top() -> None:
    ras_slice = np.zeros((4, 3))  # x: to the patient's right, y: to anterior
    ras_slice[3, 2] = 1  # right, anterior
    ras_slice[0, 0] = 2  # left, posterior
    view = report.radiological_view(ras_slice)
    assert view.shape == (3, 4) and view[0, 0] == 1 and view[-1, -1] == 2
    with pytest.raises(ValueError, match=r"expects a 2-D axial slice, got shape \(2, 2, 2\)"):
        report.radiological_view(np.zeros((2, 2, 2)))
