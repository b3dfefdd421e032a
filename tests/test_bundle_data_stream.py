# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""EpochSeededData: each epoch's training data depends on (seed, epoch) alone, so a resumed engine sees the batches
of the uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandGaussianNoised

from monai_mixedfocal.bundle import EpochSeededData
from monai_mixedfocal.bundle.data_stream import epoch_seed

EPOCH_LENGTH = 3  # fewer iterations than one pass of the loader, as in the bundles (the iterator spans epochs)


def _loader(workers: int, **kwargs) -> DataLoader:
    data = [{"x": torch.full((1, 2), float(i))} for i in range(8)]
    dataset = Dataset(data, transform=Compose([RandGaussianNoised(keys="x", prob=1.0)]))
    kwargs.setdefault("generator", torch.Generator())
    return DataLoader(dataset, batch_size=2, shuffle=True, num_workers=workers, **kwargs)


def _batches(workers: int, max_epochs: int, resume_after: int = 0) -> dict[int, list[torch.Tensor]]:
    """The batches of each epoch of an engine that starts after epoch ``resume_after`` (0: from the start)."""
    loader = _loader(workers)
    seen: dict[int, list[torch.Tensor]] = {}
    engine = Engine(lambda e, batch: seen.setdefault(e.state.epoch, []).append(batch["x"].clone()))
    EpochSeededData(loader, seed=7).attach(engine)
    torch.manual_seed(123 + resume_after)  # the global generator differs between the runs: it must not matter
    if resume_after:
        engine.load_state_dict({"epoch": resume_after, "max_epochs": max_epochs, "epoch_length": EPOCH_LENGTH})
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: torch.rand(5))  # e.g. a validation drawing numbers
    engine.run(loader, max_epochs=max_epochs, epoch_length=EPOCH_LENGTH)
    return seen


@pytest.mark.parametrize("workers", [0, 1], ids=["no-workers", "one-worker"])
def test_a_resumed_engine_sees_the_batches_of_the_uninterrupted_one(workers: int) -> None:
    whole = _batches(workers, max_epochs=3)
    resumed = _batches(workers, max_epochs=3, resume_after=2)
    assert list(resumed) == [3]
    assert all(torch.equal(a, b) for a, b in zip(resumed[3], whole[3], strict=True))
    assert not torch.equal(whole[1][0], whole[3][0])  # the epochs differ (shuffling and noise)


def test_it_needs_its_own_generator_and_no_persistent_workers() -> None:
    with pytest.raises(ValueError, match="a generator of its own"):
        EpochSeededData(_loader(0, generator=None), seed=0)
    with pytest.raises(ValueError, match="needs persistent_workers=False"):
        EpochSeededData(_loader(1, persistent_workers=True), seed=0)


def test_epoch_seeds_of_neighbouring_seeds_never_coincide() -> None:
    """Against the bug (``seed + epoch``): under torchrun each rank runs with seed + rank, so rank 1's epoch 1 would
    draw the patches of rank 0's epoch 2. The module promises distinct seeds for fewer than 1_000_003 epochs."""
    seeds = [epoch_seed(seed, epoch) for seed in range(4) for epoch in range(1, 1001)]
    assert len(set(seeds)) == len(seeds)


def test_the_loader_is_seeded_from_seed_and_epoch() -> None:
    """Against the bug (seeded from the iteration instead of the epoch): every epoch's generator seed is
    epoch_seed(seed, epoch), as documented (not merely some deterministic function of the engine state)."""
    data = [{"x": torch.full((1, 2), float(i))} for i in range(8)]
    dataset = Dataset(data, transform=Compose([RandGaussianNoised(keys="x", prob=1.0)]))
    loader = DataLoader(dataset, batch_size=2, shuffle=True, num_workers=0, generator=torch.Generator())
    engine = Engine(lambda e, batch: None)
    EpochSeededData(loader, seed=7).attach(engine)
    seen: dict[int, int] = {}
    engine.add_event_handler(
        Events.EPOCH_STARTED, lambda e: seen.setdefault(e.state.epoch, loader.generator.initial_seed())
    )
    engine.run(loader, max_epochs=3, epoch_length=3)
    assert seen == {epoch: epoch_seed(7, epoch) for epoch in (1, 2, 3)}
