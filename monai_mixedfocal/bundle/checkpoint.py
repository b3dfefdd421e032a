# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""A resumable "last" checkpoint for a training run: written atomically after every epoch, loaded at start.

MONAI's ``CheckpointSaver`` writes interval checkpoints under changing names, removes the old file before writing the
new one and writes in place, and nothing in it records the best validation score so far; a run restarted from such a
file would overwrite ``models/model.pt`` at its first validation even when that validation is worse. This handler
keeps one file, ``last.pt``, that holds the state an interrupted run continues from:

- the network, optimizer and learning-rate scheduler (including the ``ReduceLROnPlateau`` history),
- the trainer state (epoch and iteration) and, with AMP, the gradient scaler,
- the best-score list of the ``CheckpointSaver`` that keeps the best model, so that ``model.pt`` is only replaced by
  a better model after resuming (an entry whose file has gone missing or cannot be read is dropped, with a warning, so
  that the next validation writes it again),
- the run's settings (:func:`~monai_mixedfocal.bundle.run_settings.run_settings`), so that another run does not resume
  it; ``last.json`` beside it is a copy to read (and the record of files written before the settings were kept inside).

The training data is not in it: the bundles draw each epoch's patches and augmentations from (seed, epoch) alone
(:class:`~monai_mixedfocal.bundle.data_stream.EpochSeededData`), so that a resumed run on the CPU ends with the
weights of the uninterrupted one, to the bit.

A run started again resumes when ``last.pt`` is from an interrupted run (its epoch is below the ``max_epochs`` it was
started with) and the configured ``max_epochs`` leaves epochs to train; it then trains up to the configured
``max_epochs``. Otherwise (a finished run, or nothing left to train) a new run starts and overwrites ``last.pt`` after
its first epoch: MONAI Label trains the same bundle folder again and again, each time from ``models/model.pt``.

While it trains, the handler holds the lock of the checkpoint folder
(:func:`~monai_mixedfocal.bundle.output_dirs.lock_training`): a second training in the same folder stops at once. A
file that cannot be read stops the run with an error that names it.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import monai
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from monai.engines import Workflow
from monai.handlers import CheckpointSaver

from monai_mixedfocal.bundle.model_saver import load_checkpoint
from monai_mixedfocal.bundle.moved_runs import recorded_folders
from monai_mixedfocal.bundle.output_dirs import lock_training
from monai_mixedfocal.bundle.run_settings import (
    SETTINGS_KEY,
    TRAINING_IMAGES_KEY,
    refuse_another_run,
    run_settings_file,
    settings_in,
    trainer_epochs,
    training_images,
)
from monai_mixedfocal.utils import atomic_write_bytes, atomic_write_json

__all__ = ["ResumeCheckpoint"]


#: MONAI's ``CheckpointSaver`` keeps the Ignite ``Checkpoint`` of its best models (and their scores) in this private
#: attribute (MONAI 1.6.1 and earlier). MONAI exposes only the loading side (``CheckpointSaver.load_state_dict``); its
#: public saving side (``key_metric_save_state=True``) would put the list into ``model.pt``, not a plain state dict.
_KEY_METRIC_ATTRIBUTE = "_key_metric_checkpoint"


