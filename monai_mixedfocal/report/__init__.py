# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The study report: tables in the paper's format (Markdown, CSV, LaTeX) and figures (PNG).

- :mod:`~monai_mixedfocal.report.tables`: Table 1 and Table 2 as text (:func:`table1`, :func:`pairwise_matrix`,
  :func:`markdown_table`, :func:`latex_table`, :func:`format_p`), public so that the command line and notebooks can
  print the same tables;
- :mod:`~monai_mixedfocal.report.figures`: box plots, precision against recall, segmentation overlays (axial slices
  in the radiological view, :func:`radiological_view`);
- :mod:`~monai_mixedfocal.report.writer`: :func:`write_report`, the report folder of a per-case table.
"""

from __future__ import annotations

from monai_mixedfocal.report.figures import (
    OverlayInput,
    boxplot_figure,
    overlay_figure,
    overlay_title,
    pick_overlay_slice,
    precision_recall_figure,
    radiological_view,
)
from monai_mixedfocal.report.tables import (
    METRIC_LABELS,
    bold_rule,
    format_p,
    interval_description,
    latex_escape,
    latex_table,
    markdown_escape,
    markdown_table,
    one_line,
    pairwise_matrix,
    summary_classes,
    table1,
)
from monai_mixedfocal.report.writer import REPORT_MANIFEST, TEST_DESCRIPTIONS, write_report

__all__ = [
    "METRIC_LABELS",
    "REPORT_MANIFEST",
    "TEST_DESCRIPTIONS",
    "OverlayInput",
    "bold_rule",
    "boxplot_figure",
    "format_p",
    "interval_description",
    "latex_escape",
    "latex_table",
    "markdown_escape",
    "markdown_table",
    "one_line",
    "overlay_figure",
    "overlay_title",
    "pairwise_matrix",
    "pick_overlay_slice",
    "precision_recall_figure",
    "radiological_view",
    "summary_classes",
    "table1",
    "write_report",
]
