# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""A run folder moved or copied to another path: which of the paths it recorded moved with it.

A run records absolute paths: its data set and datalist in its run settings, the real paths of its training images
(:mod:`~monai_mixedfocal.bundle.run_settings`). A study folder moved from scratch space to a project folder, with its
data set inside it or left where it was, must still resume its interrupted runs, collect its finished ones without a
warning, and refuse to evaluate a model on its training cases at their new paths; a copy of it beside another data set
(or into another installation) must not take that data set for its own.

The resume checkpoint records the folder it was written in (:data:`RECORDED_IN_KEY` by name, as the run settings name
paths; :data:`RECORDED_IN_REAL_KEY` by real path, as the training images are recorded). The move is what that folder's
old and new paths differ by (:func:`folder_move`). A recorded path moved with it (:func:`moved_path`) when it lay
inside the folder that surely moved (the topmost folder whose name both paths share), or inside the moved prefix and no
longer exists at its old place (a real move, not a copy). Paths are compared, not contents.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "RECORDED_IN_KEY",
    "RECORDED_IN_REAL_KEY",
    "FolderMove",
    "folder_move",
    "moved_along",
    "moved_images",
    "moved_path",
    "recorded_folders",
    "settings_moved_with",
]

#: the key, among the settings recorded in a resume checkpoint, of the folder it was written in (absolute, by name:
#: as the run settings' paths). A run's own settings lack it, so the checks that compare the settings they hold do not
#: compare it.
RECORDED_IN_KEY = "recorded_in"

#: the same folder by its real path (links resolved: as the training images are recorded)
RECORDED_IN_REAL_KEY = "recorded_in_real"


class FolderMove(NamedTuple):
    """A folder's move (:func:`folder_move`): ``old`` -> ``new`` prefixes, and ``unit``, the folder under ``old``
    that surely moved with it."""

    old: str
    new: str
    unit: str


def folder_move(recorded_in: str | os.PathLike, current_in: str | os.PathLike) -> FolderMove:
    """The move that took folder ``recorded_in`` to ``current_in``: the two without the trailing names they share, and
    the topmost folder of those names under the old prefix (the folder itself when no name is shared).

    ``/scratch/study/runs/dice/fold_0`` now at ``/home/me/study/runs/dice/fold_0`` is ``/scratch`` moved to
    ``/home/me``, of which ``/scratch/study`` surely moved; a study folder renamed from ``/a/demo`` to ``/b/demo2`` is
    ``/a/demo`` moved to ``/b/demo2``. Both are made absolute (``..`` resolved by name) first.

    Example:
        >>> folder_move("/scratch/study/runs/fold_0", "/home/me/study/runs/fold_0")
        FolderMove(old='/scratch', new='/home/me', unit='/scratch/study')
    """
    old, new = Path(os.path.abspath(recorded_in)).parts, Path(os.path.abspath(current_in)).parts
    shared = 0
    while shared < min(len(old), len(new)) - 1 and old[-1 - shared] == new[-1 - shared]:
        shared += 1
    prefix = Path(*old[: len(old) - shared])
    unit = prefix / old[len(old) - shared] if shared else prefix
    return FolderMove(str(prefix), str(Path(*new[: len(new) - shared])), str(unit))


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([folder, path]) == folder
    except ValueError:  # another drive (Windows), or a relative path: not inside
        return False


def moved_path(path: str, move: FolderMove) -> str:
    """Where ``path`` lies after ``move``: moved with it when it lay inside ``move.unit``, or inside ``move.old`` and no
    longer exists there (moved, not copied); else as it is.

    Example:
        >>> move = FolderMove("/scratch", "/home/me", "/scratch/study")
        >>> moved_path("/scratch/study/datalist.json", move), moved_path("/data/x", move)
        ('/home/me/study/datalist.json', '/data/x')
    """
    if not _inside(path, move.old) or not (_inside(path, move.unit) or not os.path.lexists(path)):
        return path
    return os.path.normpath(os.path.join(move.new, os.path.relpath(path, move.old)))


def moved_along(
    recorded: Mapping[str, str],
    current: Mapping[str, str],
    recorded_in: str | os.PathLike,
    current_in: str | os.PathLike,
    keys: Iterable[str],
) -> dict[str, str]:
    """``recorded`` with each path setting of ``keys`` that is ``current``'s after the move of the folder the settings
    were recorded in (:func:`folder_move`, :func:`moved_path`) replaced by ``current``'s.

    A study moved from ``/scratch/study`` to ``/home/me/study`` names its datalist ``/home/me/study/datalist.json``: the
    same. A data set that stayed where it was is equal as it is. A path that changed otherwise still differs, even at
    the same place relative to the folder: a copy of ``/p1/results/study`` at ``/p2/results/study`` does not take
    ``/p2/data`` for its ``/p1/data``, which is still there.

    Args:
        recorded: settings recorded in folder ``recorded_in``.
        current: settings of the same kind, made now for folder ``current_in``.
        recorded_in: the folder that the record was written in.
        current_in: the folder that it lies in now.
        keys: the settings that are absolute paths.

    Example:
        >>> recorded, current = {"datalist": "/a/s/datalist.json"}, {"datalist": "/b/s/datalist.json"}
        >>> moved_along(recorded, current, "/a/s", "/b/s", ["datalist"])
        {'datalist': '/b/s/datalist.json'}
    """
    moved = dict(recorded)
    move = folder_move(recorded_in, current_in)
    for key in keys:
        before, now = recorded.get(key), current.get(key)
        if before and now and before != now and moved_path(before, move) == os.path.normpath(now):
            moved[key] = now
    return moved


def recorded_folders(checkpoint: str | os.PathLike) -> dict[str, str]:
    """What a resume checkpoint records of the folder it is written in (by name and by real path)."""
    folder = Path(checkpoint).parent
    return {RECORDED_IN_KEY: os.path.abspath(folder), RECORDED_IN_REAL_KEY: os.path.realpath(folder)}


def settings_moved_with(
    checkpoint: str | os.PathLike, recorded: Mapping[str, str], current: Mapping[str, str], keys: Iterable[str]
) -> dict[str, str]:
    """The ``recorded`` settings of the resume ``checkpoint`` as :func:`moved_along` makes them, from the folder they
    were recorded in (:data:`RECORDED_IN_KEY`) to the checkpoint's folder now: a run folder moved or copied with its
    data set and datalist is the same run. A record that predates the key is returned as it is."""
    recorded_in = recorded.get(RECORDED_IN_KEY)
    if not recorded_in:
        return dict(recorded)
    return moved_along(recorded, current, recorded_in, os.path.abspath(Path(checkpoint).parent), keys)


def moved_images(checkpoint: str | os.PathLike, recorded: Mapping[str, str] | None, images: list[str]) -> list[str]:
    """The recorded training ``images`` (real paths) and, when the checkpoint's folder has moved since it recorded
    them (:data:`RECORDED_IN_REAL_KEY`), where those that moved with it lie now: a run folder moved or copied with its
    data still refuses its training cases."""
    recorded_in = (recorded or {}).get(RECORDED_IN_REAL_KEY)
    folder = os.path.realpath(Path(checkpoint).parent)
    if not recorded_in or recorded_in == folder:
        return images
    move = folder_move(recorded_in, folder)
    return list(dict.fromkeys([*images, *(moved_path(image, move) for image in images)]))
