# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The command line: ``python -m monai_mixedfocal <command> ...``.

Each sub-command lives in the module that owns the concept; that module exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (called with the parsed ``argparse.Namespace``, returning an exit code). Modules are
imported only when the command line is built, so ``import monai_mixedfocal`` stays light.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from monai_mixedfocal.cli_errors import one_line_warnings

# sub-command modules, in the order shown by ``--help``
COMMAND_MODULES: tuple[str, ...] = (
    "monai_mixedfocal.data.cli",
    "monai_mixedfocal.stats_cli",
    "monai_mixedfocal.study",
    "monai_mixedfocal.shipped_bundles",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command of :data:`COMMAND_MODULES`.

    Returns:
        The parser; each sub-parser's ``func`` default runs its command.

    Raises:
        ModuleNotFoundError: a module of :data:`COMMAND_MODULES` is missing (a broken or partial installation: every
            one is part of this package, so none is skipped), or a dependency one of them imports is not installed.
    """
    parser = argparse.ArgumentParser(
        prog="python -m monai_mixedfocal",
        description="Mixed Focal loss family for MONAI: data, statistics and the loss study.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a missing dependency (or parent package) of the module: its own message says which
                raise
            raise ModuleNotFoundError(
                f"sub-command module {name} is missing: a broken or partial installation of monai_mixedfocal "
                "(reinstall it)",
                name=name,
            ) from err
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with one_line_warnings():
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit, where a closed pipe is an "Exception ignored" message and code 120
        return code
    except BrokenPipeError:  # stdout closed by its reader (`--dry-run | head -1`): stop quietly (Python docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
