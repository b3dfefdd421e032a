# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The best model (``models/model.pt``) written atomically, and checkpoint files read with errors that name them.

MONAI's ``CheckpointSaver`` saves through Ignite's ``Checkpoint``, which removes the previous best file before it
writes the new one, and MONAI's ``_DiskSaver`` writes in place (``atomic=False``, so that the file gets the permissions
of the umask). A run killed during that write leaves a truncated ``model.pt`` and no earlier one: the best model so far
is lost, and an evaluation fails with torch's ``failed finding central directory``. A file removed in the meantime (a
kill between the remove and the write, or a user) makes the next remove raise ``FileNotFoundError`` at every resume.

:class:`AtomicCheckpointSaver` is MONAI's ``CheckpointSaver`` with a save handler that writes through
:func:`~monai_mixedfocal.utils.atomic_write_bytes` (a complete temporary file with the umask's permissions, then
``os.replace``), skips the remove of a fixed file name (the replace supersedes it) and removes other names with
``missing_ok``. :func:`load_checkpoint` wraps ``torch.load`` so that a damaged file is named, with what to do.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointSaver

from monai_mixedfocal.utils import atomic_write_bytes

__all__ = ["RESUME_HINT", "AtomicCheckpointSaver", "AtomicDiskSaver", "check_model_file", "load_checkpoint"]

#: what to do about an unreadable resume checkpoint
RESUME_HINT = "remove it or start over with --resume False"

#: what ``torch.load`` raises for a damaged file: ``RuntimeError``, ``EOFError`` or ``pickle.UnpicklingError`` for a
#: truncated, empty or foreign file, ``OSError`` for a folder or a file it cannot read, and, unpickling arbitrary bytes
#: in the legacy format, anything else too (``IndexError: pop from empty list``, ``KeyError``, ...). With
#: ``weights_only=True`` nothing but data is built, so any ``Exception`` means a damaged file.
_LOAD_ERRORS: type[Exception] = Exception


def _reason(err: BaseException) -> str:
    """The first line of ``err``, after its type name (``EOFError`` has no message)."""
    lines = str(err).strip().splitlines()
    first = lines[0].strip() if lines else ""
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device | None = "cpu",
    mmap: bool = False,
    hint: str = RESUME_HINT,
) -> Any:
    """``torch.load(path, weights_only=True)``, with an error that names the file when it cannot be read.

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load``.
        mmap: map the file instead of reading it (cheap when only a few entries are looked at).
        hint: what to do, appended to the error message.

    Returns:
        The loaded object (for this project's checkpoints, a mapping of state dicts).

    Raises:
        ValueError: ``<path>: not a readable checkpoint (<reason>); <hint>`` for a truncated, empty, foreign or
            missing file, or a folder (the ``torch.load`` error is its cause).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except _LOAD_ERRORS as err:
        if not mmap:
            raise ValueError(f"{path}: not a readable checkpoint ({_reason(err)}); {hint}") from err
    # mapped, a damaged file often fails with a bare "Invalid argument": read it to say what is wrong
    return load_checkpoint(path, map_location=map_location, mmap=False, hint=hint)


def check_model_file(path: str | os.PathLike) -> None:
    """At the start of an evaluation or inference, before any image is read: the model file exists and can be loaded.

    Args:
        path: the model to evaluate (``models/model.pt``).

    Raises:
        FileNotFoundError: there is no such file (MONAI's ``CheckpointLoader`` would say so only after the evaluator's
            data loader has started); the message says what writes it and how to point to another one.
        ValueError: the file cannot be loaded or holds no state dict; the message names it.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(
            f"{path}: no such model file. A training writes it at its first validation (after --val_interval "
            "epochs): train this bundle_root first (run training with the same --bundle_root), or point to a trained "
            "model (--ckpt_dir for evaluate.json, --ckpt_path for inference.json)"
        )
    hint = "train this bundle_root again to write it, or restore an intact copy"
    state = load_checkpoint(path, mmap=path.is_file(), hint=hint)
    if not isinstance(state, Mapping):
        what = type(state).__name__
        raise ValueError(f"{path}: not a readable checkpoint (holds a {what}, not a state dict); {hint}")


class AtomicDiskSaver(DiskSaver):
    """Ignite's ``DiskSaver`` that writes atomically with the umask's permissions, optionally under a fixed name.

    Args:
        dirname: the folder of the files (created).
        filename: a fixed file name for every save (e.g. ``model.pt``), or ``None`` for Ignite's names.
        save_on_rank: the rank that writes.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, save_on_rank: int = 0) -> None:
        super().__init__(dirname=dirname, atomic=True, create_dir=True, require_empty=False, save_on_rank=save_on_rank)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename if self.filename is not None else filename, metadata)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        buffer = io.BytesIO()
        func(checkpoint, buffer, **self.kwargs)
        atomic_write_bytes(path, buffer.getvalue())  # the previous file stays intact until this one is complete

    def remove(self, filename: str) -> None:
        """Remove an outdated file; a fixed name is left alone (the save that follows every remove replaces it)."""
        if self.filename is not None or idist.get_rank() != self.save_on_rank:
            return
        (self.dirname / filename).unlink(missing_ok=True)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) whose files are written atomically.

    A run killed while it saves leaves the previous file intact (and at most a hidden ``.<name>.*.tmp`` beside it), and
    a file that has gone missing is not an error when it is replaced or removed.

    Example:
        >>> saver = AtomicCheckpointSaver(  # doctest: +SKIP
        ...     "models", {"model": net}, save_key_metric=True, key_metric_filename="model.pt"
        ... )
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in vars(self).values():
            if isinstance(checkpoint, Checkpoint) and isinstance(checkpoint.save_handler, DiskSaver):
                handler = checkpoint.save_handler
                checkpoint.save_handler = AtomicDiskSaver(
                    handler.dirname, getattr(handler, "filename", None), save_on_rank=handler.save_on_rank
                )
