# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Shared by the tests: the whole message chain of an exception."""

from __future__ import annotations


def error_chain(err: BaseException | None) -> str:
    """Every message of an exception chain, one ``Type: message`` line each (MONAI wraps errors raised inside config
    expressions and ``Compose`` wraps a transform's error in a ``RuntimeError``)."""
    parts = []
    while err is not None:
        parts.append(f"{type(err).__name__}: {err}")
        err = err.__cause__ or err.__context__
    return "\n".join(parts)
