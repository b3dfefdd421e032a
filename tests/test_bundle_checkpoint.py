# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""ResumeCheckpoint: an interrupted run resumes where it stopped, with the best-model history, and only then."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import monai
import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from monai_mixedfocal.bundle import ResumeCheckpoint, check_evaluation_split, check_resume, run_settings

# the validation loss after each epoch: epoch 2 is the best; after an interruption at epoch 3, epoch 4 is worse
VAL_LOSSES = [0.5, 0.3, 0.4, 0.45, 0.35]


class _Run:
    """A small real training loop: a linear model whose weights record the epoch, a validator, the best saver."""

    def __init__(
        self,
        ckpt_dir: Path,
        max_epochs: int,
        stop_after: int | None = None,
        resume: bool = True,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.model = torch.nn.Linear(2, 1)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.1)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, patience=0)
        self.epochs_run: list[int] = []
        self.max_epochs = max_epochs

        def step(engine: Engine, batch: torch.Tensor) -> float:
            self.optimizer.zero_grad()
            loss = self.model(batch).pow(2).mean()
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                self.model.bias.fill_(engine.state.epoch)  # which epoch's weights a checkpoint holds
            return loss.item()

        self.trainer = Engine(step)
        self.validator = Engine(lambda engine, batch: None)

        @self.validator.on(Events.EPOCH_COMPLETED)
        def set_loss(engine: Engine) -> None:
            engine.state.metrics["val_loss"] = VAL_LOSSES[self.trainer.state.epoch - 1]

        self.saver = CheckpointSaver(
            save_dir=str(ckpt_dir),
            save_dict={"model": self.model},
            save_key_metric=True,
            key_metric_name="val_loss",
            key_metric_negative_sign=True,
            key_metric_filename="model.pt",
        )
        self.saver.attach(self.validator)

        @self.trainer.on(Events.EPOCH_COMPLETED)
        def validate(engine: Engine) -> None:
            self.validator.run([0])
            self.scheduler.step(self.validator.state.metrics["val_loss"])
            self.epochs_run.append(engine.state.epoch)

        self.handler = ResumeCheckpoint(
            ckpt_dir / "last.pt",
            {"model": self.model, "optimizer": self.optimizer, "lr_scheduler": self.scheduler, "best": self.saver},
            resume=resume,
            run_settings=settings,
        )
        self.handler.attach(self.trainer)
        if stop_after is not None:
            self.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda e: e.terminate())

    def run(self) -> None:
        self.trainer.run([torch.ones(2)] * 3, max_epochs=self.max_epochs)


def _model_bias(path: Path) -> float:
    return torch.load(path, weights_only=True)["bias"].item()


def test_interrupted_run_resumes_with_its_best_model_history(tmp_path: Path) -> None:
    first = _Run(tmp_path, max_epochs=5, stop_after=3)
    first.run()
    assert first.epochs_run == [1, 2, 3]
    assert _model_bias(tmp_path / "model.pt") == 2.0  # lowest validation loss so far
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(saved) == {"model", "optimizer", "lr_scheduler", "best", "trainer"}
    assert saved["trainer"]["iteration"] == 9 and saved["trainer"]["epoch_length"] == 3  # 3 epochs done

    second = _Run(tmp_path, max_epochs=5)
    second.run()
    assert second.epochs_run == [4, 5]  # continued, not started over
    assert second.trainer.state.iteration == 15
    # epoch 4 (0.45) did not replace the best model of epoch 2 (0.3): the saver's history was restored
    assert _model_bias(tmp_path / "model.pt") == 2.0
    assert second.optimizer.state_dict()["state"][0]["step"].item() == 15  # Adam's moments came back too
    assert second.scheduler.state_dict()["best"] == 0.3


def test_without_the_history_a_resumed_run_would_lose_the_best_model(tmp_path: Path) -> None:
    """The pitfall the handler exists for: a fresh CheckpointSaver overwrites model.pt at its first validation."""
    _Run(tmp_path, max_epochs=5, stop_after=3).run()
    second = _Run(tmp_path, max_epochs=5)
    second.handler.save_dict.pop("best")
    second.run()
    assert _model_bias(tmp_path / "model.pt") == 5.0


