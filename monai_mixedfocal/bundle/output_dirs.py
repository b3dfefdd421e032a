# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Start-up checks of a run's output folders: they can be written, and no other training writes in them.

Without them, a read-only ``checkpoints/`` is found only when the first epoch and its validation are over, a read-only
``eval/`` only after every case has been inferred; and a second training started in a ``bundle_root`` that is in use
(e.g. beside an orphaned one) writes the same ``last.pt`` and ``model.pt``.
"""

from __future__ import annotations

import errno
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "check_writable", "lock_training", "release_training_lock"]

#: the lock file in the folder of the resume checkpoint (``checkpoints/.lock``)
LOCK_NAME = ".lock"

#: the locks this process holds: lock file -> open descriptor (held until the process ends)
_HELD: dict[Path, int] = {}


def _reason(err: OSError) -> str:
    return err.strerror or str(err) or type(err).__name__


def check_writable(dirs: str | os.PathLike | Iterable[str | os.PathLike]) -> None:
    """Create each folder and write (and remove) a temporary file in it.

    Args:
        dirs: one folder or several (e.g. ``models/``, ``checkpoints/`` and ``eval/`` of a training).

    Raises:
        OSError: ``cannot write to <dir> (<reason>)`` for the first folder that cannot be created or written.
    """
    for folder in [dirs] if isinstance(dirs, (str, os.PathLike)) else list(dirs):
        path = Path(os.path.expanduser(os.fspath(folder)))
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path, prefix=".write_check.", suffix=".tmp")
            os.close(fd)
            os.unlink(tmp)
        except OSError as err:
            raise OSError(f"cannot write to {path} ({_reason(err)})") from err


def _rank() -> int:
    """This process's rank: from ``torch.distributed`` once it is set up, else ``torchrun``'s ``RANK``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def lock_training(checkpoint: str | os.PathLike, bundle_root: str | os.PathLike | None = None) -> Path | None:
    """Take the lock of a training's checkpoint folder (a POSIX record lock, ``fcntl.lockf``, on
    ``<folder of checkpoint>/.lock``).

    The lock is held until the process ends (the OS releases it when the process dies, however it dies); taking it
    again in the same process does nothing. Only rank 0 of a distributed run takes it. Where ``fcntl`` is missing
    (Windows) nothing is locked. A record lock belongs to the process alone, where an ``flock`` belongs to the open
    file, which the processes it forks share: with ``flock`` the DataLoader workers of a killed training held its lock
    until they noticed their parent had died (seconds), and the training started again at once was refused.

    Args:
        checkpoint: the resume checkpoint (``checkpoints/last.pt``); its folder is created.
        bundle_root: the folder named in the error (default: the checkpoint folder's parent).

    Returns:
        The lock file, or ``None`` when nothing was locked.

    Raises:
        RuntimeError: ``another training (pid N) is running in <bundle_root>``: another process holds the lock.
        OSError: the lock file cannot be created.

    Warns:
        UserWarning: the file system does not support locks; nothing is locked.
    """
    if fcntl is None or _rank() != 0:
        return None
    folder = Path(os.path.abspath(os.path.expanduser(os.fspath(checkpoint)))).parent
    lock = folder / LOCK_NAME
    if lock in _HELD:
        return lock
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):  # e.g. a file system without locks
            os.close(fd)
            warnings.warn(f"{lock}: cannot be locked ({_reason(err)}); not checking for another training", stacklevel=2)
            return None
        holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        root = folder.parent if bundle_root is None else os.path.abspath(os.path.expanduser(os.fspath(bundle_root)))
        raise RuntimeError(
            f"another training (pid {holder}) is running in {root} (it holds {lock}): wait for it to end or stop "
            "it, or use another --bundle_root"
        ) from err
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    _HELD[lock] = fd
    return lock


def release_training_lock(checkpoint: str | os.PathLike) -> None:
    """Release the lock :func:`lock_training` took for ``checkpoint`` in this process (nothing if none)."""
    lock = Path(os.path.abspath(os.path.expanduser(os.fspath(checkpoint)))).parent / LOCK_NAME
    fd = _HELD.pop(lock, None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the lock
