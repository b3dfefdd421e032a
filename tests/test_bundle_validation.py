# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""FinalValidationHandler: validation every ``interval`` epochs and after the last one, on a real trainer."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator

from monai_mixedfocal.bundle import FinalValidationHandler
from monai_mixedfocal.bundle.validation import validation_due


def _validated_epochs(max_epochs: int, interval: int, exec_at_start: bool = False) -> list[int]:
    """Train a no-op trainer for ``max_epochs`` epochs; the trainer epochs at which a real evaluator ran."""
    data = [{"image": torch.zeros(1, 1, 4, 4), "label": torch.zeros(1, 1, 4, 4)}]
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=data, network=torch.nn.Identity())
    trainer = Engine(lambda engine, batch: None)
    FinalValidationHandler(interval=interval, validator=evaluator, exec_at_start=exec_at_start).attach(trainer)
    runs: list[int] = []
    evaluator.add_event_handler(Events.COMPLETED, lambda engine: runs.append(trainer.state.epoch))
    trainer.run([0, 1], max_epochs=max_epochs)
    return runs


@pytest.mark.parametrize(
    ("max_epochs", "interval", "expected"),
    [
        (1, 6, [1]),  # fewer epochs than the interval: MONAI's handler would never validate
        (10, 4, [4, 8, 10]),
        (12, 4, [4, 8, 12]),  # a multiple: no extra validation
        (3, 1, [1, 2, 3]),
    ],
)
def test_validates_every_interval_and_after_the_last_epoch(max_epochs: int, interval: int, expected: list[int]) -> None:
    assert _validated_epochs(max_epochs, interval) == expected


def test_exec_at_start_adds_a_validation_before_training() -> None:
    assert _validated_epochs(2, 2, exec_at_start=True) == [0, 2]


def test_resumed_run_still_validates_its_last_epoch() -> None:
    assert [e for e in range(4, 8) if validation_due(e, 3, 7)] == [6, 7]


@pytest.mark.parametrize("interval", [0, -1, 1.5, True, "2"])
def test_bad_interval_is_rejected(interval: object) -> None:
    with pytest.raises(ValueError, match="val_interval"):
        FinalValidationHandler(interval=interval)  # type: ignore[arg-type]


def test_iteration_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="epoch level"):
        FinalValidationHandler(interval=2, epoch_level=False)
