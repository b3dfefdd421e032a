# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""An Ignite handler that writes the current class weights of a loss to the training log."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from monai_mixedfocal.losses.class_weights.providers import ClassWeights

__all__ = ["ClassWeightsLogger"]


class ClassWeightsLogger:
    """Ignite handler: write the current class weights to the training log at the end of every epoch.

    Usable from a bundle config: ``{"_target_": "monai_mixedfocal.losses.class_weights.ClassWeightsLogger",
    "source": "@loss"}`` in ``train_handlers`` (MONAI workflows call :meth:`attach`).

    Args:
        source: a loss with a ``class_weights`` provider (this package's losses, :class:`ClassWeightedLoss`) or a
            provider itself.
        tag: the name in the log and the TensorBoard tag prefix.
        logger: the logger to write to (default: ``engine.logger``).
        summary_writer: an optional ``SummaryWriter``; one scalar ``{tag}/{class}`` per class per epoch.
        class_names: optional names for the classes in the log.

    Raises:
        TypeError: if ``source`` has no class-weight provider.
    """

    def __init__(
        self,
        source: Any,
        tag: str = "class_weights",
        logger: logging.Logger | None = None,
        summary_writer: Any | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        provider = source if isinstance(source, ClassWeights) else getattr(source, "class_weights", None)
        if not isinstance(provider, ClassWeights):
            raise TypeError(
                f"ClassWeightsLogger needs a loss with a class_weights provider or a ClassWeights; got "
                f"{type(source).__name__} (did you pass class_weights to the loss?)."
            )
        self.provider = provider
        self.tag = tag
        self.logger = logger
        self.summary_writer = summary_writer
        self.class_names = list(class_names) if class_names is not None else None
        #: ``(epoch, weights)`` of every logged epoch
        self.history: list[tuple[int, list[float] | None]] = []

    def attach(self, engine: Any) -> None:
        """Log at every ``Events.EPOCH_COMPLETED`` of ``engine``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        epoch = int(engine.state.epoch)
        values = self.provider.weights()
        shown = None if values is None else [float(v) for v in values.tolist()]
        self.history.append((epoch, shown))
        names = self.class_names or [str(c) for c in range(len(shown or []))]
        text = "unknown yet" if shown is None else ", ".join(f"{n}={v:.4g}" for n, v in zip(names, shown))
        (self.logger or engine.logger).info(f"Epoch {epoch} {self.tag} ({self.provider.name}): {text}")
        if self.summary_writer is not None and shown is not None:
            for name, value in zip(names, shown):
                self.summary_writer.add_scalar(f"{self.tag}/{name}", value, epoch)
