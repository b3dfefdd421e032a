# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""What identifies a training run of a bundle: its data split and its loss, recorded with its resume checkpoint.

Two runs started in the same ``bundle_root`` share ``checkpoints/last.pt`` and ``models/model.pt``. The settings
recorded inside ``last.pt`` (one atomic file; ``checkpoints/last.json`` beside it is a copy to read, and the only record
of checkpoints written before) let a run refuse to resume another run's interrupted training
(:class:`~monai_mixedfocal.bundle.ResumeCheckpoint`), and let an evaluation refuse to score a model on another fold of
the same data, which would include the cases it was trained on (:func:`check_evaluation_split`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_mixedfocal.bundle.model_saver import load_checkpoint
from monai_mixedfocal.utils import changed_entries

__all__ = [
    "SETTINGS_KEY",
    "SPLIT_KEYS",
    "check_evaluation_split",
    "check_resume",
    "checkpoint_progress",
    "read_run_settings",
    "recorded_progress",
    "refuse_another_run",
    "run_settings",
    "run_settings_file",
    "settings_in",
    "trainer_epochs",
]

#: the key of the run's settings inside the resume checkpoint (beside the state dicts), and in ``last.json``
SETTINGS_KEY = "run_settings"

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


def trainer_epochs(trainer: Mapping[str, Any]) -> tuple[int, int]:
    """(epochs done, epochs planned) from the state dict of an Ignite trainer (it keeps the iteration or the epoch).

    Raises:
        KeyError, ValueError, TypeError, ZeroDivisionError: not the state dict of an Ignite engine.
    """
    epoch_length = int(trainer["epoch_length"])
    done = int(trainer["epoch"]) if "epoch" in trainer else int(trainer["iteration"]) // epoch_length
    return done, int(trainer["max_epochs"])


def _read_record(checkpoint: str | os.PathLike, strict: bool = False) -> dict[str, Any]:
    """The JSON object recorded beside ``checkpoint`` (``{}`` when there is none).

    Raises:
        ValueError: ``strict`` and the file exists but cannot be read or holds no JSON object.
    """
    file = run_settings_file(checkpoint)
    try:
        content = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(content, dict):
            raise ValueError(f"holds a JSON {type(content).__name__}, not an object")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        if not strict:
            return {}
        raise ValueError(
            f"{file}: cannot be read ({type(err).__name__}: {err}); it records the settings of the run in "
            f"{checkpoint}, which was written before they were kept inside it. Remove both to start over, or start "
            "over with --resume False."
        ) from err
    return content


def _settings_of(record: Mapping[str, Any]) -> dict[str, str] | None:
    settings = record.get(SETTINGS_KEY)
    return {str(k): str(v) for k, v in settings.items()} if isinstance(settings, Mapping) else None


def recorded_progress(checkpoint: str | os.PathLike) -> tuple[int, int, dict[str, str] | None] | None:
    """What ``last.json`` beside ``checkpoint`` records: ``(epochs done, epochs planned, run settings or None)``.

    Returns:
        ``None`` when the file is missing or cannot be read, or records no epochs.
    """
    record = _read_record(checkpoint)
    try:
        return int(record["epoch"]), int(record["max_epochs"]), _settings_of(record)
    except (KeyError, ValueError, TypeError):
        return None


def checkpoint_progress(checkpoint: str | os.PathLike) -> tuple[int, int, dict[str, str] | None] | None:
    """What a resume checkpoint's run has done: ``(epochs done, epochs planned, run settings or None)``, read from
    inside ``checkpoint`` (mapped, not read whole), else from ``last.json`` beside it.

    ``last.pt`` is the atomic record and is written first: a run killed between the two writes leaves ``last.json`` one
    epoch behind, and a finished run would look interrupted. ``last.json`` is read for a checkpoint written before the
    settings were kept inside it, and for one that cannot be read (or is not a resume checkpoint).

    Returns:
        ``None`` when neither file records the epochs.
    """
    path = Path(checkpoint)
    if path.is_file():
        try:
            content = load_checkpoint(path, mmap=True)
            done, planned = trainer_epochs(content["trainer"])
        except (ValueError, KeyError, TypeError, ZeroDivisionError):
            pass  # unreadable, or not a resume checkpoint: what last.json records
        else:
            if isinstance(content.get(SETTINGS_KEY), Mapping):
                return done, planned, _settings_of(content)
    return recorded_progress(path)


def settings_in(checkpoint: str | os.PathLike, content: Any) -> dict[str, str] | None:
    """The run settings of a loaded resume checkpoint: kept inside it, or (a file written before they were) in
    ``last.json`` beside it.

    Args:
        checkpoint: the checkpoint file ``content`` was loaded from.
        content: what ``torch.load`` returned.

    Returns:
        The settings, or ``None`` when none are recorded (an older checkpoint without ``last.json``).

    Raises:
        ValueError: an older checkpoint whose ``last.json`` cannot be read: the checks would be off without a word.
    """
    if isinstance(content, Mapping) and isinstance(content.get(SETTINGS_KEY), Mapping):
        return _settings_of(content)
    return _settings_of(_read_record(checkpoint, strict=True))


def read_run_settings(
    checkpoint: str | os.PathLike, hint: str = "remove it, or start over with --resume False"
) -> dict[str, str] | None:
    """The settings recorded for the run of ``checkpoint``: inside the checkpoint (the single atomic source), or in
    ``last.json`` beside it (a checkpoint written before they were kept inside, an unreadable checkpoint, or none).

    Args:
        checkpoint: the resume checkpoint (``checkpoints/last.pt``).
        hint: what to do about an unreadable checkpoint without a readable ``last.json``.

    Returns:
        The settings, or ``None`` when none are recorded.

    Raises:
        ValueError: the checkpoint cannot be read and ``last.json`` records nothing; the checkpoint is readable but
            older and its ``last.json`` cannot be read.
    """
    path = Path(checkpoint)
    if not os.path.lexists(path):
        return _settings_of(_read_record(path))  # a record left without its checkpoint
    try:
        content = load_checkpoint(path, mmap=path.is_file(), hint=hint)
    except ValueError:
        recorded = _settings_of(_read_record(path))
        if recorded is None:
            raise
        return recorded
    return settings_in(path, content)


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
    :func:`refuse_another_run`), or a checkpoint that cannot be read.

    The settings are read from inside ``checkpoint`` (mapped, not read whole); from ``last.json`` beside it for a
    checkpoint written before they were kept inside it.

    Args:
        checkpoint: the resume checkpoint (``checkpoints/last.pt``).
        resume: whether the run resumes an interrupted training.
        settings: this run's :func:`run_settings`.
        epochs: this run's number of epochs (a checkpoint at or beyond it is not resumed).

    Raises:
        ValueError: another run's interrupted training (the message names the differences); ``checkpoint`` cannot be
            read (``<path>: not a readable checkpoint (...)``); an older checkpoint whose ``last.json`` cannot be read.
    """
    path = Path(checkpoint)
    if not resume or not os.path.lexists(path):
        return
    try:
        content = load_checkpoint(path, mmap=path.is_file())
    except ValueError as unreadable:
        # an unreadable file of another run: that is the first thing to say (it is not this run's to remove)
        progress = recorded_progress(path)
        if progress is None:
            raise unreadable from unreadable.__cause__
        done, planned, recorded = progress
        if recorded is not None and done < min(planned, int(epochs)):
            refuse_another_run(path, recorded, settings, done, planned)
        raise
    trainer = content.get("trainer") if isinstance(content, Mapping) else None
    try:
        done, planned = trainer_epochs(trainer)  # type: ignore[arg-type]
    except (KeyError, ValueError, TypeError, ZeroDivisionError):
        return  # not a resume checkpoint: ResumeCheckpoint says what it lacks
    if done >= min(planned, int(epochs)):
        return  # a finished run, or none left to resume: a new run starts
    recorded = settings_in(path, content)
    if recorded is not None:
        refuse_another_run(path, recorded, settings, done, planned)


def check_evaluation_split(checkpoint: str | os.PathLike, settings: Mapping[str, str]) -> None:
    """Refuse to evaluate the model of a run on another fold of the data it was trained on.

    The training run's settings are read from its resume checkpoint (or from ``last.json`` beside it, see
    :func:`read_run_settings`). When the evaluation uses the same data
    set and datalist but another fold, fold count or fold seed, its validation cases include training cases of the
    model. Another data set (e.g. an external test set) and a model without recorded settings are evaluated as asked.

    Args:
        checkpoint: the training run's resume checkpoint (``checkpoints/last.pt``).
        settings: the evaluation's :func:`run_settings`.

    Raises:
        ValueError: the same data with another split; the message names the options to repeat. The checkpoint cannot
            be read and ``last.json`` records nothing, or an older checkpoint's ``last.json`` cannot be read.
    """
    recorded = read_run_settings(
        checkpoint, hint="the training's split cannot be checked; remove it to evaluate without that check"
    )
    if recorded is None or any(recorded.get(k) != settings.get(k) for k in ("dataset_dir", "datalist")):
        return
    changed = changed_entries(recorded, settings, SPLIT_KEYS)
    if changed:
        raise ValueError(
            f"the model in this bundle_root was trained on the same data with another split ({'; '.join(changed)}, "
            f"recorded in {checkpoint}): this evaluation would score it on cases it was trained "
            "on. Pass the training's --fold, --num_folds, --fold_seed and --datalist."
        )
