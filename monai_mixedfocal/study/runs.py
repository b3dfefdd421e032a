# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The study's plan: one bundle run per (loss, fold), its folder, its commands and its state on disk.

Every run trains and evaluates through the bundle's own configs with ``python -m monai.bundle run`` (no second training
loop here). A run's folder is its ``bundle_root``: ``models/model.pt`` (the lowest-validation-loss weights),
``checkpoints/`` (``last.pt``, written after every epoch, the checkpoint a re-started run resumes from, with the
run's settings inside, and ``last.json``, a copy of its settings and epoch beside it; outside ``models/``, where MONAI
Label offers every ``*.pt`` as a model) and ``eval/`` (TensorBoard logs, the per-case metrics CSV and the predicted
label maps), plus ``train.log`` / ``evaluate.log`` and the state markers written by the runner.

A run's state is read from these files alone, so that a run done (or half done) elsewhere, e.g. as a cluster job whose
files were copied back, counts as what it is:

- trained: the runner's ``trained.ok`` marker, or a ``last.pt`` (``last.json`` for an older or unreadable one) that
  records the last epoch of this run's schedule with this run's settings, beside an existing ``models/model.pt`` (a
  training whose evaluation was lost);
- finished: the per-case CSV exists and is complete
  (:func:`~monai_mixedfocal.study.per_case_csv.read_per_case_csv`); a damaged one (cut short in a copy,
  say) leaves the run unfinished, so that the study evaluates it again.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai_mixedfocal.shipped_bundles import BUNDLE_NAMES, bundle_dir
from monai_mixedfocal.utils import atomic_write_json, changed_entries

if TYPE_CHECKING:
    import pandas as pd

#: name of the per-case metrics CSV that ``configs/evaluate.json`` writes into the run's ``eval/`` folder
PER_CASE_CSV = "per_case_metrics.csv"
#: marker written by the runner when the training command has finished successfully
TRAINED_MARKER = "trained.ok"
#: marker written by the runner when a command of the run has failed (removed when the run is retried)
FAILED_MARKER = "failed.json"
#: the run's settings (bundle, loss, fold, overrides) recorded when its training starts from scratch
SETTINGS_FILE = "settings.json"

#: the settings of a run (:attr:`Run.settings`) that are data paths: they may move along with the study folder (the
#: bundle's folder is compared as it is: a copy of the study into another installation runs that one's configs)
STUDY_PATH_SETTINGS: tuple[str, ...] = ("dataset_dir", "datalist")


def default_bundle_dir(dataset: str) -> Path:
    """The bundle of ``dataset`` shipped with the package (``bundles/<dataset>_mixedfocal_segmentation``)."""
    if dataset not in BUNDLE_NAMES:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(BUNDLE_NAMES)}.")
    return bundle_dir(dataset)


def format_override(value: Any) -> str:
    """A bundle override value as ``python -m monai.bundle`` (fire) parses it back: Python literal syntax
    (``[8, 16]``, ``True``, ``{'a': 1}``) for everything but strings, which pass as they are."""
    if isinstance(value, str):
        return value
    return repr(list(value) if isinstance(value, tuple) else value)


