# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""What identifies a training run of a bundle: its data split and its loss, recorded beside its resume checkpoint.

Two runs started in the same ``bundle_root`` share ``checkpoints/last.pt`` and ``models/model.pt``. The settings
recorded with ``last.pt`` (``checkpoints/last.json``) let a run refuse to resume another run's interrupted training
(:class:`~monai_mixedfocal.bundle.ResumeCheckpoint`), and let an evaluation refuse to score a model on another fold of
the same data, which would include the cases it was trained on (:func:`check_evaluation_split`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_mixedfocal.utils import changed_entries

__all__ = [
    "SPLIT_KEYS",
    "check_evaluation_split",
    "check_resume",
    "read_run_settings",
    "refuse_another_run",
    "run_settings",
    "run_settings_file",
]

#: the settings that choose a run's training and validation cases
SPLIT_KEYS: tuple[str, ...] = ("dataset_dir", "datalist", "fold", "num_folds", "fold_seed")


def run_settings(
    dataset_dir: str | os.PathLike | None,
    datalist: str | os.PathLike | None,
    fold: int,
    num_folds: int,
    fold_seed: int,
    loss: Any,
    loss_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> dict[str, str]:
    """A run's identity as text: absolute data paths, the split, the loss (a name, or the loss object's ``str``) and
    the seed (of the initial weights and of every epoch's training data; ``""`` when not given).

    Example:
        >>> run_settings("/data/kits19", None, 0, 5, 0, "dice")["fold"]
        '0'
    """

    def path(value: str | os.PathLike | None) -> str:
        return "" if value in (None, "") else os.path.abspath(os.path.expanduser(os.fspath(value)))

    return {
        "dataset_dir": path(dataset_dir),
        "datalist": path(datalist),
        "fold": str(fold),
        "num_folds": str(num_folds),
        "fold_seed": str(fold_seed),
        "loss": str(loss),
        "loss_kwargs": json.dumps(dict(loss_kwargs or {}), sort_keys=True, default=str),
        "seed": "" if seed is None else str(seed),
    }


def run_settings_file(checkpoint: str | os.PathLike) -> Path:
    """The settings file recorded beside a resume checkpoint: ``last.pt`` -> ``last.json``."""
    return Path(checkpoint).with_suffix(".json")


def _read_record(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The JSON object recorded beside ``checkpoint`` (``{}`` when there is none or it cannot be read)."""
    try:
        content = json.loads(run_settings_file(checkpoint).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def _settings_of(record: Mapping[str, Any]) -> dict[str, str] | None:
    settings = record.get("run_settings")
    return {str(k): str(v) for k, v in settings.items()} if isinstance(settings, dict) else None


def read_run_settings(checkpoint: str | os.PathLike) -> dict[str, str] | None:
    """The settings recorded beside ``checkpoint``, or ``None`` when there are none (or they cannot be read)."""
    return _settings_of(_read_record(checkpoint))


def refuse_another_run(
    checkpoint: str | os.PathLike, recorded: Mapping[str, str], current: Mapping[str, str], done: int, planned: int
) -> None:
    """Raise when the interrupted run of ``checkpoint`` (epoch ``done`` of ``planned``) was recorded with other
    settings than the run about to resume it.

    Raises:
        ValueError: the settings differ; the message names them and the ways out.
    """
    # a setting that the record predates (e.g. the seed, which older records lack) does not block resuming
    changed = changed_entries(recorded, current, tuple(key for key in current if key in recorded))
    if changed:
        raise ValueError(
            f"{checkpoint} holds another run, interrupted after epoch {done} of {planned} ({'; '.join(changed)}). "
            "Resume it with its own settings, use another --bundle_root for this run, or start over here with "
            "--resume False (which overwrites that checkpoint)."
        )


def check_resume(checkpoint: str | os.PathLike, resume: bool, settings: Mapping[str, str], epochs: int) -> None:
    """At start, before any data is cached: refuse to resume another run's interrupted training (see
    :func:`refuse_another_run`). Only the settings file beside ``checkpoint`` is read; without one nothing is checked.

    Args:
        checkpoint: the resume checkpoint (``checkpoints/last.pt``).
        resume: whether the run resumes an interrupted training.
        settings: this run's :func:`run_settings`.
        epochs: this run's number of epochs (a checkpoint at or beyond it is not resumed).
    """
    if not resume or not Path(checkpoint).is_file():
        return
    record = _read_record(checkpoint)  # one read of the file for the epochs and the settings
    try:
        done, planned = int(record["epoch"]), int(record["max_epochs"])
    except (KeyError, ValueError, TypeError):
        return
    recorded = _settings_of(record)
    if recorded is not None and done < min(planned, int(epochs)):
        refuse_another_run(checkpoint, recorded, settings, done, planned)


def check_evaluation_split(checkpoint: str | os.PathLike, settings: Mapping[str, str]) -> None:
    """Refuse to evaluate the model of a run on another fold of the data it was trained on.

    The training run's settings are read from beside its resume checkpoint. When the evaluation uses the same data
    set and datalist but another fold, fold count or fold seed, its validation cases include training cases of the
    model. Another data set (e.g. an external test set) and a model without recorded settings are evaluated as asked.

    Args:
        checkpoint: the training run's resume checkpoint (``checkpoints/last.pt``).
        settings: the evaluation's :func:`run_settings`.

    Raises:
        ValueError: the same data with another split; the message names the options to repeat.
    """
    recorded = read_run_settings(checkpoint)
    if recorded is None or any(recorded.get(k) != settings.get(k) for k in ("dataset_dir", "datalist")):
        return
    changed = changed_entries(recorded, settings, SPLIT_KEYS)
    if changed:
        raise ValueError(
            f"the model in this bundle_root was trained on the same data with another split ({'; '.join(changed)}, "
            f"recorded in {run_settings_file(checkpoint)}): this evaluation would score it on cases it was trained "
            "on. Pass the training's --fold, --num_folds, --fold_seed and --datalist."
        )
