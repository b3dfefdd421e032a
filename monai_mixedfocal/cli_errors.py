# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""How the commands report an error they stop on (one ``error: ...`` line, and the traceback on request) and the
warnings they go on after (one ``warning: ...`` line each).

The commands (``datalist``, ``synthesize``, ``stats``, ``study``, ``bundles``) turn bad input (a missing file, a wrong
option, invalid data) into one line on stderr and exit code 2. The same ``except`` would also turn a bug inside them
into one line; set ``MONAI_MIXEDFOCAL_TRACEBACK=1`` to get the traceback as well (for a bug report).
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
import warnings
from collections.abc import Iterator

__all__ = ["TRACEBACK_ENV", "one_line_warnings", "print_error"]

TRACEBACK_ENV = "MONAI_MIXEDFOCAL_TRACEBACK"
"""Environment variable: any value but empty or ``0`` prints the traceback before the ``error:`` line."""


def print_error(error: BaseException, one_line: bool = False) -> None:
    """Print ``error: <message>`` on stderr, after the traceback where :data:`TRACEBACK_ENV` asks for it.

    Args:
        error: the exception the command stops on.
        one_line: fold the message's line breaks into spaces.
    """
    if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    message = f"error: {error}"
    print(message.replace("\n", " ") if one_line else message, file=sys.stderr)


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Within the block, a warning shown on stderr is one ``warning: <message>`` line, each message once (a command
    may compute the same table twice), instead of Python's file, line and source line; filters are unchanged."""
    shown: set[str] = set()

    def show(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
        text = f"warning: {message}".replace("\n", " ")
        if text not in shown:
            shown.add(text)
            print(text, file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
