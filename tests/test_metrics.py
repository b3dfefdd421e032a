# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Per-case confusion-matrix metrics: hand-computed values, the empty-class convention, MONAI cross-checks, the CSV."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from monai.data import MetaTensor
from monai.metrics import ConfusionMatrixMetric, DiceMetric

from monai_mixedfocal.metrics import (
    METRIC_NAMES,
    PER_CASE_COLUMNS,
    ConfusionCountsMetric,
    PerCaseMetric,
    confusion_counts,
    confusion_counts_from_labels,
    metric_from_counts,
    per_case_table,
    summarize_per_case,
    write_csv_atomic,
)


def _onehot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """[B, *spatial] integer labels -> [B, C, *spatial] float one-hot."""
    t = torch.as_tensor(labels, dtype=torch.long)
    return torch.nn.functional.one_hot(t, num_classes).movedim(-1, 1).float()


# case 0: kidney TP=2 FP=1 FN=1, tumour TP=0 FP=0 FN=2 (missed); case 1: kidney absent in both, tumour FP only
LABEL = np.array([[[1, 1, 1, 0], [2, 2, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]])
PRED = np.array([[[1, 1, 0, 1], [0, 0, 0, 0]], [[0, 0, 0, 0], [2, 0, 0, 0]]])


@pytest.fixture
def onehots() -> tuple[torch.Tensor, torch.Tensor]:
    return _onehot(PRED, 3), _onehot(LABEL, 3)


def test_confusion_counts_by_hand(onehots: tuple[torch.Tensor, torch.Tensor]) -> None:
    pred, label = onehots
    counts = confusion_counts(pred, label, include_background=False)
    assert counts.dtype == torch.int64
    expected = [[[2, 1, 1], [0, 0, 2]], [[0, 0, 0], [0, 1, 0]]]
    assert counts.tolist() == expected
    with_bg = confusion_counts(pred, label, include_background=True)
    assert with_bg.shape == (2, 3, 3)
    assert with_bg[0, 0].tolist() == [2, 3, 1]  # background: 5 predicted, 3 true, 2 shared


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.int64])
@pytest.mark.parametrize("include_background", [True, False])
def test_counts_of_class_index_maps_equal_the_one_hot_counts(
    dtype: torch.dtype, include_background: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By hand on LABEL / PRED, then random 3-D maps of 4 classes counted in chunks of 7 voxels (a case's chunks,
    and the cases, add up) and as MetaTensors."""
    by_hand = confusion_counts_from_labels(
        torch.as_tensor(PRED)[:, None].to(dtype), torch.as_tensor(LABEL)[:, None].to(dtype), 3, include_background
    )
    expected = [[[2, 1, 1], [0, 0, 2]], [[0, 0, 0], [0, 1, 0]]]
    assert by_hand.dtype == torch.int64
    assert by_hand.tolist() == (
        [[[2, 3, 1], *expected[0]], [[7, 0, 1], *expected[1]]] if include_background else expected
    )
    generator = torch.Generator().manual_seed(0)
    pred, label = (torch.randint(0, 4, (3, 1, 5, 4, 3), generator=generator) for _ in range(2))
    one_hot = confusion_counts(_onehot(pred[:, 0], 4), _onehot(label[:, 0], 4), include_background)
    empty = torch.zeros(2, 1, 0, 3, dtype=dtype)  # no voxels: counts of 0, as the one-hot route gives
    assert torch.equal(
        confusion_counts_from_labels(empty, empty, 3, include_background),
        confusion_counts(_onehot(empty[:, 0], 3), _onehot(empty[:, 0], 3), include_background),
    )
    monkeypatch.setattr("monai_mixedfocal.metrics._LABEL_CHUNK", 7)
    counts = confusion_counts_from_labels(
        MetaTensor(pred.to(dtype)), MetaTensor(label.to(dtype)), 4, include_background
    )
    assert torch.equal(counts, one_hot)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label_value": 3.0}, r"label /data/seg\.nii\.gz: y holds 3\.0, not a class index in \[0, 3\)"),
        ({"label_value": -1.0}, r"y holds -1\.0, not a class index"),
        ({"label_value": 0.5}, r"y holds 0\.5, not a class index"),
        ({"pred_value": float("nan")}, r"prediction for /data/img\.nii\.gz: y_pred holds nan, not a class index"),
        ({"label_shape": (1, 1, 4, 5)}, r"class-index maps of one shape \[B, 1, \*spatial\], got \(1, 1, 4, 4\) and"),
        ({"pred_shape": (1, 3, 4, 4), "label_shape": (1, 3, 4, 4)}, r"class-index maps of one shape"),
        ({"num_classes": 1}, r"num_classes must be an integer of at least 2, got 1"),
        ({"num_classes": 3.0}, r"num_classes must be an integer of at least 2, got 3\.0"),
    ],
)
def test_class_index_counts_refuse_what_is_not_a_class_index_map(change: dict, message: str) -> None:
    pred = torch.zeros(change.get("pred_shape", (1, 1, 4, 4)))
    label = torch.zeros(change.get("label_shape", (1, 1, 4, 4)))
    pred.view(-1)[-1] = change.get("pred_value", 0.0)
    label.view(-1)[-1] = change.get("label_value", 0.0)
    pred = MetaTensor(pred, meta={"filename_or_obj": "/data/img.nii.gz"})
    label = MetaTensor(label, meta={"filename_or_obj": "/data/seg.nii.gz"})
    with pytest.raises(ValueError, match=message):
        confusion_counts_from_labels(pred, label, change.get("num_classes", 3), include_background=False)


def test_counts_metric_takes_class_index_maps_with_num_classes(onehots: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The bundles' evaluation: one case at a time, as IgniteMetricHandler passes a decollated batch."""
    one_hot = ConfusionCountsMetric("dsc")
    one_hot(list(onehots[0]), list(onehots[1]))
    indices = ConfusionCountsMetric("dsc", num_classes=3)
    indices([torch.as_tensor(p)[None].float() for p in PRED], [torch.as_tensor(t)[None].float() for t in LABEL])
    assert torch.equal(indices.get_buffer(), one_hot.get_buffer())
    assert torch.equal(indices.aggregate(), one_hot.aggregate())
    for bad in (1, 2.5, True):
        with pytest.raises(ValueError, match="num_classes must be an integer of at least 2"):
            ConfusionCountsMetric(num_classes=bad)


def test_metric_values_and_empty_class_convention(onehots: tuple[torch.Tensor, torch.Tensor]) -> None:
    counts = confusion_counts(*onehots, include_background=False)
    dsc = metric_from_counts(counts, "dsc")
    assert dsc[0, 0].item() == pytest.approx(4 / 6)  # 2TP / (2TP + FP + FN)
    assert dsc[0, 1].item() == 0.0  # missed tumour
    assert math.isnan(dsc[1, 0].item())  # kidney absent from label and prediction
    assert dsc[1, 1].item() == 0.0  # false alarm
    precision, recall, iou = (metric_from_counts(counts, n) for n in ("precision", "recall", "iou"))
    assert precision[0, 0].item() == pytest.approx(2 / 3)
    assert recall[0, 0].item() == pytest.approx(2 / 3)
    assert iou[0, 0].item() == pytest.approx(2 / 4)
    # a denominator of 0 with the class present on one side scores 0, never NaN
    assert precision[0, 1].item() == 0.0 and recall[1, 1].item() == 0.0
    for values in (precision, recall, iou):
        assert math.isnan(values[1, 0].item())


def test_counts_are_exact_beyond_float32_precision() -> None:
    side = 2**8 + 1  # 257^3 = 16,974,593 voxels > 2^24, where float32 sums stop being exact
    label = torch.zeros(1, 2, side, side, side, dtype=torch.bool)
    label[:, 1] = True
    counts = confusion_counts(label, label, include_background=False)
    assert counts[0, 0].tolist() == [side**3, 0, 0]


def test_cumulative_metric_skips_absent_classes(onehots: tuple[torch.Tensor, torch.Tensor]) -> None:
    pred, label = onehots
    metric = ConfusionCountsMetric("dsc", include_background=False, get_not_nans=True)
    metric(y_pred=pred[:1], y=label[:1])
    metric(y_pred=list(pred[1:]), y=list(label[1:]))  # a decollated batch, as engines pass it
    assert metric.get_buffer().shape == (2, 2, 3)
    value, not_nans = metric.aggregate()
    # MONAI's "mean": each case over its present classes, then over the cases; the absent pair is not a 0
    assert value.item() == pytest.approx(((4 / 6 + 0) / 2 + 0 / 1) / 2)
    assert not_nans.item() == 2
    per_class, per_class_n = metric.aggregate(reduction="mean_batch")
    assert per_class.tolist() == pytest.approx([4 / 6, 0.0]) and per_class_n.tolist() == [1, 2]
    recall = metric.aggregate(reduction="mean_batch", metric_name="recall")[0]
    assert recall.tolist() == pytest.approx([2 / 3, 0.0])
    metric.reset()
    with pytest.raises(ValueError, match="no cases buffered"):
        metric.aggregate()


def test_per_case_metric_matches_counts_metric(onehots: tuple[torch.Tensor, torch.Tensor]) -> None:
    pred, label = onehots
    for name in ("dsc", "precision", "recall", "iou"):
        per_case = PerCaseMetric(name, include_background=False)(pred, label)
        counts_metric = ConfusionCountsMetric(name, include_background=False)
        counts_metric(pred, label)
        expected = counts_metric.aggregate(reduction="none")
        assert per_case.shape == (2, 2)
        assert torch.equal(per_case.isnan(), expected.isnan())
        assert torch.allclose(per_case.nan_to_num(-1), expected.nan_to_num(-1))
    with pytest.raises(ValueError, match="cannot aggregate 'recall'"):
        metric = PerCaseMetric("dsc")
        metric(pred, label)
        metric.aggregate(metric_name="recall")


def test_agrees_with_monai_metrics_on_random_cases() -> None:
    rng = np.random.default_rng(0)
    label = _onehot(rng.integers(0, 3, size=(4, 12, 10, 8)), 3)
    pred = _onehot(rng.integers(0, 3, size=(4, 12, 10, 8)), 3)
    dice = DiceMetric(include_background=False, reduction="none")(pred, label)
    assert torch.allclose(PerCaseMetric("dsc", include_background=False)(pred, label).float(), dice, atol=1e-6)
    for name, monai_name in (("precision", "precision"), ("recall", "sensitivity")):
        reference = ConfusionMatrixMetric(
            include_background=False, metric_name=monai_name, compute_sample=True, reduction="mean_batch"
        )
        reference(pred, label)
        expected = reference.aggregate()[0]  # per class, the mean over cases of the per-case value
        ours = PerCaseMetric(name, include_background=False)(pred, label).mean(dim=0)
        assert torch.allclose(ours.float(), expected, atol=1e-6)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="same one-hot shape"):
        confusion_counts(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="at least two channels"):
        confusion_counts(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), include_background=False)
    with pytest.raises(ValueError, match="metric_name must be one of"):
        ConfusionCountsMetric("hausdorff")
    with pytest.raises(ValueError, match="size 3"):
        metric_from_counts(torch.zeros(2, 2, 4), "dsc")


