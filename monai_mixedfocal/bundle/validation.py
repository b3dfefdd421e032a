# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Validation every ``interval`` epochs and after the last epoch, so that a run always ends validated.

MONAI's :class:`monai.handlers.ValidationHandler` validates on ``EPOCH_COMPLETED(every=interval)`` only. With a number
of epochs that is not a multiple of the interval, the last epochs are never validated, and with fewer epochs than the
interval no validation runs at all: the evaluator's ``CheckpointSaver`` then never writes ``models/model.pt`` and the
evaluation of the run fails. :class:`FinalValidationHandler` adds the last epoch to the schedule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from monai.handlers import ValidationHandler
from monai.utils import min_version, optional_import

from monai_mixedfocal.utils import is_integer

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
    from monai.engines import Evaluator
else:
    Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["FinalValidationHandler", "validation_due"]


def validation_due(epoch: int, interval: int, max_epochs: int | None) -> bool:
    """Whether the epoch ``epoch`` (1-based) ends with a validation: every ``interval`` epochs, and the last one.

    Example:
        >>> [e for e in range(1, 11) if validation_due(e, 4, 10)]
        [4, 8, 10]
    """
    return epoch % interval == 0 or epoch == max_epochs


class FinalValidationHandler(ValidationHandler):
    """:class:`monai.handlers.ValidationHandler` that also validates after the trainer's last epoch.

    Use it in place of MONAI's handler in ``train#handlers`` (the arguments are the same). Epoch-level only: the
    last-epoch rule has no meaning for ``epoch_level=False``, which is rejected.

    Args:
        interval: validate every ``interval`` epochs (and after the last epoch), ``>= 1``.
        validator: the evaluator to run.
        epoch_level: must be ``True``.
        exec_at_start: validate once before the first epoch as well.

    Raises:
        ValueError: for an ``interval`` below 1 or ``epoch_level=False``.
    """

    def __init__(
        self, interval: int, validator: Evaluator | None = None, epoch_level: bool = True, exec_at_start: bool = False
    ) -> None:
        if not is_integer(interval) or interval < 1:
            raise ValueError(f"interval (val_interval) must be an integer >= 1; got {interval!r}.")
        if not epoch_level:
            raise ValueError("FinalValidationHandler validates at epoch level only; use MONAI's ValidationHandler.")
        super().__init__(interval=interval, validator=validator, epoch_level=True, exec_at_start=exec_at_start)

    def attach(self, engine: Engine) -> None:
        """Run the validation on ``EPOCH_COMPLETED`` every ``interval`` epochs and after the last epoch."""

        def due(engine: Engine, epoch: int) -> bool:
            return validation_due(epoch, self.interval, engine.state.max_epochs)

        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=due), self)
        if self.exec_at_start:
            engine.add_event_handler(Events.STARTED, self)