@dataclass(frozen=True)
class Run:
    """One (loss, fold) run of the study.

    Attributes:
        loss: the loss name (a key of :data:`monai_mixedfocal.losses.LOSS_NAMES`).
        fold: the validation fold.
        root: the run's folder (its ``bundle_root``).
        bundle_dir: the bundle whose configs are run.
        overrides: ``--<id> <value>`` overrides shared with every command of the run.
    """

    loss: str
    fold: int
    root: Path
    bundle_dir: Path
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``<loss>/fold_<k>``, the run's name in logs and reports."""
        return f"{self.loss}/fold_{self.fold}"

    @property
    def per_case_csv(self) -> Path:
        """The per-case metrics CSV written by the evaluation."""
        return self.root / "eval" / PER_CASE_CSV

    @property
    def train_log(self) -> Path:
        return self.root / "train.log"

    @property
    def evaluate_log(self) -> Path:
        return self.root / "evaluate.log"

    @property
    def resume_checkpoint(self) -> Path:
        """The checkpoint the bundle writes after every epoch and resumes an interrupted training from."""
        return self.root / "checkpoints" / "last.pt"

    @property
    def model(self) -> Path:
        """The model the evaluation scores: the training's best checkpoint."""
        return self.root / "models" / "model.pt"

    @property
    def is_finished(self) -> bool:
        """Evaluated: the per-case metrics exist and are complete (also true for a run done elsewhere, e.g. as a
        cluster job); a damaged CSV (see :attr:`per_case_problem`) leaves the run unfinished, to be evaluated again."""
        return self.per_case_csv.is_file() and self.per_case_problem is None

    @property
    def per_case_problem(self) -> str | None:
        """What is wrong with the per-case CSV, naming the file (``None`` when it is complete or does not exist)."""
        if not self.per_case_csv.exists():
            return None
        try:
            self.per_case_table()
        except (OSError, ValueError) as err:
            return str(err)
        return None

    def per_case_table(self) -> pd.DataFrame:
        """The run's per-case CSV, read and checked against the run's validation fold
        (:func:`~monai_mixedfocal.study.per_case_csv.read_per_case_csv`).

        Raises:
            OSError: the file cannot be read.
            ValueError: the file is incomplete or damaged; the message names it.
        """
        cases, classes = self.validation_cases(), self.class_names()
        key = (
            _file_key(self.per_case_csv),
            None if cases is None else tuple(cases),
            None if classes is None else tuple(map(tuple, classes)),
        )
        table, error = _read_per_case_cached(*key)
        if error is not None:
            raise error
        return table.copy()  # type: ignore[union-attr]

    def validation_cases(self) -> list[str] | None:
        """The case ids of the run's validation fold, from the ``datalist`` override (``None`` without a readable
        datalist, or when a case has no id)."""
        datalist = self.overrides.get("datalist")
        if not isinstance(datalist, (str, os.PathLike)) or not str(datalist):
            return None
        cases = _fold_cases(*_file_key(Path(datalist)))
        return None if cases is None else cases.get(self.fold, [])

    def class_names(self) -> list[list[str]] | None:
        """The class lists the per-case CSV may hold: the bundle's output classes without, then with the background
        (``network_data_format#outputs#pred#channel_def`` of ``configs/metadata.json``); ``None`` when unknown."""
        return _bundle_classes(*_file_key(self.bundle_dir / "configs" / "metadata.json"))

    @property
    def is_trained(self) -> bool:
        """The training has finished: the runner's ``trained.ok`` marker beside ``models/model.pt``, or (a training
        finished elsewhere, or whose marker was never written) :attr:`training_finished`. A marker without the model
        (deleted, or lost in a copy) is not trained: its evaluation would fail at every rerun."""
        return ((self.root / TRAINED_MARKER).is_file() and self.model.is_file()) or self.training_finished

    def recorded_training(self) -> dict[str, Any] | None:
        """What the resume checkpoint records (inside ``checkpoints/last.pt``, else in ``last.json`` beside it, see
        :func:`~monai_mixedfocal.bundle.run_settings.checkpoint_progress`): ``epoch``, ``max_epochs`` (the schedule
        the training was started with) and ``run_settings``; ``None`` when neither records them."""
        from monai_mixedfocal.bundle.run_settings import run_settings_file

        checkpoint = self.resume_checkpoint
        progress = _checkpoint_progress(_file_key(checkpoint), _file_key(run_settings_file(checkpoint)))
        if progress is None:
            return None
        epoch, planned, settings = progress
        return {"epoch": epoch, "max_epochs": planned, "run_settings": settings}

    def bundle_run_settings(self) -> tuple[dict[str, str], int] | None:
        """What the bundle's training command of this run computes from its configs and overrides: its
        ``run_settings`` (as recorded in ``last.pt``) and its number of epochs; ``None`` if they cannot be worked
        out (e.g. a config that cannot be read)."""
        key = json.dumps([str(self.root), self.loss, self.fold, dict(self.overrides)], sort_keys=True, default=str)
        return _bundle_run_settings(key, *_file_key(self.bundle_dir / "configs" / "train.json"))

    @property
    def training_finished(self) -> bool:
        """The resume checkpoint (:meth:`recorded_training`) records the last epoch of this run's schedule (and of the
        schedule the training was started with), with the settings this run's training command would have, and
        ``models/model.pt`` exists: training again would only start over (the bundle does not extend a finished run)."""
        if not self.model.is_file():
            return False
        compared = self._compared_training_record()
        if compared is None:
            return False
        record, changes, epochs = compared
        return not changes and record["epoch"] >= max(record["max_epochs"], epochs)

    def _compared_training_record(self) -> tuple[dict[str, Any], list[str], int] | None:
        """The resume checkpoint's record (:meth:`recorded_training`), how its run settings differ from those this
        run's training command would record now (:meth:`bundle_run_settings`, on the keys the record holds) and that
        command's number of epochs; ``None`` when the record has no run settings or the command's cannot be worked
        out."""
        record = self.recorded_training()
        if record is None or record["run_settings"] is None:
            return None
        expected = self.bundle_run_settings()
        if expected is None:
            return None
        settings, epochs = expected
        recorded = self._moved_along(record["run_settings"], settings)
        return record, changed_entries(recorded, settings, [key for key in settings if key in recorded]), epochs

    def training_start(self) -> str:
        """How the next training command of an untrained run starts: ``"new"`` (no ``last.pt``), ``"resume"`` (it
        records an interrupted run with epochs left to train in this run), ``"over"`` (it records a
        finished run, or one with no epoch left in this run's schedule: the bundle starts over) or ``"unknown"``
        (``last.pt`` that cannot be read, without a readable ``last.json``: the bundle says what it makes of it)."""
        if not self.resume_checkpoint.is_file():
            return "new"
        record = self.recorded_training()
        if record is None:
            return "unknown"
        expected = self.bundle_run_settings()
        epochs = expected[1] if expected is not None else record["max_epochs"]
        return "resume" if record["epoch"] < min(record["max_epochs"], epochs) else "over"

    @property
    def has_failed(self) -> bool:
        return (self.root / FAILED_MARKER).is_file()

    @property
    def failure_log(self) -> Path | None:
        """The log of the command that failed (from ``failed.json``), or ``None``."""
        log = self._failure_record().get("log")
        return Path(log) if isinstance(log, str) else None

    @property
    def failure_error(self) -> str | None:
        """The error that ended the command that failed, as its log shows it (from ``failed.json``), or ``None``."""
        error = self._failure_record().get("error")
        return error if isinstance(error, str) else None

    def _failure_record(self) -> dict[str, Any]:
        try:
            record = json.loads((self.root / FAILED_MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    @property
    def settings(self) -> dict[str, str]:
        """What the run's result depends on besides the code: the bundle, loss, fold and overrides, as text."""
        return {
            "bundle_dir": str(self.bundle_dir),
            "loss": self.loss,
            "fold": str(self.fold),
            **{key: format_override(value) for key, value in self.overrides.items()},
        }

    def settings_changes(self) -> list[str]:
        """How :attr:`settings` differ from those recorded when the run's training started (``settings.json``):
        ``"key: recorded -> now"`` lines; empty when they agree.

        A run trained by ``--dry-run``'s commands has no ``settings.json`` (only the study's runner writes it): its
        training's own record in ``checkpoints/last.pt`` (:meth:`recorded_training`) is compared instead with what its
        training command would record now (:meth:`bundle_run_settings`), the number of epochs included. Empty when
        neither is recorded (a run made elsewhere).
        """
        try:
            recorded = json.loads((self.root / SETTINGS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, dict):
            return changed_entries(self._moved_along(recorded, self.settings), self.settings)
        compared = self._compared_training_record()
        if compared is None:
            return []
        record, changes, epochs = compared
        return changes + changed_entries({"epochs": record["max_epochs"]}, {"epochs": epochs})

    def _moved_along(self, recorded: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
        """A record of the run (``settings.json``, or the run settings in ``last.pt``) with the data paths that moved
        along with the study folder (a study moved or copied with its data set inside it, or moved away from it) as
        they are in ``current`` (:func:`~monai_mixedfocal.bundle.moved_runs.moved_along`). The study folder is the
        datalist's, which every run records (``OUT/datalist.json``)."""
        from monai_mixedfocal.bundle.moved_runs import moved_along

        before, now = recorded.get("datalist"), current.get("datalist")
        if not isinstance(before, str) or not before or not isinstance(now, str) or not now:
            return dict(recorded)
        return moved_along(recorded, current, Path(before).parent, Path(now).parent, STUDY_PATH_SETTINGS)

    @property
    def settings_warning(self) -> str | None:
        """``"WARNING: made with other settings (...)"`` when :meth:`settings_changes` finds any, else ``None``."""
        changes = self.settings_changes()
        if not changes:
            return None
        return (
            f"WARNING: made with other settings ({'; '.join(changes)}); kept as it is (delete {self.root} to run it "
            "again with the current ones)"
        )

    def record_settings(self) -> None:
        """Write :attr:`settings` to ``settings.json`` (when a training starts from scratch)."""
        atomic_write_json(self.root / SETTINGS_FILE, self.settings)

    def _command(self, config_files: Sequence[str], run_id: str) -> list[str]:
        configs = self.bundle_dir / "configs"
        cmd = [sys.executable, "-m", "monai.bundle", "run", run_id]
        cmd += ["--meta_file", str(configs / "metadata.json")]
        cmd += ["--config_file", str([str(configs / name) for name in config_files])]
        cmd += ["--logging_file", str(configs / "logging.conf")]
        cmd += ["--bundle_root", str(self.root), "--loss", self.loss, "--fold", str(self.fold)]
        for key, value in self.overrides.items():
            cmd += [f"--{key}", format_override(value)]
        return cmd

    def train_command(self) -> list[str]:
        """``python -m monai.bundle run training ... configs/train.json`` with the run's overrides."""
        return self._command(["train.json"], "training")

    def evaluate_command(self) -> list[str]:
        """``python -m monai.bundle run ... ['configs/train.json', 'configs/evaluate.json']`` on the best checkpoint,
        saving the predicted label maps (for the report's overlays)."""
        return [*self._command(["train.json", "evaluate.json"], "run"), "--save_predictions", "True"]

    def shell_line(self) -> str:
        """The commands left to run as one shell line (``--dry-run`` output, e.g. one cluster job per run): training
        and evaluation, or only the evaluation of a trained run (training it again would start over).

        The training is guarded as the study's runner guards it: it writes ``trained.ok`` when it ends, and is skipped
        while ``trained.ok`` and ``models/model.pt`` exist. A job run again (requeued after a preemption during the
        evaluation, say) evaluates the trained model instead of training it over.
        """
        evaluate = shlex.join(self.evaluate_command())
        if self.is_trained:
            return evaluate
        marker, model = shlex.quote(str(self.root / TRAINED_MARKER)), shlex.quote(str(self.model))
        train = shlex.join(self.train_command())
        return f"{{ [ -f {marker} ] && [ -f {model} ] || {{ {train} && touch {marker}; }}; }} && {evaluate}"


def _file_key(path: Path) -> tuple[str, int, int, int]:
    """``path`` with its inode, size and modification time (zeros when missing): a cache key that a change (or an
    atomic replacement) of the file invalidates."""
    try:
        stat = path.stat()
    except OSError:
        return str(path), 0, -1, 0
    return str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _fold_cases(path: str, inode: int, size: int, mtime: int) -> dict[int, list[str]] | None:
    """The case ids of each fold of a datalist JSON (:func:`~monai_mixedfocal.data.read_datalist`); ``None`` if it
    cannot be read or a case has no id."""
    from monai_mixedfocal.data import DataError, read_datalist

    try:
        items = read_datalist(path)["training"]
    except DataError:
        return None
    if any("case" not in item for item in items):
        return None
    folds: dict[int, list[str]] = {}
    for item in items:
        folds.setdefault(item["fold"], []).append(str(item["case"]))
    return folds


@functools.lru_cache(maxsize=256)
def _checkpoint_progress(
    checkpoint_key: tuple[str, int, int, int], record_key: tuple[str, int, int, int]
) -> tuple[int, int, dict[str, str] | None] | None:
    """:func:`~monai_mixedfocal.bundle.run_settings.checkpoint_progress` once per version of ``last.pt`` and
    ``last.json`` (``record_key`` is only part of the cache key)."""
    from monai_mixedfocal.bundle.run_settings import checkpoint_progress

    return checkpoint_progress(checkpoint_key[0])


@functools.lru_cache(maxsize=16)
def _bundle_classes(path: str, inode: int, size: int, mtime: int) -> list[list[str]] | None:
    """The class names a bundle's evaluation writes (see :meth:`Run.class_names`)."""
    try:
        meta = json.loads(Path(path).read_text(encoding="utf-8"))
        channels = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
        ordered = sorted((int(index), str(name)) for index, name in channels.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return [[name for index, name in ordered if index != 0], [name for _, name in ordered]]


@functools.lru_cache(maxsize=256)
def _bundle_run_settings(key: str, path: str, inode: int, size: int, mtime: int) -> tuple[dict[str, str], int] | None:
    """``run_settings`` and the number of epochs of a training command (see :meth:`Run.bundle_run_settings`), from the
    bundle's ``configs/train.json`` with the command's overrides, as ``monai.bundle run`` resolves them."""
    root, loss, fold, overrides = json.loads(key)
    try:
        import torch
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(path)
        parser.update({"bundle_root": root, "loss": loss, "fold": fold, **overrides})
        with torch.device("meta"):  # the network is described, never run: no weights to initialise (0.1 s a run)
            settings = parser.get_parsed_content("run_settings")
        epochs_id = "train#trainer#max_epochs" if "train#trainer#max_epochs" in parser else "epochs"
        epochs = int(parser.get_parsed_content(epochs_id))
    except Exception:  # anything a config can raise: unknown, so the run is not taken as trained
        return None
    if not isinstance(settings, Mapping):
        return None
    return {str(k): str(v) for k, v in settings.items()}, epochs


@functools.lru_cache(maxsize=256)
def _read_per_case_cached(
    file_key: tuple[str, int, int, int],
    cases: tuple[str, ...] | None,
    classes: tuple[tuple[str, ...], ...] | None,
) -> tuple[pd.DataFrame | None, Exception | None]:
    """:func:`~monai_mixedfocal.study.per_case_csv.read_per_case_csv` once per version of the file (the table, or the
    error it raised)."""
    from monai_mixedfocal.study.per_case_csv import read_per_case_csv

    try:
        return read_per_case_csv(file_key[0], cases, classes), None
    except (OSError, ValueError) as err:
        return None, err


def plan_runs(
    losses: Sequence[str],
    folds: Sequence[int],
    runs_dir: Path,
    bundle_dir: Path,
    overrides: Mapping[str, Any],
) -> list[Run]:
    """All runs of the study, fold-major: every loss on the first fold, then the next fold, so that a partial study
    already compares every loss on the same cases."""
    return [Run(loss, k, runs_dir / loss / f"fold_{k}", bundle_dir, dict(overrides)) for k in folds for loss in losses]