def test_per_case_table_and_summary(onehots: tuple[torch.Tensor, torch.Tensor]) -> None:
    counts = confusion_counts(*onehots, include_background=False)
    table = per_case_table(counts, ["case_a", "case_b"], {1: "kidney", 2: "tumor"})
    assert list(table.columns) == list(PER_CASE_COLUMNS)
    assert table[["case", "class", "class_index"]].values.tolist() == [
        ["case_a", "kidney", 1],
        ["case_a", "tumor", 2],
        ["case_b", "kidney", 1],
        ["case_b", "tumor", 2],
    ]
    assert table["absent"].tolist() == [False, False, True, False]
    assert table["label_voxels"].tolist() == [3, 2, 0, 0]
    assert table["pred_voxels"].tolist() == [3, 0, 0, 1]
    assert table.loc[0, "dsc"] == pytest.approx(4 / 6)
    summary = summarize_per_case(table).set_index("class")
    assert summary.loc["kidney", "n_cases"] == 2 and summary.loc["kidney", "n_absent"] == 1
    assert summary.loc["kidney", "dsc_mean"] == pytest.approx(4 / 6)  # the absent case is not a 0 or a NaN
    assert summary.loc["tumor", "dsc_mean"] == 0.0 and summary.loc["tumor", "n_absent"] == 0
    with pytest.raises(ValueError, match="3 case names for 2 cases"):
        per_case_table(counts, ["a", "b", "c"], ["kidney", "tumor"])
    with pytest.raises(ValueError, match="include_background"):
        per_case_table(counts, ["a", "b"], ["background", "kidney", "tumor"])


