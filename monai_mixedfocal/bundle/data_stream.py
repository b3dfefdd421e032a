# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""A training data stream that depends on the seed and the epoch alone, so that a resumed run trains on exactly the
patches and augmentations of the uninterrupted one.

A DataLoader draws its shuffling order and its workers' seeds from a random generator, and its random transforms keep
their own random states (in the worker processes, with workers). None of that is in a checkpoint: a run resumed
after epoch ``k`` started the stream over and trained epoch ``k + 1`` on the patches of epoch 1; and since every
loader, the validation's too, drew from the global generator, how often a run validated changed the patches it
trained on. :class:`EpochSeededData` seeds, at the start of every epoch, the training loader's own generator (and,
without workers, its transforms) from ``(seed, epoch)`` and starts a fresh pass of the loader; MONAI's
``worker_init_fn`` then seeds each worker's transforms from that generator. The loader therefore needs its own
``torch.Generator`` and, with workers, ``persistent_workers=False`` (persistent workers would keep their random
states from one epoch to the next).
"""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events
from monai.data.utils import set_rnd

__all__ = ["EpochSeededData", "epoch_seed"]

# seeds of consecutive epochs and of neighbouring base seeds (e.g. ``seed + rank`` under torchrun) never coincide for
# fewer than this many epochs
_EPOCHS_PER_SEED = 1_000_003


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of the training data of ``epoch`` (1-based) in a run seeded with ``seed``."""
    return (int(seed) * _EPOCHS_PER_SEED + int(epoch)) % 2**63


class EpochSeededData:
    """Ignite handler: at every ``EPOCH_STARTED``, seed the training loader from ``(seed, epoch)`` and start a fresh
    pass of it, so that each epoch's patches and augmentations depend on the seed and the epoch alone.

    Args:
        loader: the trainer's DataLoader, with its own ``generator`` and, with workers, ``persistent_workers=False``.
        seed: the run's seed (under ``torchrun``, each rank's: ``seed + rank``).

    Raises:
        ValueError: the loader has no generator of its own, or keeps its workers between epochs.

    Example (a bundle config)::

        {"_target_": "monai_mixedfocal.bundle.EpochSeededData", "loader": "@train#dataloader", "seed": "@data_seed"}
    """

    def __init__(self, loader: torch.utils.data.DataLoader, seed: int) -> None:
        if getattr(loader, "generator", None) is None:
            raise ValueError(
                "EpochSeededData needs a loader with a generator of its own, which it reseeds every epoch (in a "
                'bundle config: "generator": "$torch.Generator()").'
            )
        if loader.num_workers > 0 and loader.persistent_workers:
            raise ValueError(
                "EpochSeededData needs persistent_workers=False with workers: persistent workers keep their random "
                "states from one epoch to the next, so an epoch's augmentations would depend on the epochs before it."
            )
        self.loader = loader
        self.seed = int(seed)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        seed = epoch_seed(self.seed, engine.state.epoch)
        self.loader.generator.manual_seed(seed)
        if self.loader.num_workers == 0:  # with workers, MONAI's worker_init_fn seeds them from the generator
            set_rnd(self.loader.dataset, seed)
        engine.set_data(self.loader)
