# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The one exception raised for every data problem (missing file, corrupt NIfTI, wrong shape, bad label value)."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A problem with the input data; the message names the file (or folder) and the problem.

    It subclasses :class:`ValueError`, so callers that already catch ``ValueError`` keep working. The command line
    prints the message on one line and exits with status 2, without a traceback.
    """
