# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The study's plan: one bundle run per (loss, fold), its folder, its commands and its state on disk.

Every run trains and evaluates through the bundle's own configs with ``python -m monai.bundle run`` (no second training
loop here). A run's folder is its ``bundle_root``: ``models/model.pt`` (the lowest-validation-loss weights),
``checkpoints/`` (``last.pt``, written after every epoch, the checkpoint a re-started run resumes from, and
``last.json``, the run's settings and epoch beside it; outside ``models/``, where MONAI Label offers every ``*.pt`` as a
model) and ``eval/`` (TensorBoard logs, the per-case metrics CSV and the predicted label maps), plus ``train.log`` /
``evaluate.log`` and the state markers written by the runner.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_mixedfocal.shipped_bundles import BUNDLE_NAMES, bundle_dir
from monai_mixedfocal.utils import atomic_write_json, changed_entries

#: name of the per-case metrics CSV that ``configs/evaluate.json`` writes into the run's ``eval/`` folder
PER_CASE_CSV = "per_case_metrics.csv"
#: marker written by the runner when the training command has finished successfully
TRAINED_MARKER = "trained.ok"
#: marker written by the runner when a command of the run has failed (removed when the run is retried)
FAILED_MARKER = "failed.json"
#: the run's settings (bundle, loss, fold, overrides) recorded when its training starts from scratch
SETTINGS_FILE = "settings.json"


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
    def is_finished(self) -> bool:
        """Evaluated: the per-case metrics exist (also true for a run done elsewhere, e.g. as a cluster job)."""
        return self.per_case_csv.is_file()

    @property
    def is_trained(self) -> bool:
        """The training command finished successfully (an interrupted training resumes from ``checkpoints/last.pt``)."""
        return (self.root / TRAINED_MARKER).is_file()

    @property
    def has_failed(self) -> bool:
        return (self.root / FAILED_MARKER).is_file()

    @property
    def failure_log(self) -> Path | None:
        """The log of the command that failed (from ``failed.json``), or ``None``."""
        try:
            log = json.loads((self.root / FAILED_MARKER).read_text(encoding="utf-8")).get("log")
        except (OSError, ValueError, AttributeError):
            return None
        return Path(log) if isinstance(log, str) else None

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
        ``"key: recorded -> now"`` lines; empty when they agree or nothing was recorded (a run made elsewhere)."""
        try:
            recorded = json.loads((self.root / SETTINGS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if not isinstance(recorded, dict):
            return []
        return changed_entries(recorded, self.settings)

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
        """Both commands as one shell line (``--dry-run`` output, e.g. one cluster job per run)."""
        return " && ".join(shlex.join(cmd) for cmd in (self.train_command(), self.evaluate_command()))


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
