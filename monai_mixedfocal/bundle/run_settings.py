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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from monai_mixedfocal.bundle.model_saver import load_checkpoint
from monai_mixedfocal.bundle.moved_runs import RECORDED_IN_KEY, RECORDED_IN_REAL_KEY, moved_images, settings_moved_with
from monai_mixedfocal.utils import changed_entries

__all__ = [
    "NETWORK_KEY",
    "PATH_SETTINGS",
    "SETTINGS_KEY",
    "SPLIT_KEYS",
    "TRAINING_IMAGES_KEY",
    "check_evaluation_split",
    "check_resume",
    "checkpoint_progress",
    "describe_loss",
    "describe_network",
    "read_run_settings",
    "recorded_progress",
    "refuse_another_run",
    "run_settings",
    "run_settings_file",
    "settings_in",
    "trainer_epochs",
    "training_images",
]

#: the key of the run's settings inside the resume checkpoint (beside the state dicts), and in ``last.json``
SETTINGS_KEY = "run_settings"

#: the key of the real paths of the run's training images, inside the resume checkpoint and in ``last.json``
TRAINING_IMAGES_KEY = "training_images"

#: the key of the network's architecture (:func:`describe_network`) among the run settings' options
NETWORK_KEY = "network"

#: the settings that choose a run's training and validation cases
SPLIT_KEYS: tuple[str, ...] = ("dataset_dir", "datalist", "fold", "num_folds", "fold_seed")

#: the run settings that are absolute paths: a run folder moved or copied with them still matches them
PATH_SETTINGS: tuple[str, ...] = ("dataset_dir", "datalist")


