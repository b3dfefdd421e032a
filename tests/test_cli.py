# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The top-level parser: every sub-command module is registered, a missing one is an error, never skipped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from monai_mixedfocal import cli


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
