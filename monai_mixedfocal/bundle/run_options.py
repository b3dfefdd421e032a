# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The start-up check of a training's plain options: device, switches, optimiser schedule and data loader.

These values reach PyTorch, Ignite and MONAI only when the trainer is built, after every case has been cached: a
``--learning_rate abc`` failed after the caching with ``'<=' not supported between instances of 'float' and 'str'``,
``--device cuda`` on a machine without a GPU with ``Torch not compiled with CUDA enabled``, ``--lr_patience -1``
lowered the learning rate after every epoch without a word, and ``--min_learning_rate abc`` failed at the first
plateau, possibly hundreds of epochs in. :func:`check_device` and :func:`check_run_options` are the first steps of
the bundles' ``initialize``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from monai.utils import str2bool

from monai_mixedfocal.utils import is_integer, is_number

__all__ = ["check_device", "check_run_options"]


def check_device(device: Any) -> None:
    """Refuse a ``--device`` that is not a torch device, or a CUDA device this machine does not have (the first check
    of ``initialize``: the bundles' ``amp`` and ``keep_freed_memory`` defaults are computed from it).

    Raises:
        ValueError: naming ``--device`` and the number of usable GPUs.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device must name a torch device such as 'cpu' or 'cuda:0', got {device!r}.") from err
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (parsed.index or 0) >= count:
            raise ValueError(
                f"--device {device}: this machine has {count} CUDA GPU(s) that PyTorch can use. Leave --device out "
                "to train on the GPU when there is one and on the CPU otherwise."
            )


def check_run_options(
    switches: Mapping[str, Any] | None = None,
    *,
    learning_rate: Any = None,
    min_learning_rate: Any = None,
    lr_factor: Any = None,
    lr_patience: Any = None,
    val_interval: Any = None,
    batch_size: Any = None,
    num_workers: Any = None,
    cache_rate: Any = None,
    aug_prob: Any = None,
) -> None:
    """Refuse, at start and naming the option, the training options that would fail (or mislead) only later.

    Args:
        switches: ``{option: value}`` of the yes/no options (``amp``, ``resume``, ...), read with
            :func:`monai.utils.str2bool`, as the bundles read them: a bool, or text such as ``true``/``false``,
            ``yes``/``no``, ``"1"``/``"0"`` (not the numbers 1 and 0).
        learning_rate: a finite number > 0.
        min_learning_rate: a finite number in ``[0, learning_rate]`` (ReduceLROnPlateau's ``min_lr``).
        lr_factor: a number in ``(0, 1)`` (ReduceLROnPlateau's ``factor``).
        lr_patience: an integer >= 0 (ReduceLROnPlateau's ``patience``).
        val_interval: an integer >= 1 (epochs between validations).
        batch_size: an integer >= 1.
        num_workers: an integer >= 0 (DataLoader worker processes).
        cache_rate: a number in [0, 1] (the share of cases ``CacheDataset`` keeps; 2 was taken as 1).
        aug_prob: a number in [0, 1] (the probability of each augmentation; 2 was clipped to 1, and recorded as 2).

    Raises:
        ValueError: the first option out of range; the message names it and the value given.
    """
    for option, value in (switches or {}).items():
        try:
            str2bool(value)
        except (ValueError, TypeError) as err:
            raise ValueError(f"--{option} must be true or false, got {value!r}.") from err
    if learning_rate is not None and not (is_number(learning_rate) and learning_rate > 0):
        raise ValueError(f"--learning_rate must be a number > 0, got {learning_rate!r}.")
    if min_learning_rate is not None:
        upper = learning_rate if learning_rate is not None else math.inf
        if not (is_number(min_learning_rate) and 0 <= min_learning_rate <= upper):
            raise ValueError(
                f"--min_learning_rate must be a number in [0, --learning_rate {learning_rate}], "
                f"got {min_learning_rate!r}."
            )
    if lr_factor is not None and not (is_number(lr_factor) and 0 < lr_factor < 1):
        raise ValueError(f"--lr_factor must be a number in (0, 1), got {lr_factor!r}.")
    for option, value in (("cache_rate", cache_rate), ("aug_prob", aug_prob)):
        if value is not None and not (is_number(value) and 0 <= value <= 1):
            raise ValueError(f"--{option} must be a number in [0, 1], got {value!r}.")
    for option, value, low in (
        ("lr_patience", lr_patience, 0),
        ("val_interval", val_interval, 1),
        ("batch_size", batch_size, 1),
        ("num_workers", num_workers, 0),
    ):
        if value is not None and not (is_integer(value) and value >= low):
            raise ValueError(f"--{option} must be an integer >= {low}, got {value!r}.")