class _KeyMetricState:
    """``state_dict`` / ``load_state_dict`` for the best-score list of a MONAI ``CheckpointSaver``.

    Raises:
        RuntimeError: the installed MONAI's ``CheckpointSaver`` has no ``_key_metric_checkpoint`` (renamed or removed).
        ValueError: the saver keeps no best model (``save_key_metric=False``).
    """

    def __init__(self, saver: CheckpointSaver) -> None:
        if not hasattr(saver, _KEY_METRIC_ATTRIBUTE):
            raise RuntimeError(
                f"ResumeCheckpoint cannot keep the best-score list of the CheckpointSaver in its save_dict: the "
                f"installed MONAI {monai.__version__} has no CheckpointSaver.{_KEY_METRIC_ATTRIBUTE} (a private "
                "attribute of earlier versions that this version of monai_mixedfocal reads). Install a MONAI version "
                "that has it, or a monai_mixedfocal version that supports this MONAI."
            )
        if getattr(saver, _KEY_METRIC_ATTRIBUTE) is None:
            raise ValueError("the CheckpointSaver in ResumeCheckpoint's save_dict must have save_key_metric=True.")
        self.saver = saver

    def state_dict(self) -> dict[str, Any]:
        return getattr(self.saver, _KEY_METRIC_ATTRIBUTE).state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.saver.load_state_dict(dict(state_dict))

    def best_model_file(self) -> Path | None:
        """The file the saver writes its best model to (``models/model.pt``), or ``None`` if it names none."""
        handler = getattr(self.saver, _KEY_METRIC_ATTRIBUTE).save_handler
        dirname, fixed = getattr(handler, "dirname", None), getattr(handler, "filename", None)
        return None if dirname is None or fixed is None else Path(dirname) / fixed

    def existing(self, state_dict: Any, source: Path) -> Any:
        """``state_dict`` without the saved best models whose file is missing or cannot be read (with a warning).

        Without them the saver writes the next validation's model, instead of waiting for a better score than a
        file that is not there (or of removing a missing file, which MONAI's saver fails on).
        """
        handler = getattr(self.saver, _KEY_METRIC_ATTRIBUTE).save_handler
        dirname, fixed = getattr(handler, "dirname", None), getattr(handler, "filename", None)
        key = "_saved"  # Ignite's Checkpoint.state_dict: {"_saved": [(priority, filename), ...]}
        saved = state_dict.get(key) if isinstance(state_dict, Mapping) else None
        if dirname is None or not isinstance(saved, (list, tuple)):
            return state_dict
        kept = []
        for entry in saved:
            path = Path(dirname) / (fixed if fixed is not None else entry[1])
            problem = "is missing" if not path.is_file() else None
            if problem is None:
                try:
                    load_checkpoint(path, mmap=True)
                except ValueError as err:
                    problem = f"cannot be read ({err.__cause__})"
            if problem is None:
                kept.append(entry)
            else:
                warnings.warn(
                    f"{path}, the best model recorded in {source}, {problem}: the next validation writes a new one.",
                    stacklevel=2,
                )
        return {**state_dict, key: kept}


