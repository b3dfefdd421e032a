# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The loss study: losses x folds through the bundles, per-case metrics, statistics and the report.

- :mod:`~monai_mixedfocal.study.runs`: the runs, their folders and their ``python -m monai.bundle`` commands.
- :mod:`~monai_mixedfocal.study.runner`: resumable execution with progress.
- :mod:`~monai_mixedfocal.study.collect`: per-case tables and overlay slices from finished runs.
- :mod:`~monai_mixedfocal.study.study`: :class:`StudySpec`, :func:`run_study`, :func:`collect_and_report`.
- :mod:`~monai_mixedfocal.study.demo`: the embedded default (generated data, CPU-sized schedule).
- ``python -m monai_mixedfocal study``: :mod:`~monai_mixedfocal.study.cli`.
"""

from __future__ import annotations

from monai_mixedfocal.study.cli import register

__all__ = ["register"]
