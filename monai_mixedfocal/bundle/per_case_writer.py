# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""An evaluator handler that writes the long per-case, per-class metrics CSV (and a per-class summary).

It pairs with an ``IgniteMetricHandler`` around :class:`monai_mixedfocal.metrics.ConfusionCountsMetric` with
``save_details=True``: that handler leaves the ``[cases, classes, 3]`` counts in
``engine.state.metric_details[<metric name>]`` (gathered over ranks), and this one collects the case ids of the same
iterations and writes, when the evaluator completes:

- ``output_file``: one row per case and class, columns :data:`monai_mixedfocal.metrics.PER_CASE_COLUMNS`
  (``case, class, class_index, dsc, precision, recall, iou, tp, fp, fn, label_voxels, pred_voxels, absent``),
- ``summary_file`` (optional): one row per class, means over the present cases with the count of absent ones.

Both files are written atomically and only on rank 0, so the CSV existing means the evaluation finished.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from monai.data import decollate_batch
from monai.utils import string_list_all_gather

from monai_mixedfocal.metrics import per_case_table, summarize_per_case, write_csv_atomic

__all__ = ["PerCaseMetricsWriter"]


def _kept_classes(classes: Mapping[Any, str] | Sequence[str], include_background: bool) -> dict[int, str]:
    items = classes.items() if isinstance(classes, Mapping) else enumerate(classes)
    ordered = sorted((int(index), str(name)) for index, name in items)
    return {index: name for index, name in ordered if include_background or index != 0}


class PerCaseMetricsWriter:
    """Write the per-case metrics CSV of an evaluation from the counts a ``ConfusionCountsMetric`` buffered.

    Args:
        output_file: the long CSV (one row per case and class).
        metric_name: the name the ``ConfusionCountsMetric`` handler is registered under in the evaluator
            (``key_val_metric`` or ``additional_metrics``), e.g. ``"val_mean_dice"``.
        classes: the label values and names, as the metadata ``channel_def`` (``{"0": "background", "1": "kidney",
            "2": "tumor"}``) or a list of names indexed by label value.
        include_background: must match the metric's ``include_background`` (class 0 dropped when False).
        summary_file: optional per-class summary CSV.
        case_key: the data key holding the case id (the datalists' ``"case"``); when a batch lacks it, the image's
            file name (``filename_or_obj``) is used.
        image_key: the key of the image whose metadata gives the fallback case id.

    Raises:
        ValueError: no class left to report.

    Example:
        >>> writer = PerCaseMetricsWriter("eval/per_case_metrics.csv", "val_mean_dice", {"0": "bg", "1": "kidney"})
        >>> writer.attach(evaluator)  # doctest: +SKIP
    """

    def __init__(
        self,
        output_file: str | os.PathLike,
        metric_name: str,
        classes: Mapping[Any, str] | Sequence[str],
        include_background: bool = False,
        summary_file: str | os.PathLike | None = None,
        case_key: str = "case",
        image_key: str = "image",
    ) -> None:
        self.classes = _kept_classes(classes, include_background)
        if not self.classes:
            raise ValueError(f"no class to report from {classes!r} with include_background={include_background}.")
        self.output_file = Path(output_file)
        self.summary_file = None if summary_file in (None, "") else Path(summary_file)
        self.metric_name = metric_name
        self.case_key = case_key
        self.image_key = image_key
        self.cases: list[str] = []
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Collect case ids every iteration and write the CSV files when ``engine`` completes."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.cases = []

    def _case_id(self, item: Mapping[str, Any]) -> str:
        if self.case_key in item:
            return str(item[self.case_key])
        image = item.get(self.image_key)
        meta = getattr(image, "meta", None) or {}
        if "filename_or_obj" not in meta:
            raise ValueError(
                f"cannot name the case: the batch has no {self.case_key!r} key and {self.image_key!r} has no "
                "filename_or_obj metadata."
            )
        return str(meta["filename_or_obj"])

    def _collect(self, engine: Engine) -> None:
        batch = engine.state.batch
        items = batch if isinstance(batch, list) else decollate_batch(batch, detach=True)
        self.cases.extend(self._case_id(item) for item in items)

    def _write(self, engine: Engine) -> None:
        details = engine.state.metric_details.get(self.metric_name) if engine.state.metric_details else None
        if details is None or getattr(details, "ndim", 0) != 3:
            raise ValueError(
                f"no [cases, classes, 3] counts under metric {self.metric_name!r}: register an IgniteMetricHandler "
                "around monai_mixedfocal.metrics.ConfusionCountsMetric with save_details=true under that name."
            )
        cases = string_list_all_gather(self.cases) if idist.get_world_size() > 1 else list(self.cases)
        if idist.get_rank() != 0:
            return
        table = per_case_table(details.cpu(), cases, self.classes)
        write_csv_atomic(table, self.output_file)
        if self.summary_file is not None:
            write_csv_atomic(summarize_per_case(table), self.summary_file)
        self.logger.info(f"wrote per-case metrics for {len(cases)} cases to {self.output_file}")