def test_summary_needs_class_absent_and_the_metric_columns_only(onehots: tuple[torch.Tensor, torch.Tensor]) -> None:
    table = per_case_table(confusion_counts(*onehots, include_background=False), ["a", "b"], ["kidney", "tumor"])
    full = summarize_per_case(table)
    pd.testing.assert_frame_equal(summarize_per_case(table[["class", "absent", *METRIC_NAMES]]), full)
    for column in ("class", "absent", "iou"):
        with pytest.raises(ValueError, match=rf"missing the columns \['{column}'\]"):
            summarize_per_case(table.drop(columns=column))


def test_summary_keeps_the_order_of_the_classes(onehots: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The classes keep their table order (tumour before kidney here), not the alphabet's."""
    table = per_case_table(confusion_counts(*onehots, include_background=False), ["a", "b"], ["tumor", "kidney"])
    assert summarize_per_case(table)["class"].tolist() == ["tumor", "kidney"]


def test_csv_round_trip_keeps_absent_cells_empty(tmp_path, onehots: tuple[torch.Tensor, torch.Tensor]) -> None:
    table = per_case_table(confusion_counts(*onehots, include_background=False), ["a", "b"], ["kidney", "tumor"])
    path = write_csv_atomic(table, tmp_path / "out" / "per_case.csv")
    assert sorted(p.name for p in path.parent.iterdir()) == ["per_case.csv"]  # no temporary file left
    text = path.read_text().splitlines()
    assert text[0] == ",".join(PER_CASE_COLUMNS)
    assert text[3].startswith("b,kidney,0,,,,,0,0,0,0,0,True")
    back = pd.read_csv(path)
    assert back["dsc"].isna().tolist() == [False, False, True, False]
    assert back["dsc"].mean() == pytest.approx((4 / 6) / 3)


def test_a_shape_mismatch_names_the_files_it_knows() -> None:
    """In evaluation the label is a MetaTensor read from its file: a label whose shape is not the image's is named."""
    pred = MetaTensor(torch.zeros(1, 3, 4, 4, 4), meta={"filename_or_obj": "/d/case_00003/imaging.nii.gz"})
    label = MetaTensor(torch.zeros(1, 3, 4, 3, 4), meta={"filename_or_obj": "/d/case_00003/segmentation.nii.gz"})
    prefix = "label /d/case_00003/segmentation.nii.gz, prediction for /d/case_00003/imaging.nii.gz: "
    with pytest.raises(ValueError, match=rf"^{re.escape(prefix)}y_pred and y must have the same one-hot shape"):
        ConfusionCountsMetric("dsc")([pred[0]], [label[0]])  # as IgniteMetricHandler passes a decollated batch
    with pytest.raises(ValueError, match=r"^y_pred and y must have"):  # nothing known: nothing named
        confusion_counts(pred.as_tensor(), label.as_tensor())
