# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The error that ended a bundle command, read from its log, as the study prints it beside a failed run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monai_mixedfocal.study.log_error import MAX_LENGTH, log_error, root_error


def _output_of(script: str) -> str:
    """What Python prints when ``script`` fails (a real traceback, not one written by hand)."""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    return result.stdout + result.stderr


def test_the_first_exception_of_a_chain_is_the_error() -> None:
    """As MONAI wraps an error raised in a config expression: ``raise RuntimeError(...) from e``."""
    output = _output_of(
        "try:\n    raise ValueError('--learning_rate must be a number > 0, got -1.')\n"
        "except ValueError as e:\n    raise RuntimeError('Failed to evaluate ConfigExpression:\\n  long text') from e"
    )
    assert root_error("epoch 1/2 done\n" + output) == "ValueError: --learning_rate must be a number > 0, got -1."


def test_an_error_raised_while_handling_another_is_traced_to_the_first() -> None:
    output = _output_of("try:\n    {}['missing']\nexcept KeyError:\n    raise OSError('second')")
    assert root_error(output) == "KeyError: 'missing'"


def test_the_last_of_two_separate_tracebacks_decides() -> None:
    """A log can hold an earlier traceback that did not end the process (logged and handled)."""
    first = _output_of("raise TypeError('an earlier one, handled')")
    last = _output_of("import json; json.loads('{')")
    assert root_error(first + "training went on\n" + last).startswith("json.decoder.JSONDecodeError: Expecting")


def test_a_long_message_is_shortened_and_its_first_line_kept() -> None:
    output = _output_of(f"raise ValueError('x' * {2 * MAX_LENGTH} + '\\nsecond line')")
    error = root_error(output)
    assert error is not None and len(error) == MAX_LENGTH and error.endswith("...") and "second" not in error


@pytest.mark.parametrize("text", ["", "epoch 1/2\nepoch 2/2\n", 'Traceback (most recent call last):\n  File "x"\n'])
def test_no_traceback_or_no_exception_line_gives_none(text: str) -> None:
    assert root_error(text) is None


def test_log_error_reads_the_end_of_a_long_log(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text("x" * 1_000_000 + "\n" + _output_of("raise SystemError('at the end')"))
    assert log_error(log) == "SystemError: at the end"
    assert log_error(tmp_path / "missing.log") is None
