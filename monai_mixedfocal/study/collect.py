# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Collects the finished runs of a study into one per-case table, and one case's segmentations for the overlays."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from monai_mixedfocal.report import pick_overlay_slice, radiological_view
from monai_mixedfocal.study.per_case_csv import PER_CASE_METRICS
from monai_mixedfocal.study.runs import Run


def collect_per_case(runs: Sequence[Run]) -> pd.DataFrame:
    """Concatenate the per-case CSVs of the finished runs: columns ``case, method, class, fold`` and the metrics.

    Classes absent from both the label and the prediction of a case (``absent`` column of the CSV) have undefined
    metrics; they are kept as missing values, which the statistics skip and count. Each CSV is checked against the
    run's validation fold (:func:`~monai_mixedfocal.study.per_case_csv.read_per_case_csv`): a damaged one (e.g. cut
    short when copied back from a cluster job) leaves its run unfinished, not collected (see
    :attr:`~monai_mixedfocal.study.runs.Run.per_case_problem`).

    Raises:
        ValueError: if no run has finished (naming the damaged CSVs, if any).
    """
    frames, damaged = [], []
    for run in runs:
        if not run.per_case_csv.is_file():
            continue
        try:
            table = run.per_case_table()
        except (OSError, ValueError) as err:  # a damaged CSV: the run is unfinished (Run.is_finished says the same)
            damaged.append(str(err))
            continue
        table = table[["case", "class", *PER_CASE_METRICS]].copy()
        table.insert(1, "method", run.loss)
        table.insert(3, "fold", run.fold)
        frames.append(table)
    if not frames:
        found = f"; damaged per-case CSV(s), evaluated again by the study: {' | '.join(damaged)}" if damaged else ""
        raise ValueError(f"no finished run to collect: run the study first (or check the runs' logs){found}")
    return pd.concat(frames, ignore_index=True)


def _canonical(path: Path) -> np.ndarray:
    """A NIfTI volume reoriented to RAS (axial slices along the last axis), whatever its on-disk orientation."""
    return np.asanyarray(nib.as_closest_canonical(nib.load(str(path))).dataobj)


def _prediction_file(run: Run, image: Path) -> Path | None:
    """The evaluation's saved segmentation of ``image``: ``SaveImaged(output_postfix="seg")`` names it after the image
    (``imaging.nii.gz`` -> ``imaging_seg.nii.gz``, MONAI's ``create_file_basename``) in folders that mirror the image's
    last folders (``eval/case_00001/``). Matched whole, so that ``spleen_1`` does not find ``spleen_10``'s file."""
    stem, extension = os.path.splitext(image.name)
    stem = os.path.splitext(stem)[0] if extension == ".gz" else stem
    eval_dir = run.root / "eval"
    for path in sorted(eval_dir.rglob(f"{stem}_seg.nii*")):
        folders = path.parent.relative_to(eval_dir).parts
        mirrored = not folders or image.parent.parts[-len(folders) :] == folders
        if mirrored and path.name in (f"{stem}_seg.nii", f"{stem}_seg.nii.gz"):
            return path
    return None


def overlay_slices(
    runs: Sequence[Run], image: Path, label: Path
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
    """One axial slice of a case per loss (image, label, prediction), from the predictions the evaluation saved.

    The slice shows the most of the rarest class of the label (:func:`monai_mixedfocal.report.pick_overlay_slice`).
    Returns ``None`` when a loss has no saved prediction of the case.
    """
    predictions = {}
    for run in runs:
        found = _prediction_file(run, image)
        if found is None:
            return None
        predictions[run.loss] = found
    image_volume, label_volume = _canonical(image), _canonical(label)
    index = pick_overlay_slice(label_volume, axis=-1)
    slices = {}
    for loss, path in predictions.items():
        prediction = _canonical(path)
        prediction = prediction[..., 0] if prediction.ndim == 4 else prediction
        if prediction.shape != label_volume.shape:
            return None
        views = (image_volume[..., index], label_volume[..., index], prediction[..., index])
        slices[loss] = tuple(radiological_view(view) for view in views)
    return slices  # type: ignore[return-value]