def run_settings(
    dataset_dir: str | os.PathLike | None,
    datalist: str | os.PathLike | None,
    fold: int,
    num_folds: int,
    fold_seed: int,
    loss: Any,
    loss_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """A run's identity as text: absolute data paths, the split, the loss (a name, or the loss object described by
    :func:`describe_loss`), the seed (of the initial weights and of every epoch's training data; ``""`` when not given)
    and the training ``options`` (JSON text each).

    The options are the values that a resumed run would silently ignore or that change what it trains on: the
    learning-rate schedule and the epoch length come back from the checkpoint's optimizer, scheduler and trainer
    states, the patches and preprocessing would differ from the interrupted run's. Recording them makes a resume with
    another value refused instead (:func:`refuse_another_run`); a record without them (an older version) resumes.

    Raises:
        ValueError: an option named like one of the other settings.

    Example:
        >>> run_settings("/data/kits19", None, 0, 5, 0, "dice", options={"learning_rate": 3e-4})["learning_rate"]
        '0.0003'
    """

    def path(value: str | os.PathLike | None) -> str:
        return "" if value in (None, "") else os.path.abspath(os.path.expanduser(os.fspath(value)))

    settings = {
        "dataset_dir": path(dataset_dir),
        "datalist": path(datalist),
        "fold": str(fold),
        "num_folds": str(num_folds),
        "fold_seed": str(fold_seed),
        "loss": describe_loss(loss),
        "loss_kwargs": json.dumps(dict(loss_kwargs or {}), sort_keys=True, default=str),
        "seed": "" if seed is None else str(seed),
    }
    clash = sorted(set(options or {}) & {*settings, RECORDED_IN_KEY, RECORDED_IN_REAL_KEY})
    if clash:
        raise ValueError(
            f"run_settings options {clash} clash with the settings of the same name (or with the folder that a resume "
            f"checkpoint records them in, {RECORDED_IN_KEY!r} and {RECORDED_IN_REAL_KEY!r})"
        )
    settings.update({str(k): json.dumps(v, sort_keys=True, default=str) for k, v in dict(options or {}).items()})
    return settings


def describe_loss(loss: Any) -> str:
    """A loss as recorded in the run settings: a registry name as it is; a module as its class and its settings.

    ``str(module)`` names only the class and its sub-modules (``DiceCELoss((dice): DiceLoss() ...)``), so two losses
    with other weights or activations would look alike. The description holds the class's full name and, as JSON, its
    public attributes that are numbers, strings, booleans, ``None`` or lists of them, its small buffers, callables by
    name, and its sub-modules described the same way.

    Example:
        >>> import monai
        >>> describe_loss(monai.losses.DiceCELoss(lambda_dice=2.0)) != describe_loss(monai.losses.DiceCELoss())
        True
    """
    if not isinstance(loss, torch.nn.Module):
        return str(loss)
    return _class_name(loss) + json.dumps(_loss_fields(loss), sort_keys=True)


def describe_network(network: torch.nn.Module) -> str:
    """A network's architecture as recorded in the run settings: its class's full name and its structure as PyTorch
    prints it (layers, channels, kernels, normalisation, activation, dropout), on one line; not its weights.

    A run resumed, or a model evaluated, with another ``--network_def`` either fails after the data is cached (another
    ``features``: the weights do not fit) or runs another model without a word (another ``act``, ``dropout``).

    Example:
        >>> from monai.networks.nets import BasicUNet
        >>> describe_network(BasicUNet(act="relu")) != describe_network(BasicUNet(act="prelu"))
        True
    """
    if not isinstance(network, torch.nn.Module):
        raise TypeError(f"describe_network takes a torch.nn.Module, got {type(network).__name__}")
    return f"{_class_name(network)}: {' '.join(repr(network).split())}"


def _class_name(module: torch.nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _loss_fields(module: torch.nn.Module) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in vars(module).items():
        if name.startswith("_") or name == "training":
            continue
        if value is None or isinstance(value, (bool, int, float, str)):
            fields[name] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
            fields[name] = list(value)
        elif isinstance(value, torch.Tensor):
            fields[name] = _tensor_field(value)
        elif callable(value) and not isinstance(value, torch.nn.Module):
            fields[name] = getattr(value, "__qualname__", type(value).__qualname__)
    for name, buffer in module.named_buffers(recurse=False):
        fields[name] = _tensor_field(buffer)
    for name, child in module.named_children():
        fields[name] = {"class": _class_name(child), **_loss_fields(child)}
    return fields


def _tensor_field(tensor: torch.Tensor) -> Any:
    return tensor.tolist() if tensor.numel() <= 64 else f"tensor{list(tensor.shape)} sum {float(tensor.sum()):.6g}"


def training_images(items: Iterable[Mapping[str, Any]], key: str = "image") -> list[str]:
    """The real paths (symbolic links resolved) of the images of datalist items, sorted; a list of files gives each.

    One file reached through another root (a KiTS19 repository or its ``data/`` folder, a link, a ``--datalist``
    resolved under its recorded root) has one real path, so two splits can be compared case by case.

    Example:
        >>> training_images([{"image": "/data/b.nii.gz"}, {"image": ["/data/a.nii.gz"]}])
        ['/data/a.nii.gz', '/data/b.nii.gz']
    """
    paths = []
    for item in items:
        value = item.get(key)
        paths.extend(value if isinstance(value, list) else [value] if value is not None else [])
    return sorted({os.path.realpath(os.fspath(path)) for path in paths})


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
    return _recorded_run(checkpoint, hint)[0]


def _recorded_run(checkpoint: str | os.PathLike, hint: str) -> tuple[dict[str, str] | None, list[str] | None]:
    """The settings (see :func:`read_run_settings`) and the training images recorded for the run of ``checkpoint``,
    reading the checkpoint once (mapped, not read whole): inside it, else in ``last.json`` beside it.

    Raises:
        ValueError: as :func:`read_run_settings`.
    """
    path = Path(checkpoint)
    loaded, content = False, None
    if os.path.lexists(path):
        try:
            content, loaded = load_checkpoint(path, mmap=path.is_file(), hint=hint), True
        except ValueError:
            if _settings_of(_read_record(path)) is None:
                raise
    settings = (
        settings_in(path, content) if loaded else _settings_of(_read_record(path))
    )  # no checkpoint, or unreadable
    images = content.get(TRAINING_IMAGES_KEY) if isinstance(content, Mapping) else None
    if images is None:
        images = _read_record(path).get(TRAINING_IMAGES_KEY)
    return settings, [str(image) for image in images] if isinstance(images, list) else None


def refuse_another_run(
    checkpoint: str | os.PathLike, recorded: Mapping[str, str], current: Mapping[str, str], done: int, planned: int
) -> None:
    """Raise when the interrupted run of ``checkpoint`` (epoch ``done`` of ``planned``) was recorded with other
    settings than the run about to resume it. Paths that moved along with the checkpoint's folder (a run folder moved
    or copied with its data, :func:`~monai_mixedfocal.bundle.moved_runs.settings_moved_with`) are the same.

    Raises:
        ValueError: the settings differ; the message names them and the ways out.
    """
    # a setting that the record predates (e.g. the seed, which older records lack) does not block resuming
    recorded = settings_moved_with(checkpoint, recorded, current, PATH_SETTINGS)
    changed = changed_entries(recorded, current, tuple(key for key in current if key in recorded))
    if changed:
        raise ValueError(
            f"{checkpoint} holds another run, interrupted after epoch {done} of {planned} ({'; '.join(changed)}). "
            "Resume it with its own settings, use another --bundle_root for this run, or start over here with "
            "--resume False (which overwrites that checkpoint; its best model.pt is kept as "
            "checkpoints/model_of_finished_run.pt)."
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


def check_evaluation_split(
    checkpoint: str | os.PathLike, settings: Mapping[str, str], cases: Iterable[Mapping[str, Any]] | None = None
) -> None:
    """Refuse to evaluate the model of a run on cases it was trained on, or with another network.

    A training run records the real paths of its training images (:func:`training_images`) in its resume checkpoint
    and in ``last.json`` beside it. With ``cases``, an evaluation case whose image is among them is refused, however
    the data set was named (another path to the same folder, a link, a ``--datalist`` instead of the folder), and in
    a run folder moved or copied with its data set (:func:`~monai_mixedfocal.bundle.moved_runs.moved_images`).
    A checkpoint written before the images were recorded is checked by its settings (:func:`read_run_settings`):
    the same data set and datalist with another fold, fold count or fold seed is refused. Another data set (e.g. an
    external test set) and a model without recorded settings are evaluated as asked. A network other than the one
    recorded (:func:`describe_network`, e.g. another ``--network_def#act``) is refused.

    Args:
        checkpoint: the training run's resume checkpoint (``checkpoints/last.pt``).
        settings: the evaluation's :func:`run_settings`.
        cases: the evaluation's datalist items (absolute ``image`` paths).

    Raises:
        ValueError: an evaluation case among the training cases, or (older records) the same data with another split,
            or another network than the training's; the message names the options to repeat. The checkpoint cannot be
            read and ``last.json`` records nothing, or an older checkpoint's ``last.json`` cannot be read.
    """
    hint = "the training's split cannot be checked; remove it to evaluate without that check"
    recorded, trained = _recorded_run(checkpoint, hint)
    trained_network = (recorded or {}).get(NETWORK_KEY)
    if trained_network is not None and settings.get(NETWORK_KEY, trained_network) != trained_network:
        changed = changed_entries(recorded or {}, settings, [NETWORK_KEY])
        raise ValueError(
            f"the model in this bundle_root was trained with another network ({changed[0]}, recorded in "
            f"{checkpoint}): its weights would not fit, or would run in another network without a word. Pass the "
            "training's --network_def overrides."
        )
    if cases is not None and trained is not None:
        cases = list(cases)
        overlap = sorted(set(training_images(cases)) & set(moved_images(checkpoint, recorded, trained)))
        if overlap:
            raise ValueError(
                f"{len(overlap)} of the {len(cases)} evaluation case(s) are training cases of the model in this "
                f"bundle_root (recorded in {checkpoint}), e.g. {overlap[0]}: this evaluation would score it on cases "
                "it was trained on. Pass the training's --fold, --num_folds, --fold_seed and --datalist."
            )
        return
    if recorded is None:
        return
    recorded = settings_moved_with(checkpoint, recorded, settings, PATH_SETTINGS)
    if any(recorded.get(k) != settings.get(k) for k in PATH_SETTINGS):
        return
    changed = changed_entries(recorded, settings, SPLIT_KEYS)
    if changed:
        raise ValueError(
            f"the model in this bundle_root was trained on the same data with another split ({'; '.join(changed)}, "
            f"recorded in {checkpoint}): this evaluation would score it on cases it was trained "
            "on. Pass the training's --fold, --num_folds, --fold_seed and --datalist."
        )
