# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Code the MONAI bundles in ``bundles/`` call from their configs, where plain MONAI is not enough.

- :func:`build_loss`: ``--loss`` by registry name or any ``_target_`` loss.
- :func:`load_split`, :func:`find_images`, :func:`check_training_setup`, :func:`check_sliding_window`: the data and
  settings of a run, checked at start;
  :data:`DATA_SOURCES`: the data sets :func:`load_split` lists from their own folder layout.
- :func:`inference_images`: the images inference segments (``--datalist`` files, or those found under ``dataset_dir``).
- :func:`prediction_root`, :func:`inference_root`: the folder saved predictions mirror, so that they land inside
  ``output_dir``.
- :func:`patch_sampling`: the training patches, uniformly random (the paper) or centred on each class in turn;
  :data:`PATCH_SAMPLING_MODES`: its modes (``"random"``, ``"by_class"``).
- :func:`keep_freed_memory`: glibc's ``malloc`` keeps freed memory for reuse (no page faults of fresh tensors).
- :class:`JoiningCacheDataset`: MONAI's ``CacheDataset`` whose caching threads have stopped before a failure to load a
  case is raised (with MONAI's thread pool the command died of SIGABRT after the error).
- :class:`FinalValidationHandler`: MONAI's ``ValidationHandler`` that also validates after the last epoch.
- :class:`EpochSeededData`: each epoch's training data depends on (seed, epoch) alone, so that a resumed run trains on
  the data of the uninterrupted one.
- :class:`ResumeCheckpoint`: the atomic, resumable ``last.pt`` (network, optimizer, scheduler, trainer, best score,
  run settings).
- :class:`AtomicCheckpointSaver`: MONAI's ``CheckpointSaver`` writing ``models/model.pt`` atomically (a kill while it
  saves keeps the previous best model); :func:`check_model_file`, :func:`load_checkpoint`: checkpoint files read with
  errors that name them.
- :func:`run_settings`, :func:`describe_network`, :func:`check_resume`, :func:`check_evaluation_split`: a run's data
  split, loss and network, recorded in ``last.pt`` (and ``last.json`` beside it), so that another run never resumes it
  and an evaluation never scores a model on its own training cases or with another network;
  :mod:`~monai_mixedfocal.bundle.moved_runs`: which of those paths moved with a run folder moved or copied elsewhere.
- :func:`check_writable`, :func:`lock_training`: at start, the output folders can be written and no other training
  runs in them.
- :class:`PerCaseMetricsWriter`: the per-case, per-class metrics CSV of an evaluation.
- :func:`protect_key`: the MONAI Label x ``Spacingd`` workaround for the inference preprocessing.
- :class:`ChannelArgmaxd`: ``AsDiscreted(argmax=True)`` with ``torch.max`` (16 to 20 times faster on CPU).

Configs reference these by full dotted path, e.g. ``"_target_": "monai_mixedfocal.bundle.ResumeCheckpoint"``.
"""

from __future__ import annotations

from monai_mixedfocal.bundle.allocator import keep_freed_memory
from monai_mixedfocal.bundle.cache_dataset import JoiningCacheDataset
from monai_mixedfocal.bundle.channel_argmax import ChannelArgmaxd
from monai_mixedfocal.bundle.checkpoint import ResumeCheckpoint
from monai_mixedfocal.bundle.config_ids import check_command_line_ids
from monai_mixedfocal.bundle.data_stream import EpochSeededData
from monai_mixedfocal.bundle.model_saver import AtomicCheckpointSaver, check_model_file, load_checkpoint
from monai_mixedfocal.bundle.output_dirs import check_writable, lock_training
from monai_mixedfocal.bundle.patch_sampling import PATCH_SAMPLING_MODES, patch_sampling
from monai_mixedfocal.bundle.per_case_writer import PerCaseMetricsWriter
from monai_mixedfocal.bundle.run_options import check_device, check_run_options
from monai_mixedfocal.bundle.run_settings import check_evaluation_split, check_resume, describe_network, run_settings
from monai_mixedfocal.bundle.startup import (
    DATA_SOURCES,
    build_loss,
    check_sliding_window,
    check_training_setup,
    find_images,
    inference_images,
    inference_root,
    load_split,
    prediction_root,
)
from monai_mixedfocal.bundle.transforms import protect_key
from monai_mixedfocal.bundle.validation import FinalValidationHandler

__all__ = [
    "DATA_SOURCES",
    "PATCH_SAMPLING_MODES",
    "AtomicCheckpointSaver",
    "ChannelArgmaxd",
    "EpochSeededData",
    "FinalValidationHandler",
    "JoiningCacheDataset",
    "PerCaseMetricsWriter",
    "ResumeCheckpoint",
    "build_loss",
    "check_command_line_ids",
    "check_device",
    "check_evaluation_split",
    "check_model_file",
    "check_resume",
    "check_run_options",
    "check_sliding_window",
    "check_training_setup",
    "check_writable",
    "describe_network",
    "find_images",
    "inference_images",
    "inference_root",
    "keep_freed_memory",
    "load_checkpoint",
    "load_split",
    "lock_training",
    "patch_sampling",
    "prediction_root",
    "protect_key",
    "run_settings",
]
