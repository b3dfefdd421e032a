# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The top-level parser: every sub-command module is registered, a missing one is an error, never skipped; a command's
error is one line, with the traceback on request."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from monai_mixedfocal import cli
from monai_mixedfocal.cli_errors import TRACEBACK_ENV


def test_every_command_is_registered() -> None:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert {"datalist", "synthesize", "stats", "study", "bundles"} <= set(commands)


def test_a_missing_command_module_of_the_package_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = "monai_mixedfocal.no_such_command"
    monkeypatch.setattr(cli, "COMMAND_MODULES", (missing,))
    with pytest.raises(ModuleNotFoundError, match=rf"sub-command module {re.escape(missing)} is missing") as err:
        cli.build_parser()
    assert err.value.name == missing


def test_a_missing_dependency_of_a_command_module_names_the_dependency(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = tmp_path / "mmf_cli_probe_command.py"
    module.write_text("import mmf_cli_probe_absent_dependency  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("mmf_cli_probe_command",))
    with pytest.raises(ModuleNotFoundError) as err:
        cli.build_parser()
    assert err.value.name == "mmf_cli_probe_absent_dependency"


@pytest.mark.parametrize("traceback_env", [None, "0", "1"])
def test_a_command_error_is_one_line_and_its_traceback_on_request(
    traceback_env: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if traceback_env is None:
        monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    else:
        monkeypatch.setenv(TRACEBACK_ENV, traceback_env)
    assert cli.main(["stats", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and "missing.csv" in err
    assert ("Traceback (most recent call last)" in err) == (traceback_env == "1")


def test_a_command_s_warnings_are_one_line_each_shown_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A single method: ``stats --out`` computes the pairwise tests for the tables and for the report; its warning is
    one ``warning:`` line, shown once, without Python's file and source line."""
    table = tmp_path / "one_method.csv"
    table.write_text("case,method,class,dsc\na,dice,kidney,0.5\nb,dice,kidney,0.7\n")
    assert cli.main(["stats", str(table), "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err
    assert err == "warning: pairwise_tests needs at least two methods, got ['dice']: no test\n"


@pytest.mark.parametrize("command", ["study", "stats"])
def test_a_closed_stdout_stops_a_command_quietly(tmp_path: Path, command: str) -> None:
    """``study --dry-run | head -1``, ``stats ... | head``: the reader closes the pipe; no ``error: [Errno 32] Broken
    pipe`` line, and no "Exception ignored" message with exit code 120 when the output fits the pipe's buffer."""
    import subprocess
    import sys

    if command == "study":
        args = ["study", "--demo", "--out", str(tmp_path / "r"), "--dry-run"]
    else:
        table = "case,method,class,dsc\n" + "".join(
            f"c{i},{m},kidney,0.{i}{j}\n" for i in range(4) for j, m in enumerate("ab")
        )
        (tmp_path / "per_case.csv").write_text(table)
        args = ["stats", str(tmp_path / "per_case.csv")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered, as for users
    proc = subprocess.Popen(
        [sys.executable, "-m", "monai_mixedfocal", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=env,
    )
    proc.stdout.close()  # before it writes its first line
    stderr = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 1 and "Broken pipe" not in stderr and "Exception ignored" not in stderr, stderr
    assert "Traceback" not in stderr, stderr


def test_no_command_prints_the_help_and_exits_2(capsys) -> None:
    """Against the bug ``return 2`` -> ``return 0``: ``python -m monai_mixedfocal`` without a command succeeded."""
    from monai_mixedfocal import cli

    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m monai_mixedfocal") and "datalist" in err


def test_one_line_warnings_shows_each_message_once_whatever_the_filters(capsys) -> None:
    """Against the bug (drop the ``shown`` set): the existing test passes anyway, because Python's default filter
    already shows a warning once per code location; the de-duplication only shows with an "always" filter or one message
    raised from two places."""
    import warnings

    from monai_mixedfocal.cli_errors import one_line_warnings

    with one_line_warnings():
        warnings.simplefilter("always")
        for _ in range(3):
            warnings.warn("same\nmessage", UserWarning, stacklevel=1)
        warnings.warn("other", UserWarning, stacklevel=1)
    assert capsys.readouterr().err == "warning: same message\nwarning: other\n"
