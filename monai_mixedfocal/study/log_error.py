# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The error that ended a bundle command, read from its log: the first exception of the last traceback chain.

``python -m monai.bundle run`` ends with a chain of tracebacks: the bundle's own message (``ValueError:
--learning_rate must be a number > 0, got -1.``) comes first, then MONAI's ``RuntimeError: Failed to evaluate
ConfigExpression: ...`` with the whole expression, which is what the end of the log shows. The study prints the
first one beside a failed run, so that a mistyped option is seen without opening the log.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["log_error", "root_error"]

_TRACEBACK = "Traceback (most recent call last):"
_CHAINED = (
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
)
#: how much of the end of a log is read: a traceback chain is a few kB, a long training's log can be many MB
_TAIL_BYTES = 256 * 1024
#: the longest message shown (a message can hold a whole config expression)
MAX_LENGTH = 300


def root_error(text: str) -> str | None:
    """The ``Type: message`` line of the first exception in the last traceback chain of ``text`` (a process's output),
    shortened to :data:`MAX_LENGTH` characters; ``None`` when ``text`` holds no traceback.

    Example:
        >>> log = "Traceback (most recent call last):\\n  File \\"x.py\\"\\nValueError: bad\\n\\n" + _CHAINED[0]
        >>> root_error(log + "\\n\\nTraceback (most recent call last):\\n  File \\"y.py\\"\\nRuntimeError: wrapped\\n")
        'ValueError: bad'
    """
    lines = text.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith(_TRACEBACK)]
    if not starts:
        return None
    position = len(starts) - 1
    while position > 0 and _chained_to_the_one_before(lines, starts[position - 1], starts[position]):
        position -= 1
    error = next(
        (line for line in lines[starts[position] + 1 :] if line.strip() and not line[:1].isspace()),
        None,
    )
    if error is None:
        return None
    return error if len(error) <= MAX_LENGTH else error[: MAX_LENGTH - 3] + "..."


def _chained_to_the_one_before(lines: list[str], before: int, start: int) -> bool:
    """Whether the traceback at line ``start`` is chained to the one at line ``before`` (only a chain marker and blank
    lines between the end of that one's exception and ``start``)."""
    between = [line.strip() for line in lines[before + 1 : start]]
    last = next((index for index in range(len(between) - 1, -1, -1) if between[index]), None)
    return last is not None and between[last] in _CHAINED


def log_error(log: str | os.PathLike) -> str | None:
    """:func:`root_error` of the end of the file ``log``; ``None`` when it cannot be read or holds no traceback."""
    try:
        with Path(log).open("rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - _TAIL_BYTES))
            return root_error(file.read().decode("utf-8", errors="replace"))
    except OSError:
        return None