class _BestMetricState:
    """``state_dict`` / ``load_state_dict`` of a MONAI engine's best key metric (``state.best_metric`` and
    ``state.best_metric_epoch``), so that a resumed run's evaluator compares with the best validation so far instead of
    announcing its first validation as the best. Optional: a checkpoint written without it still resumes."""

    optional = True

    def __init__(self, engine: Workflow) -> None:
        self.engine = engine

    def state_dict(self) -> dict[str, Any]:
        try:
            best = float(self.engine.state.best_metric)
        except (TypeError, ValueError):  # not a scalar: MONAI skips such a key metric too
            best = -1.0
        return {"best_metric": best, "best_metric_epoch": int(self.engine.state.best_metric_epoch)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.engine.state.best_metric = float(state_dict["best_metric"])
        self.engine.state.best_metric_epoch = int(state_dict["best_metric_epoch"])


def _unwrap(obj: Any) -> Any:
    if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        return obj.module
    if isinstance(obj, Workflow):
        return _BestMetricState(obj)
    return _KeyMetricState(obj) if isinstance(obj, CheckpointSaver) else obj


class ResumeCheckpoint:
    """Save a resumable checkpoint after every training epoch and resume from it when the run starts again.

    Attach it to the trainer (in ``train#handlers``, after the ``ValidationHandler`` and the learning-rate handler, so
    the saved state includes that epoch's validation and scheduler step). The trainer itself and, with AMP, its
    gradient scaler are added to ``save_dict`` automatically. Only rank 0 writes; every rank loads.

    Args:
        path: the checkpoint file (e.g. ``checkpoints/last.pt``); written atomically (temporary file + ``os.replace``).
        save_dict: objects with ``state_dict`` / ``load_state_dict`` (network, optimizer, scheduler), plus optionally
            the best-model ``CheckpointSaver`` (``save_key_metric=True``) whose best-score list is kept, and the
            validation's MONAI evaluator, whose best key metric is kept (a checkpoint without it still resumes).
            ``None`` values are skipped (e.g. a handler disabled on ranks other than 0). The network goes under
            ``"model"`` so that ``CheckpointLoader(load_dict={"model": net})`` and MONAI Label can also read this file.
        resume: load ``path`` at start when it holds an unfinished run.
        map_location: passed to ``torch.load``.
        run_settings: the run's identity (:func:`~monai_mixedfocal.bundle.run_settings.run_settings`), written into
            the checkpoint (under ``"run_settings"``) and beside it (``last.json``) at every save, with the folder
            they were written in (:func:`~monai_mixedfocal.bundle.moved_runs.recorded_folders`). An interrupted run
            recorded with other settings (another fold, loss or data set started in the same ``bundle_root``) is not
            resumed: loading raises instead. A run folder moved or copied with its data set and datalist resumes
            there (:mod:`~monai_mixedfocal.bundle.moved_runs`).
        lock: hold the lock of the checkpoint's folder from :meth:`attach` on
            (:func:`~monai_mixedfocal.bundle.output_dirs.lock_training`).
        training_data: the run's training items (all ranks'); the real paths of their images are recorded with the
            run settings, so that an evaluation can refuse the model's own training cases
            (:func:`~monai_mixedfocal.bundle.run_settings.check_evaluation_split`).

    Raises:
        ValueError: an empty ``save_dict`` or a reserved key (``trainer``, ``scaler``, ``run_settings``,
            ``training_images``).

    Example:
        >>> handler = ResumeCheckpoint("checkpoints/last.pt", {"model": net, "optimizer": opt})  # doctest: +SKIP
        >>> handler.attach(trainer)  # doctest: +SKIP
    """

    reserved_keys: tuple[str, ...] = ("trainer", "scaler", SETTINGS_KEY, TRAINING_IMAGES_KEY)

    def __init__(
        self,
        path: str | os.PathLike,
        save_dict: Mapping[str, Any],
        resume: bool = True,
        map_location: str | torch.device | None = "cpu",
        run_settings: Mapping[str, Any] | None = None,
        lock: bool = True,
        training_data: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        objects = {str(k): v for k, v in dict(save_dict).items() if v is not None}
        if not objects:
            raise ValueError("save_dict must name at least one object to save, e.g. {'model': network}.")
        clash = sorted(set(objects) & set(self.reserved_keys))
        if clash:
            raise ValueError(
                f"save_dict keys {clash} are reserved: the handler adds the trainer, its AMP scaler, the run "
                "settings and the training images."
            )
        self.path = Path(path)
        self.save_dict = objects
        self.resume = bool(resume)
        self.map_location = map_location
        self.run_settings = None if run_settings is None else {str(k): str(v) for k, v in run_settings.items()}
        self.lock = bool(lock)
        self.training_images = None if training_data is None else training_images(training_data)
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Take the lock of the checkpoint folder (rank 0), then load at ``STARTED`` and save at every
        ``EPOCH_COMPLETED`` of ``engine`` (the trainer).

        Raises:
            RuntimeError: another process trains in the checkpoint's folder.
        """
        if self.lock:
            lock_training(self.path)
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def _objects(self, engine: Engine) -> dict[str, Any]:
        objects = {key: _unwrap(value) for key, value in self.save_dict.items()}
        objects["trainer"] = engine
        scaler = getattr(engine, "scaler", None)
        if scaler is not None:
            objects["scaler"] = scaler
        return objects

    def save(self, engine: Engine) -> None:
        """Write the checkpoint (rank 0 only), never leaving a partial file behind."""
        if idist.get_rank() != 0:
            return
        content = {key: obj.state_dict() for key, obj in self._objects(engine).items()}
        # and where it is written: a run folder moved or copied with its data is then told from another run
        settings = None if self.run_settings is None else {**self.run_settings, **recorded_folders(self.path)}
        if settings is not None:
            content[SETTINGS_KEY] = settings  # the single atomic record; last.json is a copy
        if self.training_images is not None:
            content[TRAINING_IMAGES_KEY] = list(self.training_images)
        buffer = io.BytesIO()
        torch.save(content, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())
        if settings is not None:
            state = engine.state
            record: dict[str, Any] = {
                "run_settings": settings,
                "epoch": state.epoch,
                "max_epochs": state.max_epochs,
            }
            if self.training_images is not None:
                record[TRAINING_IMAGES_KEY] = self.training_images
            atomic_write_json(run_settings_file(self.path), record)
        self.logger.info(f"saved the resume checkpoint {self.path} (epoch {engine.state.epoch})")

    def _keep_best_models(self, objects: Mapping[str, Any]) -> list[tuple[Path, Path]]:
        """Copy the best models of a finished run, or of any earlier run under ``--resume false``
        (``models/model.pt``), beside the checkpoint, as ``<name>_of_finished_run.pt``, before a new run in the same
        folder replaces them at its first validation (rank 0 only; an earlier copy is replaced). Returns ``(model,
        copy)`` pairs."""
        kept = []
        for obj in objects.values():
            model = obj.best_model_file() if isinstance(obj, _KeyMetricState) else None
            if model is None or not model.is_file():
                continue
            copy = self.path.parent / f"{model.stem}_of_finished_run{model.suffix}"
            if idist.get_rank() == 0:
                atomic_write_bytes(copy, model.read_bytes())
            kept.append((model, copy))
        return kept

    def load(self, engine: Engine) -> None:
        """Resume from the checkpoint if it exists, holds an interrupted run and epochs are left to train.

        Raises:
            ValueError: the file cannot be read (``<path>: not a readable checkpoint (...)``), is not a checkpoint
                written by this handler, or holds an interrupted run recorded with other ``run_settings``; an older
                checkpoint whose ``last.json`` cannot be read; a ``CheckpointSaver`` in ``save_dict`` without
                ``save_key_metric=True``.
            RuntimeError: the installed MONAI's ``CheckpointSaver`` has no best-score list where this handler reads it.

        Warns:
            UserWarning: a best model recorded in the checkpoint is missing or cannot be read (it is written again at
                the next validation).
        """
        objects = self._objects(engine)  # checked at the start of every run, not at the end of its first epoch
        if os.path.lexists(self.path) and not self.path.is_file():
            raise ValueError(f"{self.path}: not a file; remove it (this run writes its resume checkpoint there)")
        if not self.path.exists():
            return
        if not self.resume:  # an earlier run in this folder: keep its best models, as for a finished run
            kept = self._keep_best_models(objects)
            self.logger.warning(
                f"--resume false: starting a new run over {self.path}, which it overwrites after its first epoch"
                + "".join(f"; the earlier run's {old.name} is kept as {copy}" for old, copy in kept)
                + "."
            )
            return
        checkpoint = load_checkpoint(self.path, map_location=self.map_location)
        if isinstance(checkpoint, Mapping):  # an optional state that an older checkpoint lacks is left as it is
            objects = {k: v for k, v in objects.items() if k in checkpoint or not getattr(v, "optional", False)}
        missing = sorted(set(objects) - set(checkpoint)) if isinstance(checkpoint, Mapping) else sorted(objects)
        if missing:
            raise ValueError(
                f"{self.path} cannot resume this run: it lacks {missing}. Remove it, pass another "
                "--resume_checkpoint, or start over with --resume false."
            )
        done, planned = trainer_epochs(checkpoint["trainer"])
        max_epochs = engine.state.max_epochs
        if done >= planned:
            kept = self._keep_best_models(objects)
            self.logger.warning(
                f"{self.path} is from a finished run ({done} of {planned} epochs; a finished run is not extended): "
                "starting a new run, which overwrites it after its first epoch"
                + "".join(f"; the finished run's {old.name} is kept as {copy}" for old, copy in kept)
                + "."
            )
            return
        if max_epochs is not None and done >= max_epochs:
            self.logger.warning(
                f"{self.path} is from a run interrupted after epoch {done} of {planned}, and max_epochs={max_epochs} "
                "leaves nothing to resume: starting a new run, which overwrites it after its first epoch."
            )
            return
        if self.run_settings is not None:
            recorded = settings_in(self.path, checkpoint)
            if recorded is None:
                self.logger.warning(f"{self.path} records no run settings: resuming it without checking them")
            else:
                refuse_another_run(self.path, recorded, self.run_settings, done, planned)
        checkpoint = dict(checkpoint)
        for key, obj in objects.items():
            if isinstance(obj, _KeyMetricState):
                checkpoint[key] = obj.existing(checkpoint[key], self.path)
        Checkpoint.load_objects(to_load=objects, checkpoint=checkpoint)
        engine.state.max_epochs = max_epochs
        self.logger.info(f"resumed from {self.path} at epoch {done} of {max_epochs}")
