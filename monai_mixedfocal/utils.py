# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Small helpers shared by the package: atomic file writes (nothing is ever half-written), the wording of what
changed between recorded and current settings, and the check that an option is an integer."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then :func:`os.replace`).

    Args:
        path: destination file; its parent folders are created.
        data: the complete file content.

    Returns:
        The destination path.

    Raises:
        OSError: the folder cannot be created or written to (read-only, full, no permission); the message names
            ``path``, not the temporary file (same type and ``errno``, the original error as ``__cause__``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _naming(err, path) from err
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600: give the file the permissions open() would
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _naming(err, path) from err
        raise
    return path


def _naming(err: OSError, path: Path) -> OSError:
    """``err`` (same type and ``errno``) naming ``path`` rather than the temporary file it was raised for."""
    if err.errno is None:
        return type(err)(f"{path}: {err}")
    return type(err)(err.errno, err.strerror, str(path))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON (with a final newline) atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def changed_entries(
    recorded: Mapping[str, Any], current: Mapping[str, Any], keys: Iterable[str] | None = None, width: int = 60
) -> list[str]:
    """``"key: recorded -> current"`` for each of ``keys`` (default: the keys of both, in order) whose values differ.

    Values are shown as Python literals (``'0' -> '1'``), shortened to about ``width`` characters around their first
    difference (two long descriptions of a loss that differ in one weight show that weight); a missing one as
    ``(unset)``.
    """

    def shown(mapping: Mapping[str, Any], key: str, start: int) -> str:
        if key not in mapping:
            return "(unset)"
        text = repr(mapping[key])
        if len(text) <= width:
            return text
        end = start + width - 3
        return ("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")

    def first_difference(key: str) -> int:
        if key not in recorded or key not in current:
            return 0
        a, b = repr(recorded[key]), repr(current[key])
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return max(0, same - width // 3) if max(len(a), len(b)) > width else 0

    keys = dict.fromkeys([*recorded, *current] if keys is None else keys)
    changed = [key for key in keys if (key in recorded, recorded.get(key)) != (key in current, current.get(key))]
    starts = {key: first_difference(key) for key in changed}
    return [f"{key}: {shown(recorded, key, starts[key])} -> {shown(current, key, starts[key])}" for key in changed]


def is_number(value: object) -> bool:
    """``value`` is a finite ``int`` or ``float`` and not a ``bool`` (``"1e-3"`` from a command line is not a number).

    Example:
        >>> is_number(3), is_number(0.5), is_number(True), is_number(float("nan")), is_number("1")
        (True, True, False, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_integer(value: object) -> bool:
    """``value`` is an ``int`` and not a ``bool`` (``True`` is an ``int`` to Python, not a count to a user).

    Example:
        >>> is_integer(3), is_integer(True), is_integer(3.0)
        (True, False, False)
    """
    return isinstance(value, int) and not isinstance(value, bool)