def test_a_monai_without_the_private_best_score_list_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The best-score list is MONAI's private ``CheckpointSaver._key_metric_checkpoint``: a MONAI without it fails the
    run at its start with an error naming the MONAI version and the attribute (not the bundle's saver settings); a
    saver without a best model (``save_key_metric=False``) is the configuration's error."""
    run = _Run(tmp_path, max_epochs=2)
    monkeypatch.delattr(run.saver, "_key_metric_checkpoint")
    message = rf"installed MONAI {re.escape(monai.__version__)} has no CheckpointSaver\._key_metric_checkpoint"
    with pytest.raises(RuntimeError, match=message):
        run.run()
    assert run.epochs_run == [] and not (tmp_path / "last.pt").exists()
    run = _Run(tmp_path, max_epochs=2)
    monkeypatch.setattr(run.saver, "_key_metric_checkpoint", None)  # as MONAI sets it for save_key_metric=False
    with pytest.raises(ValueError, match="must have save_key_metric=True"):
        run.run()


@pytest.mark.parametrize(
    ("first_epochs", "stop_after", "second_epochs", "message"),
    [
        (2, None, 2, "is from a finished run (2 of 2 epochs; a finished run is not extended)"),
        (2, None, 4, "is from a finished run (2 of 2 epochs; a finished run is not extended)"),
        (4, 3, 2, "interrupted after epoch 3 of 4, and max_epochs=2 leaves nothing to resume"),
    ],
)
def test_finished_or_exhausted_runs_start_over(
    tmp_path: Path, first_epochs: int, stop_after: int | None, second_epochs: int, message: str, caplog
) -> None:
    _Run(tmp_path, max_epochs=first_epochs, stop_after=stop_after).run()
    second = _Run(tmp_path, max_epochs=second_epochs)
    second.run()
    assert second.epochs_run == list(range(1, second_epochs + 1))
    assert message in caplog.text


def test_resume_false_starts_over(tmp_path: Path) -> None:
    _Run(tmp_path, max_epochs=4, stop_after=2).run()
    second = _Run(tmp_path, max_epochs=4, resume=False)
    second.run()
    assert second.epochs_run == [1, 2, 3, 4]


def test_foreign_checkpoint_and_bad_arguments(tmp_path: Path) -> None:
    torch.save({"model": torch.nn.Linear(2, 1).state_dict()}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"cannot resume this run: it lacks \['best', 'lr_scheduler'"):
        _Run(tmp_path, max_epochs=2).run()
    with pytest.raises(ValueError, match="at least one object"):
        ResumeCheckpoint(tmp_path / "x.pt", {"model": None})
    with pytest.raises(ValueError, match="reserved"):
        ResumeCheckpoint(tmp_path / "x.pt", {"trainer": torch.nn.Linear(1, 1)})


def test_written_atomically(tmp_path: Path) -> None:
    _Run(tmp_path, max_epochs=2).run()
    names: Sequence[str] = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["last.pt", "model.pt"]  # no temporary file left behind


def test_another_run_never_resumes_an_interrupted_one(tmp_path: Path) -> None:
    """Runs started in one folder: another fold or loss is refused (at start and by the handler), the same resumes."""
    fold0 = run_settings("/data/kits19", None, 0, 5, 0, "dice", {"softmax": True})
    fold1 = run_settings("/data/kits19", None, 1, 5, 0, "mixed_focal", {"softmax": True})
    _Run(tmp_path, max_epochs=4, stop_after=2, settings=fold0).run()
    recorded = (tmp_path / "last.json").read_text()
    assert '"fold": "0"' in recorded and '"epoch": 2' in recorded and '"max_epochs": 4' in recorded
    with pytest.raises(ValueError, match=r"another run, interrupted after epoch 2 of 4 \(fold: '0' -> '1'; loss"):
        check_resume(tmp_path / "last.pt", True, fold1, epochs=4)
    with pytest.raises(ValueError, match="--resume False"):
        _Run(tmp_path, max_epochs=4, settings=fold1).run()
    check_resume(tmp_path / "last.pt", False, fold1, epochs=4)  # starting over is allowed
    check_resume(tmp_path / "last.pt", True, fold0, epochs=4)
    again = _Run(tmp_path, max_epochs=4, settings=fold0)
    again.run()
    assert again.epochs_run == [3, 4]  # resumed, same settings
    check_resume(tmp_path / "last.pt", True, fold1, epochs=4)  # a finished run holds nothing to resume


def test_another_seed_never_resumes_an_interrupted_run(tmp_path: Path) -> None:
    """The seed chooses every epoch's training data: another seed is another run. A record without a seed (written
    before the seed was recorded) still resumes."""
    seed0 = run_settings("/data/kits19", None, 0, 5, 0, "dice", {}, seed=0)
    _Run(tmp_path, max_epochs=4, stop_after=2, settings=seed0).run()
    with pytest.raises(ValueError, match=r"interrupted after epoch 2 of 4 \(seed: '0' -> '1'\)"):
        check_resume(tmp_path / "last.pt", True, {**seed0, "seed": "1"}, epochs=4)
    record = json.loads((tmp_path / "last.json").read_text())
    del record["run_settings"]["seed"]
    (tmp_path / "last.json").write_text(json.dumps(record))
    check_resume(tmp_path / "last.pt", True, {**seed0, "seed": "1"}, epochs=4)


def test_evaluation_on_another_fold_of_the_same_data_is_refused(tmp_path: Path) -> None:
    _Run(tmp_path, max_epochs=1, settings=run_settings("/data/kits19", None, 2, 5, 0, "dice")).run()
    with pytest.raises(ValueError, match=r"another split \(fold: '2' -> '0'.*Pass the training's --fold"):
        check_evaluation_split(tmp_path / "last.pt", run_settings("/data/kits19", None, 0, 5, 0, "dice"))
    check_evaluation_split(tmp_path / "last.pt", run_settings("/data/kits19", None, 2, 5, 0, "focal"))
    check_evaluation_split(tmp_path / "last.pt", run_settings("/data/external", None, 0, 5, 0, "dice"))  # other data
    check_evaluation_split(tmp_path / "none.pt", run_settings("/data/kits19", None, 0, 5, 0, "dice"))  # no record
